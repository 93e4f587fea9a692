//! Resumable training checkpoints: one directory per save, written so that a kill at any moment
//! leaves the previous checkpoint readable.
//!
//! Layout under a checkpoint root (e.g. `runs/shapes/prior/checkpoints`):
//!
//! ```text
//! <root>/step-000120/          a complete checkpoint (every file listed in its COMPLETE marker)
//! <root>/step-000123/
//!     model.bpk                the optimised weights (burn record: paths + parameter ids)
//!     ema.bpk                  the EMA weights (when the run keeps an EMA)
//!     optimizer.bpk            burn's optimizer record (AdamW moments and step count per
//!                              parameter id, which model.bpk restores)
//!     state.json               step, the run's config, RNG state and other trainer state
//!     COMPLETE                 manifest: every file's length and checksum; written last
//! <root>/latest                the name of the newest complete checkpoint (`step-000123`)
//! ```
//!
//! A save ([`CheckpointStore::save`]) writes every file into `<root>/.tmp-step-000123-<pid>/`,
//! fsyncs each file, writes and fsyncs the `COMPLETE` manifest, fsyncs the directory, renames it
//! to `step-000123`, fsyncs the root, then replaces `latest` the same way (temporary file, fsync,
//! rename, fsync of the root), and finally prunes all but the newest `keep` checkpoints. A
//! reader ([`CheckpointStore::load_latest`]) only ever opens the directory `latest` names, and
//! checks every file against the manifest: a directory without its marker, a missing,
//! truncated or altered file is a typed [`TrainCheckpointError`], never a panic.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::optim::OptimizerRecord;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

/// Name of the manifest file that marks a checkpoint directory complete.
pub const COMPLETE_FILE: &str = "COMPLETE";
/// Name of the pointer file naming the newest complete checkpoint directory.
pub const LATEST_FILE: &str = "latest";
/// The weights file of a training checkpoint.
pub const MODEL_FILE: &str = "model.bpk";
/// The EMA weights file of a training checkpoint.
pub const EMA_FILE: &str = "ema.bpk";
/// The optimizer record of a training checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// The JSON state of a training checkpoint.
pub const STATE_FILE: &str = "state.json";

/// Everything that can go wrong while writing or reading a training checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum TrainCheckpointError {
    #[error("no training checkpoint in {root} (no `{LATEST_FILE}` pointer)")]
    NotFound { root: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: incomplete checkpoint (no `{COMPLETE_FILE}` marker); it is never read")]
    Incomplete { dir: PathBuf },
    #[error("{path}: missing from the checkpoint (its manifest lists it)")]
    MissingFile { path: PathBuf },
    #[error("{path}: truncated or extended: {found} bytes, the checkpoint recorded {expected}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: corrupt checkpoint: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: the checkpoint does not fit the model: {message}")]
    ModelMismatch { path: PathBuf, message: String },
    #[error(
        "the checkpoint in {dir} was written with another config: `{field}` is {saved} there but {given} now"
    )]
    ConfigMismatch {
        dir: PathBuf,
        field: String,
        saved: String,
        given: String,
    },
    #[error("injected failure at operation {op} of a checkpoint save (test hook)")]
    Injected { op: usize },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainCheckpointError + '_ {
    move |source| TrainCheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fast 64-bit checksum (FNV-1a over little-endian 8-byte words, then the tail bytes). It
/// detects accidental corruption; it is not a cryptographic hash.
pub fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(PRIME);
    }
    h
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestEntry {
    len: u64,
    checksum: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    step: u64,
    files: BTreeMap<String, ManifestEntry>,
}

/// The name of step `step`'s checkpoint directory.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

