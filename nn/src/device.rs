//! Choosing a device by name (for tests, examples and command-line tools).

use burn::tensor::Device;

/// Parses a device name: `flex` and `ndarray` (CPU), `wgpu` (the best adapter), `wgpu-cpu`
/// (a CPU Vulkan adapter such as Mesa's lavapipe), `libtorch` and `libtorch-cuda` (burn's
/// LibTorch backend on the CPU or on CUDA GPU 0), each available when the matching cargo
/// feature (`flex`, `ndarray`, `wgpu`, `tch`) is compiled in.
///
/// ```
/// let device = unclip_nn::parse_device("flex").unwrap();
/// assert!(unclip_nn::parse_device("tpu").is_err());
/// ```
pub fn parse_device(name: &str) -> Result<Device, UnknownDevice> {
    match name {
        #[cfg(feature = "flex")]
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" | "gpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "wgpu")]
        "wgpu-cpu" | "lavapipe" => Ok(Device::wgpu(burn::tensor::DeviceKind::Cpu)),
        // burn-tch is deprecated in burn 0.22; it is the fast CPU trainer here.
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "libtorch" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "libtorch-cuda" => Ok(Device::libtorch_cuda(0)),
        other => Err(UnknownDevice {
            name: other.to_string(),
            available: available_devices(),
        }),
    }
}

/// Device names this build understands.
pub fn available_devices() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
        v.push("wgpu-cpu");
    }
    if cfg!(feature = "tch") {
        v.push("libtorch");
        v.push("libtorch-cuda");
    }
    v
}

/// A device name this build does not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown device `{name}`; this build supports {available:?} (enable the cargo feature of the backend you want)"
)]
pub struct UnknownDevice {
    pub name: String,
    pub available: Vec<&'static str>,
}
