//! The shared parity harness of unclip's tests.
//!
//! - [`fixtures_root`] / [`fixture_dir`]: the fixture root is `UNCLIP_FIXTURES` when set, else
//!   `../shared/fixtures` beside the workspace root. A missing fixture folder panics with a message
//!   that names the path, so a parity test without its data fails loudly (never a silent skip).
//! - [`Io`]: reads an `io.safetensors` (or any safetensors file) into host tensors (f32 / i64),
//!   converting f16/bf16/f64/i32 on the way.
//! - [`compare`] / [`assert_close`]: max abs and max relative error and where they occur; the pass
//!   rule is `max_abs <= tol * max(1, max|ref|)` ("scaled" tolerance, as the issues state it).
//! - [`test_device`]: the device tests run on, chosen explicitly (`UNCLIP_DEVICE`, default `flex`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

pub mod grad;
mod write;
pub use write::{StoreDtype, bin_copy_of, copy_model_dir_with, temp_dir, write_safetensors};
mod torch_bin;
pub use torch_bin::{safetensors_to_torch_bin, write_torch_bin};

/// The fixture root: `UNCLIP_FIXTURES` when set, else `<workspace>/../shared/fixtures`.
pub fn fixtures_root() -> PathBuf {
    if let Ok(root) = std::env::var("UNCLIP_FIXTURES") {
        return PathBuf::from(root);
    }
    // testkit/ is one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// `<root>/<name>`, panicking (failing the test) with the path when the folder is missing.
pub fn fixture_dir(name: &str) -> PathBuf {
    let dir = fixtures_root().join(name);
    assert!(
        dir.is_dir(),
        "fixture folder {} is missing (root {}; set UNCLIP_FIXTURES to the fixture root)",
        dir.display(),
        fixtures_root().display()
    );
    dir
}

/// Reads a JSON file, panicking with the path on failure.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// A tensor read from a fixture, on the host.
#[derive(Debug, Clone)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    /// Values as f32 (ints converted).
    pub fn f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as i64 (floats must be integral).
    pub fn i64(&self) -> Vec<i64> {
        match &self.data {
            HostData::I64(v) => v.clone(),
            HostData::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }

    /// A float tensor on `device`; `D` must equal the stored rank.
    pub fn float<const D: usize>(&self, device: &Device) -> Tensor<D> {
        assert_eq!(
            self.shape.len(),
            D,
            "rank mismatch: stored shape {:?}",
            self.shape
        );
        Tensor::from_data(TensorData::new(self.f32(), self.shape.clone()), device)
    }

    /// An int tensor on `device`.
    pub fn int<const D: usize>(&self, device: &Device) -> Tensor<D, Int> {
        assert_eq!(
            self.shape.len(),
            D,
            "rank mismatch: stored shape {:?}",
            self.shape
        );
        Tensor::from_data(TensorData::new(self.i64(), self.shape.clone()), device)
    }
}

/// All tensors of one safetensors file.
#[derive(Debug, Clone)]
pub struct Io {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
}

impl Io {
    /// Reads `path` (a safetensors file).
    pub fn open(path: &Path) -> Self {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("bad safetensors {}: {e}", path.display()));
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            use safetensors::Dtype;
            let data = match view.dtype() {
                Dtype::F32 => HostData::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                Dtype::F64 => HostData::F32(
                    raw.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect(),
                ),
                Dtype::F16 => HostData::F32(
                    raw.chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                ),
                Dtype::BF16 => HostData::F32(
                    raw.chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                ),
                Dtype::I64 => HostData::I64(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::I32 => HostData::I64(
                    raw.chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                ),
                Dtype::BOOL | Dtype::U8 => HostData::I64(raw.iter().map(|&b| b as i64).collect()),
                other => panic!(
                    "{}: tensor {name} has unsupported dtype {other:?}",
                    path.display()
                ),
            };
            tensors.insert(name, HostTensor { shape, data });
        }
        Io {
            path: path.to_path_buf(),
            tensors,
        }
    }

    /// `<dir>/io.safetensors`.
    pub fn open_dir(dir: &Path) -> Self {
        Self::open(&dir.join("io.safetensors"))
    }

    /// The tensor `name`, panicking with the file and name when absent.
    pub fn get(&self, name: &str) -> &HostTensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor named {name}", self.path.display()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names starting with `prefix`, sorted.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Outcome of comparing an actual tensor against a reference.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub max_abs: f32,
    /// Flat index of the largest absolute error.
    pub at: usize,
    pub max_rel: f32,
    /// Largest |reference|.
    pub ref_max: f32,
}

impl Report {
    /// `max_abs / max(1, max|ref|)`.
    pub fn scaled(&self) -> f32 {
        self.max_abs / self.ref_max.max(1.0)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: max abs {:.3e} at {} (scaled {:.3e}), max rel {:.3e}, max|ref| {:.3e}",
            self.name,
            self.max_abs,
            self.at,
            self.scaled(),
            self.max_rel,
            self.ref_max
        )
    }
}

/// Compares `actual` with `expected` (same number of elements; shapes checked by the caller or
/// [`assert_close`]).
pub fn compare(name: &str, actual: &[f32], expected: &[f32]) -> Report {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{name}: {} values vs {} expected",
        actual.len(),
        expected.len()
    );
    let mut max_abs = 0f32;
    let mut at = 0usize;
    let mut max_rel = 0f32;
    let mut ref_max = 0f32;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let d = (a - e).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > max_abs {
            max_abs = d;
            at = i;
        }
        let rel = d / e.abs().max(1e-6);
        if rel > max_rel {
            max_rel = rel;
        }
        ref_max = ref_max.max(e.abs());
    }
    Report {
        name: name.to_string(),
        max_abs,
        at,
        max_rel,
        ref_max,
    }
}

/// Asserts `actual` matches the reference `expected` within `tol` scaled by max(1, max|ref|),
/// and that the shapes agree. Prints the report either way; returns it.
pub fn assert_close<const D: usize>(
    name: &str,
    actual: Tensor<D>,
    expected: &HostTensor,
    tol: f32,
) -> Report {
    let shape = actual.dims().to_vec();
    assert_eq!(
        shape, expected.shape,
        "{name}: shape {:?} vs reference {:?}",
        shape, expected.shape
    );
    let data = actual.into_data().convert::<f32>();
    let values = data.as_slice::<f32>().expect("f32 data").to_vec();
    assert_close_slice(name, &values, &expected.f32(), tol)
}

/// [`assert_close`] on host slices.
pub fn assert_close_slice(name: &str, actual: &[f32], expected: &[f32], tol: f32) -> Report {
    let report = compare(name, actual, expected);
    println!("{report}");
    assert!(
        report.scaled() <= tol,
        "{report} exceeds tolerance {tol:e} (scaled by max(1, max|ref|))"
    );
    report
}

/// Values of a float tensor on the host.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .as_slice::<f32>()
        .expect("f32 data")
        .to_vec()
}

/// The device tests run on: `UNCLIP_DEVICE` (`flex` default; `ndarray`, `wgpu`, `wgpu-cpu`,
/// `libtorch` when those backends are compiled in).
pub fn test_device() -> Device {
    let name = std::env::var("UNCLIP_DEVICE").unwrap_or_else(|_| "flex".to_string());
    match name.as_str() {
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "wgpu")]
        "wgpu-cpu" => Device::wgpu(burn::tensor::DeviceKind::Cpu),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "libtorch" => Device::libtorch(),
        other => panic!("UNCLIP_DEVICE={other} is not a device this test build has"),
    }
}