fn parse_step_dir(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

fn fsync_dir(dir: &Path) -> Result<(), TrainCheckpointError> {
    // Directories can be opened read-only and fsynced on Unix; elsewhere this is best effort.
    match std::fs::File::open(dir) {
        Ok(f) => match f.sync_all() {
            Ok(()) => Ok(()),
            Err(_) if cfg!(not(unix)) => Ok(()),
            Err(e) => Err(io_err(dir)(e)),
        },
        Err(_) if cfg!(not(unix)) => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainCheckpointError> {
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// A folder of training checkpoints (layout in the module docs).
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
    keep: usize,
    fail_at: Option<usize>,
}

/// The verified files of one complete checkpoint, in memory.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    dir: PathBuf,
    step: u64,
    files: BTreeMap<String, Vec<u8>>,
}

impl CheckpointFiles {
    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The step recorded in the manifest.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The names of the checkpoint's files (its manifest's), sorted.
    pub fn names(&self) -> Vec<&str> {
        self.files.keys().map(|k| k.as_str()).collect()
    }

    /// The bytes of `name`, if the checkpoint has it.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|v| v.as_slice())
    }

    /// The bytes of `name`; its absence is [`TrainCheckpointError::MissingFile`].
    pub fn require(&self, name: &str) -> Result<&[u8], TrainCheckpointError> {
        self.get(name)
            .ok_or_else(|| TrainCheckpointError::MissingFile {
                path: self.dir.join(name),
            })
    }
}

impl CheckpointStore {
    /// A store at `root` keeping the newest `keep` checkpoints (at least 1).
    pub fn new(root: impl Into<PathBuf>, keep: usize) -> Self {
        CheckpointStore {
            root: root.into(),
            keep: keep.max(1),
            fail_at: None,
        }
    }

    /// Test hook: the next saves fail at operation `op` as a kill would leave them (nothing is
    /// cleaned up). Operations of a save of `n` files: `0..n` write file `i` (the failure leaves
    /// half of it written), `n` writes the `COMPLETE` marker, `n + 1` renames the directory into
    /// place, `n + 2` replaces `latest` (the failure leaves its temporary file).
    pub fn with_failure_at(mut self, op: usize) -> Self {
        self.fail_at = Some(op);
        self
    }

