//! Sinusoidal timestep embeddings as diffusers' `get_timestep_embedding` computes them.

use burn::tensor::{Device, Tensor, TensorData};

/// diffusers `get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift,
/// scale=1, max_period=10000)`.
///
/// `timesteps [B]` (float) -> `[B, dim]`: `exponent_i = -ln(max_period) * i / (half - shift)`,
/// `emb = t * exp(exponent)`, `[sin, cos]` (or `[cos, sin]` when flipped), zero-padded when `dim` is
/// odd.
pub fn timestep_embedding(
    timesteps: Tensor<1>,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
) -> Tensor<2> {
    let device = timesteps.device();
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - downscale_freq_shift)).exp() as f32)
        .collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device).unsqueeze::<2>(); // [1, half]
    let args = timesteps.unsqueeze_dim::<2>(1) * freqs; // [B, half]
    let (a, b) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos { Tensor::cat(vec![b, a], 1) } else { Tensor::cat(vec![a, b], 1) };
    if dim % 2 == 1 {
        let bsz = emb.dims()[0];
        Tensor::cat(vec![emb, Tensor::zeros([bsz, 1], &device)], 1)
    } else {
        emb
    }
}

/// A `[B]` float tensor holding `t` for every row.
pub fn timesteps_tensor(t: f32, batch: usize, device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![t; batch], [batch]), device)
}
