//! Classifier-free guidance as the Karlo pipeline applies it.

use burn::tensor::Tensor;

use crate::error::DiffusionError;

/// Combines a batched model output `[2B, C', ...]` whose first `B` rows are unconditional and
/// last `B` rows conditional: `guided = uncond + scale * (cond - uncond)` -> `[B, C', ...]`.
///
/// - `sample_channels = None` (the prior, `[2B, E]`; the super-resolution UNets): the whole
///   output is guided.
/// - `sample_channels = Some(C)` (the decoder, `[2B, 2C, H, W]` with learned variance): only the
///   first `C` channels are guided; the remaining (variance) channels are taken from the
///   conditional half and concatenated after the guided ones, as `pipeline_unclip.py` does.
///
/// ```
/// use burn::tensor::{Device, Tensor, TensorData};
/// let device = Device::flex();
/// // rows: uncond, cond; channels: eps, variance
/// let out = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.1, 2.0, 0.7], [2, 2]), &device);
/// let g = unclip_diffusion::classifier_free_guidance(out, 3.0, Some(1)).unwrap();
/// assert_eq!(g.into_data().try_to_vec::<f32>().unwrap(), vec![4.0, 0.7]);
/// ```
pub fn classifier_free_guidance<const D: usize>(
    model_output: Tensor<D>,
    guidance_scale: f32,
    sample_channels: Option<usize>,
) -> Result<Tensor<D>, DiffusionError> {
    let dims = model_output.dims();
    if D == 0 || dims[0] == 0 || !dims[0].is_multiple_of(2) {
        return Err(DiffusionError::ShapeMismatch {
            what: "classifier_free_guidance model_output",
            found: dims.to_vec(),
            expected: "an even batch [uncond rows; cond rows]".into(),
        });
    }
    let b = dims[0] / 2;
    let uncond = model_output.clone().narrow(0, 0, b);
    let cond = model_output.narrow(0, b, b);
    let guide = |u: Tensor<D>, c: Tensor<D>| u.clone() + (c - u).mul_scalar(guidance_scale);
    match sample_channels {
        None => Ok(guide(uncond, cond)),
        Some(c) => {
            if D < 2 || c == 0 || c > dims[1] {
                return Err(DiffusionError::ShapeMismatch {
                    what: "classifier_free_guidance model_output",
                    found: dims.to_vec(),
                    expected: format!("a channel dimension (dim 1) of at least {c} channels"),
                });
            }
            let rest = dims[1] - c;
            let guided = guide(uncond.narrow(1, 0, c), cond.clone().narrow(1, 0, c));
            if rest == 0 {
                Ok(guided)
            } else {
                Ok(Tensor::cat(vec![guided, cond.narrow(1, c, rest)], 1))
            }
        }
    }
}

/// A differentiable guide for a diffusion sampler: `grad_{x_t} log p(y | x_t)` for the batch's
/// targets `y` (classifier guidance, Dhariwal & Nichol 2021; GLIDE's guidance by a noised CLIP,
/// where `log p` is the scaled cosine similarity of the noised image's and the caption's CLIP
/// embeddings).
pub trait GradientGuide {
    /// `x_t [B, C, H, W]` at timestep `t` -> the gradient `[B, C, H, W]`.
    fn gradient(&self, x_t: Tensor<4>, t: usize) -> Result<Tensor<4>, DiffusionError>;
}

/// Applies classifier guidance to a model output: `eps' = eps - sqrt(1 - a_t) * scale * grad`
/// (Dhariwal & Nichol's Algorithm 2; for the ancestral step this is their Algorithm 1's mean
/// shift `scale * Sigma * grad` up to `a_t` against `a_{t-1}`), with `x_t` held fixed, re-expressed
/// in the prediction type of `model_output`:
///
/// - epsilon: `out - sqrt(1 - a) s g`;
/// - sample (x_0): `out + (1 - a) / sqrt(a) s g`;
/// - v: `out - sqrt(1 - a) / sqrt(a) s g` (from `v = sqrt(a) eps - sqrt(1 - a) x_0`).
///
/// `model_output` and `grad` are `[B, C, ...]` (prediction channels only); `alpha_prod_t` is
/// `a_t`, the cumulative product of the alphas at `t`.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use unclip_diffusion::{PredictionType, apply_gradient_guidance};
/// let device = Device::flex();
/// let out = Tensor::<2>::zeros([1, 2], &device);
/// let grad = Tensor::<2>::ones([1, 2], &device);
/// let g = apply_gradient_guidance(out, grad, PredictionType::Epsilon, 0.75, 2.0).unwrap();
/// assert_eq!(g.into_data().try_to_vec::<f32>().unwrap(), vec![-1.0, -1.0]); // -sqrt(0.25) * 2
/// ```
pub fn apply_gradient_guidance<const D: usize>(
    model_output: Tensor<D>,
    grad: Tensor<D>,
    prediction_type: crate::PredictionType,
    alpha_prod_t: f32,
    scale: f32,
) -> Result<Tensor<D>, DiffusionError> {
    if model_output.dims() != grad.dims() {
        return Err(DiffusionError::ShapeMismatch {
            what: "guidance gradient",
            found: grad.dims().to_vec(),
            expected: format!("the model output's {:?}", model_output.dims()),
        });
    }
    if !(alpha_prod_t > 0.0 && alpha_prod_t <= 1.0) {
        return Err(DiffusionError::InvalidArgument {
            what: "alpha_prod_t",
            message: format!("{alpha_prod_t}: expected a value in (0, 1]"),
        });
    }
    let (a, b) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
    let k = match prediction_type {
        crate::PredictionType::Epsilon => -b,
        crate::PredictionType::Sample => b * b / a,
        crate::PredictionType::VPrediction => -b / a,
    };
    Ok(model_output + grad.mul_scalar(k * scale))
}
