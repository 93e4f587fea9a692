//! Activations named as transformers / diffusers configs name them.

use burn::tensor::Tensor;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

/// An activation function as a config string names it (`hidden_act`, `act_fn`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// `x * sigmoid(x)`.
    #[serde(alias = "swish")]
    Silu,
    Relu,
}

impl Activation {
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::QuickGelu => scaled_silu(x, 1.702),
            Activation::Gelu => activation::gelu(x),
            Activation::GeluTanh => activation::gelu_approximate(x),
            Activation::Silu => silu(x),
            Activation::Relu => activation::relu(x),
        }
    }
}

/// SiLU as `x / (1 + exp(-x))`, with `-x` capped at 80 so that `exp` stays finite (and so do
/// the gradients) where `x` is very negative: there `x / (1 + e^80)` is 0 to f32 precision, as
/// `x * sigmoid(x)` is.
///
/// burn's `activation::silu` is `x * sigmoid(x)`, and flex's sigmoid branches on the sign of
/// every element (for a stable formula), which the CPU mispredicts on activations of either
/// sign; the branch-free form here runs in plain element-wise kernels (`bench-ops`, in
/// `docs/benchmarks.md`).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    scaled_silu(x, 1.0)
}

/// `x * sigmoid(a x)` as `x / (1 + exp(-a x))` (the exponent capped at 80, as in [`silu`]):
/// SiLU for `a = 1`, CLIP's quick GELU for `a = 1.702`.
fn scaled_silu<const D: usize>(x: Tensor<D>, a: f64) -> Tensor<D> {
    let denominator = (x.clone() * -a).clamp_max(80.0).exp() + 1.0;
    x / denominator
}
