//! One loader for every checkpoint unclip reads: safetensors files and PyTorch `.bin`/`.pt`
//! archives (read by burn-store's PyTorch reader, which parses the pickle stream without
//! executing it), with key remapping, dtype casting and strict application to a module.
//!
//! Modules in unclip name their fields after the checkpoint's own layout (see [`crate::Linear`]:
//! torch's `[out, in]` weight layout, so no transposing adapter is needed), so the remap table of
//! each layout stays small. Loading is strict: after the remap table is applied, a tensor the
//! model needs but the checkpoint lacks, a tensor of the checkpoint the model does not use, and
//! a tensor of the wrong shape are each an error naming the key (and both shapes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ApplyError, ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore};
use burn::tensor::{DType, TensorData};
use regex::Regex;

use crate::LoadError;

/// A table of key rewrites for one checkpoint layout: regex `(pattern, replacement)` pairs applied
/// in order to every key, and patterns of keys that are deliberately not loaded (non-parameter
/// buffers such as HF's `position_ids`).
#[derive(Debug, Clone, Copy)]
pub struct KeyMap {
    pub renames: &'static [(&'static str, &'static str)],
    pub ignored: &'static [&'static str],
}

impl KeyMap {
    /// The identity table.
    pub const IDENTITY: KeyMap = KeyMap {
        renames: &[],
        ignored: &[],
    };
}

/// How float tensors are converted on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadPrecision {
    /// Cast every float tensor (f16, bf16, f64, f32) to f32, the dtype of unclip's modules.
    #[default]
    F32,
}

/// A checkpoint read into memory: key -> tensor, every float converted to f32.
///
/// Open it ([`Checkpoint::open`], or [`Checkpoint::open_dir`] for a model folder), rename its
/// keys to the module's paths with a [`KeyMap`] ([`Checkpoint::remap`]), then apply it strictly
/// ([`Checkpoint::load_into`]):
///
/// ```
/// use burn::tensor::Device;
/// use unclip_nn::{Checkpoint, KeyMap, LoadError, Linear};
///
/// let device = Device::flex();
/// let dir = std::env::temp_dir().join(format!("unclip-ckpt-doc-{}", std::process::id()));
/// // A file whose keys carry a prefix the module does not have (`proj.weight`, `proj.bias`).
/// unclip_nn::save_safetensors_with(
///     &Linear::new(3, 2, true, &device),
///     dir.join("model.safetensors"),
///     |key| format!("proj.{key}"),
/// )?;
///
/// const PROJ_KEYS: KeyMap = KeyMap { renames: &[(r"^proj\.", "")], ignored: &[] };
/// let ckpt = Checkpoint::open_dir(&dir, "model")?; // model.safetensors, model.bin, ...
/// let layer = ckpt.remap(&PROJ_KEYS)?.load_into(Linear::new(3, 2, true, &device))?;
/// assert_eq!(layer.d_in(), 3);
///
/// // Strict: the wrong shape is an error naming the key and both shapes.
/// let err = Checkpoint::open_dir(&dir, "model")?
///     .remap(&PROJ_KEYS)?
///     .load_into(Linear::new(4, 2, true, &device))
///     .unwrap_err();
/// assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{err}");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), LoadError>(())
/// ```
pub struct Checkpoint {
    path: PathBuf,
    tensors: BTreeMap<String, PackTensor>,
    /// Dtype each key had in the file (for reporting).
    source_dtypes: BTreeMap<String, DType>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// File names tried, in order, by [`Checkpoint::open_dir`] for a stem such as `model` or
/// `diffusion_pytorch_model`.
pub fn candidate_files(stem: &str) -> Vec<String> {
    vec![
        format!("{stem}.safetensors"),
        format!("{stem}.bin"),
        format!("pytorch_{stem}.bin"),
    ]
}

impl Checkpoint {
    /// Reads a `.safetensors` file or a PyTorch `.bin` / `.pt` / `.pth` archive.
    ///
    /// ```no_run
    /// let ckpt = unclip_nn::Checkpoint::open("text_encoder/model.safetensors").unwrap();
    /// println!("{} tensors", ckpt.keys().len());
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_path_buf();
        std::fs::metadata(&path).map_err(|e| LoadError::io(&path, e))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let raw: BTreeMap<String, PackTensor> = match ext.as_str() {
            "safetensors" => {
                let mut store = SafetensorsStore::from_file(&path);
                store
                    .get_all_tensors()
                    .map_err(|e| LoadError::Format {
                        path: path.clone(),
                        message: e.to_string(),
                    })?
                    .clone()
            }
            "bin" | "pt" | "pth" => {
                // Keys exactly as in the file: burn's PyTorch reader would otherwise renumber
                // index gaps (`ff.net.2` -> `ff.net.1`), which breaks the layouts' key tables.
                let mut store = PytorchStore::from_file(&path).map_indices_contiguous(false);
                store
                    .get_all_tensors()
                    .map_err(|e| LoadError::Format {
                        path: path.clone(),
                        message: e.to_string(),
                    })?
                    .clone()
            }
            other => {
                return Err(LoadError::Format {
                    path,
                    message: format!(
                        "unknown checkpoint extension `{other}` (expected .safetensors, .bin, .pt or .pth)"
                    ),
                });
            }
        };
        let mut tensors = BTreeMap::new();
        let mut source_dtypes = BTreeMap::new();
        for (key, t) in raw {
            source_dtypes.insert(key.clone(), t.dtype);
            // Floats are cast to f32 now; other tensors (int buffers such as `position_ids`) are
            // kept as they are, for the key map to ignore; applying one to a weight is an error.
            let t = if is_float(t.dtype) {
                to_f32(&path, t)?
            } else {
                t
            };
            tensors.insert(key, t);
        }
        Ok(Checkpoint {
            path,
            tensors,
            source_dtypes,
        })
    }