    /// The number of fault-injection points of a save of `n_files` files.
    pub fn save_operations(n_files: usize) -> usize {
        n_files + 3
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    fn fault(&self, op: usize) -> Result<(), TrainCheckpointError> {
        if self.fail_at == Some(op) {
            Err(TrainCheckpointError::Injected { op })
        } else {
            Ok(())
        }
    }

    /// The directory `latest` names, or `None` when there is no `latest` (a fresh run). The
    /// directory is not checked here.
    pub fn latest_dir(&self) -> Result<Option<PathBuf>, TrainCheckpointError> {
        let p = self.root.join(LATEST_FILE);
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&p)(e)),
        };
        let name = std::str::from_utf8(&text)
            .ok()
            .map(str::trim)
            .filter(|n| parse_step_dir(n).is_some())
            .ok_or_else(|| TrainCheckpointError::Corrupt {
                path: p.clone(),
                message: format!(
                    "expected a directory name like `step-000123`, found {:?}",
                    String::from_utf8_lossy(&text[..text.len().min(64)])
                ),
            })?;
        Ok(Some(self.root.join(name)))
    }

    /// Writes a checkpoint of `step` holding `files` (name, bytes) as described in the module
    /// docs; returns its directory. A complete directory of the same step that `latest` already
    /// names is kept as it is (the step was saved already).
    pub fn save(
        &self,
        step: u64,
        files: &[(&str, &[u8])],
    ) -> Result<PathBuf, TrainCheckpointError> {
        if !self.root.is_dir() {
            std::fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
            // The new folder's entry in its parent survives a power cut too.
            if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        let name = step_dir_name(step);
        let final_dir = self.root.join(&name);
        let latest = self.latest_dir()?;
        if latest.as_deref() == Some(final_dir.as_path()) && final_dir.join(COMPLETE_FILE).is_file()
        {
            return Ok(final_dir);
        }
        self.remove_stale_temporaries();
        let tmp = self
            .root
            .join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let mut manifest = Manifest {
            step,
            files: BTreeMap::new(),
        };
        for (i, (fname, bytes)) in files.iter().enumerate() {
            if fname.is_empty() || fname.contains(['/', '\\']) || *fname == COMPLETE_FILE {
                return Err(TrainCheckpointError::Corrupt {
                    path: tmp.join(fname),
                    message: "not a valid checkpoint file name".into(),
                });
            }
            let p = tmp.join(fname);
            if self.fault(i).is_err() {
                // A kill in the middle of a write: half the file is there.
                let _ = write_synced(&p, &bytes[..bytes.len() / 2]);
                return Err(TrainCheckpointError::Injected { op: i });
            }
            write_synced(&p, bytes)?;
            manifest.files.insert(
                fname.to_string(),
                ManifestEntry {
                    len: bytes.len() as u64,
                    checksum: format!("{:016x}", checksum(bytes)),
                },
            );
        }
        let n = files.len();
        self.fault(n)?;
        let marker =
            serde_json::to_vec_pretty(&manifest).map_err(|e| TrainCheckpointError::Corrupt {
                path: tmp.join(COMPLETE_FILE),
                message: e.to_string(),
            })?;
        write_synced(&tmp.join(COMPLETE_FILE), &marker)?;
        fsync_dir(&tmp)?;
        self.fault(n + 1)?;
        if final_dir.exists() {
            // A complete directory no `latest` names (left by a save killed before its pointer
            // was written), or an incomplete one: never read, replaced.
            std::fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
        fsync_dir(&self.root)?;
        let latest_tmp = self
            .root
            .join(format!(".tmp-{LATEST_FILE}-{}", std::process::id()));
        if self.fault(n + 2).is_err() {
            let _ = write_synced(&latest_tmp, name.as_bytes());
            return Err(TrainCheckpointError::Injected { op: n + 2 });
        }
        write_synced(&latest_tmp, format!("{name}\n").as_bytes())?;
        let latest_path = self.root.join(LATEST_FILE);
        std::fs::rename(&latest_tmp, &latest_path).map_err(io_err(&latest_path))?;
        fsync_dir(&self.root)?;
        self.prune(step)?;
        Ok(final_dir)
    }

    /// Removes temporary files and directories left by killed saves (never read).
    fn remove_stale_temporaries(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
    }

    /// The steps of the `step-*` directories under the root, ascending (complete or not).
    pub fn steps(&self) -> Result<Vec<u64>, TrainCheckpointError> {
        let mut steps = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(steps),
            Err(e) => return Err(io_err(&self.root)(e)),
        };
        for e in rd {
            let e = e.map_err(io_err(&self.root))?;
            if let Some(s) = parse_step_dir(&e.file_name().to_string_lossy())
                && e.path().is_dir()
            {
                steps.push(s);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    /// Keeps the newest `keep` checkpoints up to `latest_step` and the one `latest` names;
    /// removes the others and every checkpoint newer than `latest_step` (not named by `latest`,
    /// so never read).
    fn prune(&self, latest_step: u64) -> Result<(), TrainCheckpointError> {
        let steps = self.steps()?;
        let kept: Vec<u64> = steps
            .iter()
            .copied()
            .filter(|&s| s <= latest_step)
            .rev()
            .take(self.keep)
            .collect();
        for s in steps {
            if s == latest_step || kept.contains(&s) {
                continue;
            }
            let d = self.root.join(step_dir_name(s));
            std::fs::remove_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(())
    }

    /// Reads and verifies the checkpoint `latest` names; `Ok(None)` when there is none (a fresh
    /// run).
    pub fn load_latest(&self) -> Result<Option<CheckpointFiles>, TrainCheckpointError> {
        match self.latest_dir()? {
            None => Ok(None),
            Some(dir) => Self::load_dir(&dir).map(Some),
        }
    }

    /// Reads and verifies one checkpoint directory against its `COMPLETE` manifest.
    pub fn load_dir(dir: &Path) -> Result<CheckpointFiles, TrainCheckpointError> {
        let marker = dir.join(COMPLETE_FILE);
        let text = match std::fs::read(&marker) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TrainCheckpointError::Incomplete {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(io_err(&marker)(e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| TrainCheckpointError::Corrupt {
                path: marker.clone(),
                message: e.to_string(),
            })?;
        let mut files = BTreeMap::new();
        for (name, entry) in &manifest.files {
            let p = dir.join(name);
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(TrainCheckpointError::MissingFile { path: p });
                }
                Err(e) => return Err(io_err(&p)(e)),
            };
            if bytes.len() as u64 != entry.len {
                return Err(TrainCheckpointError::Truncated {
                    path: p,
                    expected: entry.len,
                    found: bytes.len() as u64,
                });
            }
            let sum = format!("{:016x}", checksum(&bytes));
            if sum != entry.checksum {
                return Err(TrainCheckpointError::Corrupt {
                    path: p,
                    message: format!(
                        "checksum {sum} differs from the recorded {}",
                        entry.checksum
                    ),
                });
            }
            files.insert(name.clone(), bytes);
        }
        Ok(CheckpointFiles {
            dir: dir.to_path_buf(),
            step: manifest.step,
            files,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Trainer state on top of the directory format.
// ---------------------------------------------------------------------------------------------

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainStateMeta {
    /// Optimiser steps taken.
    pub step: u64,
    /// The run's config (training settings and model config): a resume with another one is a
    /// [`TrainCheckpointError::ConfigMismatch`].
    pub config: serde_json::Value,
    /// Trainer state besides the weights and the optimizer: the random stream's position, the
    /// learning-rate schedule's position, ...
    pub extra: serde_json::Value,
}

/// The weights, EMA, optimizer and state of a trainer at one step, borrowed for a save.
pub struct TrainSnapshot<'a, M> {
    pub step: u64,
    /// The optimised model (any device; saved with its parameter ids, which the optimizer
    /// record refers to).
    pub model: &'a M,
    pub ema: Option<&'a M>,
    pub optim: &'a ModuleOptimizer,
    pub config: serde_json::Value,
    pub extra: serde_json::Value,
}

fn record_bytes<M: Module>(model: &M, path: &Path) -> Result<Vec<u8>, TrainCheckpointError> {
    model
        .clone()
        .into_record()
        .into_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| TrainCheckpointError::Corrupt {
            path: path.to_path_buf(),
            message: format!("cannot serialise: {e}"),
        })
}

impl<M: Module> TrainSnapshot<'_, M> {
    /// Saves this snapshot as `store`'s checkpoint of `self.step`.
    pub fn save(&self, store: &CheckpointStore) -> Result<PathBuf, TrainCheckpointError> {
        let dir = store.root().join(step_dir_name(self.step));
        let model = record_bytes(self.model, &dir.join(MODEL_FILE))?;
        let ema = match self.ema {
            Some(e) => Some(record_bytes(e, &dir.join(EMA_FILE))?),
            None => None,
        };
        let optim = self.optim.into_bytes().map(|b| b.to_vec()).map_err(|e| {
            TrainCheckpointError::Corrupt {
                path: dir.join(OPTIMIZER_FILE),
                message: format!("cannot serialise: {e}"),
            }
        })?;
        let meta = TrainStateMeta {
            step: self.step,
            config: self.config.clone(),
            extra: self.extra.clone(),
        };
        let state =
            serde_json::to_vec_pretty(&meta).map_err(|e| TrainCheckpointError::Corrupt {
                path: dir.join(STATE_FILE),
                message: e.to_string(),
            })?;
        let mut files: Vec<(&str, &[u8])> = vec![(MODEL_FILE, &model)];
        if let Some(e) = &ema {
            files.push((EMA_FILE, e));
        }
        files.push((OPTIMIZER_FILE, &optim));
        files.push((STATE_FILE, &state));
        store.save(self.step, &files)
    }
}

/// A verified checkpoint read back for a resume.
#[derive(Debug, Clone)]
pub struct TrainResume {
    pub files: CheckpointFiles,
    pub meta: TrainStateMeta,
}

impl TrainResume {
    /// Reads the checkpoint `latest` names; `Ok(None)` when the store has none.
    pub fn load(store: &CheckpointStore) -> Result<Option<Self>, TrainCheckpointError> {
        let Some(files) = store.load_latest()? else {
            return Ok(None);
        };
        let bytes = files.require(STATE_FILE)?;
        let meta: TrainStateMeta =
            serde_json::from_slice(bytes).map_err(|e| TrainCheckpointError::Corrupt {
                path: files.dir().join(STATE_FILE),
                message: e.to_string(),
            })?;
        if meta.step != files.step() {
            return Err(TrainCheckpointError::Corrupt {
                path: files.dir().join(STATE_FILE),
                message: format!(
                    "step {} differs from the manifest's {}",
                    meta.step,
                    files.step()
                ),
            });
        }
        Ok(Some(TrainResume { files, meta }))
    }

    pub fn dir(&self) -> &Path {
        self.files.dir()
    }

    /// Checks the saved run config against `given`; the first differing field (a dotted JSON
    /// path) is named in the error.
    pub fn check_config(&self, given: &serde_json::Value) -> Result<(), TrainCheckpointError> {
        match first_difference(&self.meta.config, given, String::new()) {
            None => Ok(()),
            Some((field, saved, given)) => Err(TrainCheckpointError::ConfigMismatch {
                dir: self.dir().to_path_buf(),
                field,
                saved,
                given,
            }),
        }
    }

    /// A [`TrainCheckpointError::Corrupt`] about this checkpoint's state file.
    pub fn corrupt(&self, message: impl Into<String>) -> TrainCheckpointError {
        TrainCheckpointError::Corrupt {
            path: self.dir().join(STATE_FILE),
            message: message.into(),
        }
    }

    /// Decodes the saved run config as `C`.
    pub fn run_config<C: serde::de::DeserializeOwned>(&self) -> Result<C, TrainCheckpointError> {
        serde_json::from_value(self.meta.config.clone())
            .map_err(|e| self.corrupt(format!("run config: {e}")))
    }

    /// Decodes `extra` as `T`.
    pub fn extra<T: serde::de::DeserializeOwned>(&self) -> Result<T, TrainCheckpointError> {
        serde_json::from_value(self.meta.extra.clone()).map_err(|e| TrainCheckpointError::Corrupt {
            path: self.dir().join(STATE_FILE),
            message: format!("trainer state: {e}"),
        })
    }

    fn load_record<M: Module>(&self, name: &str, template: M) -> Result<M, TrainCheckpointError> {
        let path = self.dir().join(name);
        let bytes = self.files.require(name)?;
        let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| TrainCheckpointError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        template
            .try_load_record(record)
            .map_err(|e| TrainCheckpointError::ModelMismatch {
                path,
                message: e.to_string(),
            })
    }

    /// Loads the optimised weights into `template` (a model of the run's config on the device
    /// to train on), restoring the parameter ids the optimizer record refers to. Strict: a
    /// missing, unused or misshapen tensor is [`TrainCheckpointError::ModelMismatch`].
    pub fn load_model<M: Module>(&self, template: M) -> Result<M, TrainCheckpointError> {
        self.load_record(MODEL_FILE, template)
    }

    /// Loads the EMA weights into `template`; `Ok(None)` when the checkpoint has no EMA.
    pub fn load_ema<M: Module>(&self, template: M) -> Result<Option<M>, TrainCheckpointError> {
        if self.files.get(EMA_FILE).is_none() {
            return Ok(None);
        }
        self.load_record(EMA_FILE, template).map(Some)
    }

    /// [`Self::load_ema`] for a run whose config says whether it keeps an EMA (`enabled`): a
    /// checkpoint that disagrees is [`TrainCheckpointError::Corrupt`].
    pub fn load_ema_if<M: Module>(
        &self,
        enabled: bool,
        template: impl FnOnce() -> Result<M, TrainCheckpointError>,
    ) -> Result<Option<M>, TrainCheckpointError> {
        match (enabled, self.files.get(EMA_FILE).is_some()) {
            (false, false) => Ok(None),
            (true, true) => self.load_record(EMA_FILE, template()?).map(Some),
            (e, _) => Err(self.corrupt(format!(
                "the config {} an EMA but the checkpoint {} EMA weights",
                if e { "keeps" } else { "keeps no" },
                if e { "has no" } else { "has" }
            ))),
        }
    }

    /// Restores the optimizer state (moments and step counts per parameter id) into `optim`
    /// (a freshly built optimizer of the run's settings).
    pub fn load_optimizer(
        &self,
        optim: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, TrainCheckpointError> {
        let path = self.dir().join(OPTIMIZER_FILE);
        let bytes = self.files.require(OPTIMIZER_FILE)?;
        let record =
            OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec()))
                .map_err(|e| TrainCheckpointError::Corrupt {
                    path,
                    message: e.to_string(),
                })?;
        Ok(optim.load_record(record))
    }
}

/// A checkpoint's contents keyed independently of parameter ids (which differ between
/// processes): `model/<path>` and `ema/<path>` (dtype, shape and bytes of each weight),
/// `optimizer/<path>/<field>` (each state tensor and scalar of the parameter at `<path>`),
/// and `state.json`. Two runs that reached the same state give equal maps, so tests compare a
/// resumed run with an uninterrupted one bit for bit.
pub fn canonical_contents(
    files: &CheckpointFiles,
) -> Result<BTreeMap<String, Vec<u8>>, TrainCheckpointError> {
    use burn::store::burn_pack::Reader;
    let corrupt = |name: &str, e: String| TrainCheckpointError::Corrupt {
        path: files.dir().join(name),
        message: e,
    };
    let mut out = BTreeMap::new();
    let mut paths: BTreeMap<u64, String> = BTreeMap::new();
    for (name, prefix) in [(MODEL_FILE, "model"), (EMA_FILE, "ema")] {
        let Some(bytes) = files.get(name) else {
            continue;
        };
        let reader = Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| corrupt(name, e.to_string()))?;
        for t in reader
            .into_tensors()
            .map_err(|e| corrupt(name, e.to_string()))?
        {
            let (path, dtype, shape, id, data) =
                t.into_parts().map_err(|e| corrupt(name, e.to_string()))?;
            if prefix == "model"
                && let Some(id) = id
            {
                paths.insert(id, path.clone());
            }
            let mut v = format!("{dtype:?} {shape:?} ").into_bytes();
            v.extend_from_slice(&data);
            out.insert(format!("{prefix}/{path}"), v);
        }
    }
    let path_of = |key: &str| -> String {
        match key.split_once('.') {
            Some((id, field)) => match id.parse::<u64>().ok().and_then(|i| paths.get(&i)) {
                Some(p) => format!("{p}/{field}"),
                None => format!("?{id}/{field}"),
            },
            None => key.to_string(),
        }
    };
    if let Some(bytes) = files.get(OPTIMIZER_FILE) {
        let reader = Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| corrupt(OPTIMIZER_FILE, e.to_string()))?;
        for (k, v) in reader.scalars() {
            out.insert(
                format!("optimizer/{}", path_of(k)),
                format!("{v:?}").into_bytes(),
            );
        }
        for (k, v) in reader.metadata() {
            // Parameter paths the optimizer recorded, keyed by id.
            out.insert(
                format!("optimizer-path/{}", path_of(&format!("{k}.path"))),
                v.clone().into_bytes(),
            );
        }
        for t in reader
            .into_tensors()
            .map_err(|e| corrupt(OPTIMIZER_FILE, e.to_string()))?
        {
            let (name, dtype, shape, _, data) = t
                .into_parts()
                .map_err(|e| corrupt(OPTIMIZER_FILE, e.to_string()))?;
            let mut v = format!("{dtype:?} {shape:?} ").into_bytes();
            v.extend_from_slice(&data);
            out.insert(format!("optimizer/{}", path_of(&name)), v);
        }
    }
    if let Some(s) = files.get(STATE_FILE) {
        out.insert(STATE_FILE.to_string(), s.to_vec());
    }
    Ok(out)
}

/// The keys where two [`canonical_contents`] maps differ (empty when they are equal).
pub fn contents_differences(
    a: &BTreeMap<String, Vec<u8>>,
    b: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..117])
    } else {
        s
    }
}

