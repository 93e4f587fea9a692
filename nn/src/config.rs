//! Reading `config.json`-style files into serde types with typed errors.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::LoadError;

/// Reads and deserialises a JSON file (a diffusers / transformers `config.json`).
///
/// ```no_run
/// # #[derive(serde::Deserialize)] struct Cfg { hidden_size: usize }
/// let cfg: Cfg = unclip_nn::read_json("model/config.json").unwrap();
/// ```
pub fn read_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, LoadError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a serialisable value as pretty JSON, atomically (temporary file + rename).
pub fn write_json<T: serde::Serialize>(path: impl AsRef<Path>, value: &T) -> Result<(), LoadError> {
    let path = path.as_ref();
    let text = serde_json::to_string_pretty(value).map_err(|e| LoadError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::atomic_write(path, text.as_bytes())
}
