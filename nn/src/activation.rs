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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Points where the branch-free form could go wrong: far tails (exp overflow, the cap at
    /// 80), zero, and ordinary values.
    const XS: [f32; 12] = [
        -1000.0, -100.0, -80.0, -40.0, -5.0, -0.5, 0.0, 0.5, 5.0, 40.0, 100.0, 1000.0,
    ];

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    #[test]
    fn silu_and_quick_gelu_match_x_sigmoid_ax_in_f64() {
        let device = Device::flex();
        for (act, a) in [(Activation::Silu, 1.0), (Activation::QuickGelu, 1.702)] {
            let x = Tensor::<1>::from_data(TensorData::new(XS.to_vec(), [XS.len()]), &device);
            for (&xi, yi) in XS.iter().zip(values(act.forward(x))) {
                let want = xi as f64 * sigmoid(a * xi as f64);
                let err = (yi as f64 - want).abs();
                assert!(
                    err <= 1e-6 * want.abs().max(1.0),
                    "{act:?}({xi}) = {yi}, want {want}"
                );
            }
        }
    }

    /// The cap at 80 is what keeps this finite: without it `exp(1000)` is inf and the
    /// quotient's gradient NaN at `x = -1000`.
    #[test]
    fn silu_gradient_is_finite_and_exact_in_the_tails() {
        let device = Device::flex().autodiff();
        let x = Tensor::<1>::from_data(TensorData::new(XS.to_vec(), [XS.len()]), &device)
            .require_grad();
        let grads = silu(x.clone()).sum().backward();
        let g = values(x.grad(&grads).expect("gradient of x"));
        for (&xi, gi) in XS.iter().zip(g) {
            let s = sigmoid(xi as f64);
            let want = s * (1.0 + xi as f64 * (1.0 - s)); // d/dx x sigmoid(x)
            assert!(gi.is_finite(), "silu'({xi}) = {gi}");
            assert!(
                (gi as f64 - want).abs() <= 1e-5,
                "silu'({xi}) = {gi}, want {want}"
            );
        }
    }
}