/// The first place (dotted path, `[i]` for array items) where `a` and `b` differ, with both
/// values; `None` when they are equal.
pub fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: String,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    let here = |p: &str| {
        if p.is_empty() {
            "(root)".to_string()
        } else {
            p.to_string()
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(u, v, p) {
                            return Some(d);
                        }
                    }
                    (u, v) => {
                        let show = |o: Option<&Value>| o.map(short).unwrap_or("absent".into());
                        return Some((p, show(u), show(v)));
                    }
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, format!("{}[{i}]", here(&path)))),
        _ if a == b => None,
        _ => Some((here(&path), short(a), short(b))),
    }
}

/// Checks shared by every trainer's tests: interrupted saves and damaged checkpoints.
pub mod testing {
    use super::*;
    use crate::{TrainLoop, Trainer};

    /// Test (1) of every trainer: `n` steps straight from `fresh()` vs `n / 2` steps, a
    /// checkpoint, everything dropped, `resume` and `n / 2` more (both in the shared loop, with
    /// a checkpoint every `n / 2` steps under `dir/straight` and `dir/split`): the two final
    /// checkpoints ([`canonical_contents`]: weights, EMA, optimizer state by parameter path,
    /// step, config, random stream) must be equal bit for bit. Returns the resumed trainer and
    /// the store of the split run.
    pub fn check_bit_exact_resume<T: Trainer>(
        dir: &Path,
        n: u64,
        fresh: impl Fn() -> T,
        resume: impl Fn(&CheckpointStore) -> Result<Option<T>, T::Error>,
        batch: impl Fn(u64) -> Result<T::Batch, T::Error>,
        lr: impl Fn(u64) -> Option<f64>,
    ) -> Result<(T, CheckpointStore), String>
    where
        T::Error: std::fmt::Debug,
    {
        let half = (n / 2).max(1);
        let run = |t: &mut T, store: &CheckpointStore, total: u64| {
            TrainLoop {
                store,
                total_steps: total,
                save_every: half,
            }
            .run::<T, T::Error>(t, &lr, &batch, |_, _| Ok(()))
            .map_err(|e| format!("training: {e:?}"))
        };
        let a = CheckpointStore::new(dir.join("straight"), 2);
        let b = CheckpointStore::new(dir.join("split"), 2);
        let mut straight = fresh();
        run(&mut straight, &a, n)?;
        drop(straight);
        let mut first = fresh();
        run(&mut first, &b, half)?;
        drop(first);
        let mut resumed = resume(&b)
            .map_err(|e| format!("resume: {e:?}"))?
            .ok_or("no checkpoint to resume")?;
        if resumed.step() != half {
            return Err(format!(
                "resumed at step {}, saved at {half}",
                resumed.step()
            ));
        }
        run(&mut resumed, &b, n)?;
        let load = |s: &CheckpointStore| -> Result<BTreeMap<String, Vec<u8>>, String> {
            let files = s
                .load_latest()
                .map_err(|e| e.to_string())?
                .ok_or("no checkpoint")?;
            canonical_contents(&files).map_err(|e| e.to_string())
        };
        let (ca, cb) = (load(&a)?, load(&b)?);
        if !ca.keys().any(|k| k.starts_with("optimizer/")) {
            return Err("the checkpoint holds no optimizer state".into());
        }
        let diff = contents_differences(&ca, &cb);
        if !diff.is_empty() {
            return Err(format!("straight and resumed runs differ in {diff:?}"));
        }
        Ok((resumed, b))
    }

