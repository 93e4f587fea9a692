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