    /// Opens the first existing file among [`candidate_files`] of `stem` in `dir`.
    pub fn open_dir(dir: impl AsRef<Path>, stem: &str) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let candidates = candidate_files(stem);
        for name in &candidates {
            let p = dir.join(name);
            if p.is_file() {
                return Self::open(p);
            }
        }
        Err(LoadError::NoCheckpoint {
            dir: dir.to_path_buf(),
            candidates,
        })
    }

    /// The file this checkpoint came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.tensors.keys().map(|k| k.as_str()).collect()
    }

    /// Shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|t| t.shape.to_vec())
    }

    /// The dtype `key` had in the file.
    pub fn source_dtype(&self, key: &str) -> Option<DType> {
        self.source_dtypes.get(key).copied()
    }

    /// The f32 values of `key`.
    pub fn values(&self, key: &str) -> Option<Vec<f32>> {
        let t = self.tensors.get(key)?;
        let bytes = t.to_bytes().ok()?;
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// Keeps only keys starting with `prefix` and strips it (e.g. `text_model.` from a full
    /// `CLIPModel` checkpoint when only the text tower is wanted). Other keys are dropped.
    pub fn select_prefix(mut self, prefix: &str) -> Self {
        let tensors = std::mem::take(&mut self.tensors);
        self.tensors = tensors
            .into_iter()
            .filter_map(|(k, mut t)| {
                k.strip_prefix(prefix).map(|s| {
                    t.name = s.to_string();
                    (s.to_string(), t)
                })
            })
            .collect();
        self
    }

    /// Removes every key for which `drop` is true.
    pub fn drop_keys(mut self, drop: impl Fn(&str) -> bool) -> Self {
        self.tensors.retain(|k, _| !drop(k));
        self
    }

    /// Applies a [`KeyMap`]: drops ignored keys, then rewrites every key with each rename in order.
    pub fn remap(mut self, map: &KeyMap) -> Result<Self, LoadError> {
        let bad = |e: regex::Error| LoadError::Format {
            path: self.path.clone(),
            message: format!("invalid key-map pattern: {e}"),
        };
        let ignored: Vec<Regex> = map
            .ignored
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        let renames: Vec<(Regex, &str)> = map
            .renames
            .iter()
            .map(|(p, r)| Regex::new(p).map(|re| (re, *r)))
            .collect::<Result<_, _>>()
            .map_err(|e| LoadError::Format {
                path: self.path.clone(),
                message: format!("invalid key-map pattern: {e}"),
            })?;
        let tensors = std::mem::take(&mut self.tensors);
        for (key, mut t) in tensors {
            if ignored.iter().any(|re| re.is_match(&key)) {
                continue;
            }
            let mut new_key = key.clone();
            for (re, rep) in &renames {
                new_key = re.replace_all(&new_key, *rep).into_owned();
            }
            t.name = new_key.clone();
            self.tensors.insert(new_key, t);
        }
        Ok(self)
    }

    /// Applies the checkpoint to `module` strictly: every parameter must be present with the
    /// right shape, and every tensor of the checkpoint must be used.
    pub fn load_into<M: Module + ModuleSnapshot>(self, mut module: M) -> Result<M, LoadError> {
        let path = self.path.clone();
        if let Some(t) = self.tensors.values().find(|t| t.dtype != DType::F32) {
            return Err(LoadError::UnsupportedDtype {
                path,
                key: t.name.clone(),
                dtype: format!("{:?}", t.dtype),
            });
        }
        let tensors: Vec<PackTensor> = self.tensors.into_values().collect();
        let result = module.apply(tensors, None, None, false);
        if let Some(err) = result.errors.first() {
            return Err(match err {
                ApplyError::ShapeMismatch {
                    path: key,
                    expected,
                    found,
                } => LoadError::ShapeMismatch {
                    path,
                    key: key.clone(),
                    expected: expected.to_vec(),
                    found: found.to_vec(),
                },
                other => LoadError::Apply {
                    path,
                    message: other.to_string(),
                },
            });
        }
        if !result.missing.is_empty() {
            return Err(LoadError::MissingTensors {
                path,
                keys: result.missing.iter().map(|(k, _)| k.clone()).collect(),
            });
        }
        if !result.unused.is_empty() {
            return Err(LoadError::UnusedTensors {
                path,
                keys: result.unused.clone(),
            });
        }
        Ok(module)
    }
}