    /// With `store` holding a checkpoint of `expected_step` (and the trainer one or more steps
    /// further), makes `save` fail at every operation of a save (as a kill would leave it) and
    /// checks each time that `resume_step` still resumes from `expected_step`. Then saves once
    /// without failure. Returns a description of the first failure.
    pub fn check_interrupted_saves<E: std::fmt::Debug>(
        store: &CheckpointStore,
        save: impl Fn(&CheckpointStore) -> Result<PathBuf, E>,
        resume_step: impl Fn(&CheckpointStore) -> Result<Option<u64>, E>,
        expected_step: u64,
    ) -> Result<(), String> {
        let latest = store
            .load_latest()
            .map_err(|e| e.to_string())?
            .ok_or("the store has no checkpoint")?;
        let n_files = latest.files.len();
        for op in 0..CheckpointStore::save_operations(n_files) {
            if save(&store.clone().with_failure_at(op)).is_ok() {
                return Err(format!("op {op}: the save did not fail"));
            }
            match resume_step(store) {
                Ok(Some(s)) if s == expected_step => {}
                other => {
                    return Err(format!(
                        "op {op}: expected a resume at step {expected_step}, got {other:?}"
                    ));
                }
            }
        }
        save(store).map_err(|e| format!("the save after the failures: {e:?}"))?;
        Ok(())
    }

