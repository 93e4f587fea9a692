//! Writing modified copies of fixture checkpoints (for loader error tests and the f16 test).

use std::collections::BTreeMap;
use std::path::Path;

use crate::{HostData, HostTensor, Io};

/// The storage dtype of [`write_safetensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
    BF16,
}

/// Writes float tensors as a safetensors file in the given dtype (int tensors stay i64).
pub fn write_safetensors(tensors: &BTreeMap<String, HostTensor>, dtype: StoreDtype, path: &Path) {
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let (dt, bytes) = match (&t.data, dtype) {
            (HostData::I64(v), _) => (
                safetensors::Dtype::I64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (HostData::F32(v), StoreDtype::F32) => (
                safetensors::Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (HostData::F32(v), StoreDtype::F16) => (
                safetensors::Dtype::F16,
                v.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (HostData::F32(v), StoreDtype::BF16) => (
                safetensors::Dtype::BF16,
                v.iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
        };
        owned.push((name.clone(), dt, t.shape.clone(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).expect("serialize safetensors");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Copies the model folder `src` (every file) to `dst`, replacing the safetensors file `weights`
/// by an edited copy: `edit` changes the tensor map, `dtype` the storage dtype.
pub fn copy_model_dir_with(
    src: &Path,
    dst: &Path,
    weights: &str,
    dtype: StoreDtype,
    edit: impl FnOnce(&mut BTreeMap<String, HostTensor>),
) {
    std::fs::create_dir_all(dst).expect("create dst");
    for entry in std::fs::read_dir(src).expect("read src dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) && entry.file_name() != weights {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy file");
        }
    }
    let mut io = Io::open(&src.join(weights));
    edit(&mut io.tensors);
    write_safetensors(&io.tensors, dtype, &dst.join(weights));
}

/// A fresh empty temporary folder under the target dir's tmp (unique per call).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "unclip-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A temporary copy of the model folder `src` whose safetensors weights `<stem>.safetensors` are
/// replaced by a PyTorch `<stem>.bin` (torch's zip format), for testing the `.bin` loading path.
pub fn bin_copy_of(src: &Path, stem: &str) -> std::path::PathBuf {
    let dst = temp_dir("bin");
    let weights = format!("{stem}.safetensors");
    for entry in std::fs::read_dir(src).expect("read src dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false)
            && entry.file_name() != weights.as_str()
        {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy file");
        }
    }
    crate::safetensors_to_torch_bin(&src.join(&weights), &dst.join(format!("{stem}.bin")));
    dst
}