fn is_float(d: DType) -> bool {
    matches!(
        d,
        DType::F32 | DType::Flex32 | DType::F64 | DType::F16 | DType::BF16
    )
}

/// Converts a stored tensor to f32 (rank-0 tensors become rank 1, burn's smallest rank).
fn to_f32(path: &Path, t: PackTensor) -> Result<PackTensor, LoadError> {
    let (name, dtype, shape, _, bytes) = t.into_parts().map_err(|e| LoadError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut dims = shape.to_vec();
    if dims.is_empty() {
        dims.push(1);
    }
    let b: &[u8] = &bytes;
    let values: Vec<f32> = match dtype {
        DType::F32 | DType::Flex32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        DType::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(LoadError::UnsupportedDtype {
                path: path.to_path_buf(),
                key: name,
                dtype: format!("{other:?}"),
            });
        }
    };
    let data = TensorData::new(values, dims.clone());
    Ok(PackTensor::new(
        name,
        DType::F32,
        dims,
        None,
        data.into_bytes(),
    ))
}

/// Saves a module's parameters as a safetensors file (f32), atomically. Keys are the module's
/// paths, which unclip's modules name after the checkpoint layout, so the file loads back through
/// the same [`Checkpoint`] path (with the identity key map).
pub fn save_safetensors<M: Module + ModuleSnapshot>(
    module: &M,
    path: impl AsRef<Path>,
) -> Result<(), LoadError> {
    save_safetensors_with(module, path, |k| k.to_string())
}

/// [`save_safetensors`] with each module path turned into a checkpoint key by `key` (the inverse
/// of a layout's [`KeyMap`]). The header carries `{"format": "pt"}` as diffusers and transformers
/// write it.
pub fn save_safetensors_with<M: Module + ModuleSnapshot>(
    module: &M,
    path: impl AsRef<Path>,
    key: impl Fn(&str) -> String,
) -> Result<(), LoadError> {
    let path = path.as_ref();
    let werr = |m: String| LoadError::Write {
        path: path.to_path_buf(),
        message: m,
    };
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in module.collect(None, None, false) {
        let (name, dtype, shape, _, bytes) = t.into_parts().map_err(|e| werr(e.to_string()))?;
        if dtype != DType::F32 {
            return Err(werr(format!(
                "tensor {name} has dtype {dtype:?}; only f32 is saved"
            )));
        }
        owned.push((key(&name), shape.to_vec(), bytes.to_vec()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| werr(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| werr(e.to_string()))?;
    crate::atomic_write(path, &bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let werr = |m: String| LoadError::Write {
        path: path.to_path_buf(),
        message: m,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| werr(e.to_string()))?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| werr(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| werr(e.to_string()))
}