    /// Truncates, alters and removes every file of `store`'s latest checkpoint in turn (and
    /// its marker), checking that `resume` returns an error `typed` accepts (never a panic, never
    /// a success), then restores the files.
    pub fn check_damaged_checkpoint<T, E: std::fmt::Debug>(
        store: &CheckpointStore,
        resume: impl Fn(&CheckpointStore) -> Result<T, E>,
        typed: impl Fn(&E) -> bool,
    ) -> Result<(), String> {
        let dir = store
            .latest_dir()
            .map_err(|e| e.to_string())?
            .ok_or("the store has no checkpoint")?;
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let p = dir.join(&name);
            let orig = std::fs::read(&p).map_err(|e| e.to_string())?;
            let mut flipped = orig.clone();
            let i = flipped.len() / 2;
            if let Some(b) = flipped.get_mut(i) {
                *b ^= 0x10;
            }
            let damages: [(&str, Option<Vec<u8>>); 3] = [
                ("truncated", Some(orig[..orig.len() / 2].to_vec())),
                ("altered", Some(flipped)),
                ("removed", None),
            ];
            for (what, content) in damages {
                match &content {
                    Some(c) => std::fs::write(&p, c).map_err(|e| e.to_string())?,
                    None => std::fs::remove_file(&p).map_err(|e| e.to_string())?,
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resume(store)));
                std::fs::write(&p, &orig).map_err(|e| e.to_string())?;
                match r {
                    Err(_) => return Err(format!("{name} {what}: the resume panicked")),
                    Ok(Ok(_)) => return Err(format!("{name} {what}: the resume succeeded")),
                    Ok(Err(e)) if !typed(&e) => {
                        return Err(format!("{name} {what}: unexpected error {e:?}"));
                    }
                    Ok(Err(_)) => {}
                }
            }
        }
        resume(store).map_err(|e| format!("after restoring the files: {e:?}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_field() {
        let a = serde_json::json!({"lr": 1e-3, "model": {"layers": [1, 2]}, "seed": 0});
        let b = serde_json::json!({"lr": 1e-3, "model": {"layers": [1, 3]}, "seed": 0});
        let d = first_difference(&a, &b, String::new()).unwrap();
        assert_eq!(d, ("model.layers[1]".into(), "2".into(), "3".into()));
        assert!(first_difference(&a, &a, String::new()).is_none());
        let c = serde_json::json!({"lr": 1e-3, "model": {"layers": [1, 2]}});
        assert_eq!(first_difference(&a, &c, String::new()).unwrap().0, "seed");
    }

    #[test]
    fn checksum_sees_single_bit_flips() {
        let v: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let base = checksum(&v);
        for i in [0, 7, 8, 500, 999] {
            let mut w = v.clone();
            w[i] ^= 1;
            assert_ne!(checksum(&w), base, "{i}");
        }
    }
}
