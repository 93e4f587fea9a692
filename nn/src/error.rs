//! Typed errors shared by every unclip crate that reads files from disk.

use std::path::PathBuf;

/// Everything that can go wrong while reading a config or a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a readable checkpoint: {message}")]
    Format { path: PathBuf, message: String },
    #[error("no checkpoint in {dir}: looked for {candidates:?}")]
    NoCheckpoint {
        dir: PathBuf,
        candidates: Vec<String>,
    },
    #[error("{path}: tensor `{key}` has dtype {dtype}, which cannot be loaded as a float weight")]
    UnsupportedDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: tensor `{key}` has shape {found:?} but the model expects {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: the model needs tensors the checkpoint lacks: {keys:?}")]
    MissingTensors { path: PathBuf, keys: Vec<String> },
    #[error("{path}: the checkpoint has tensors the model does not use: {keys:?}")]
    UnusedTensors { path: PathBuf, keys: Vec<String> },
    #[error("{path}: {message}")]
    Apply { path: PathBuf, message: String },
    #[error("{path}: unsupported configuration: {message}")]
    UnsupportedConfig { path: PathBuf, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    /// A resumable training checkpoint could not be written or read.
    #[error(transparent)]
    TrainCheckpoint(#[from] crate::TrainCheckpointError),
}

impl LoadError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            source,
        }
    }
}
