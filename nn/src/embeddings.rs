//! diffusers `models/embeddings.py`: the sinusoidal timestep projection (`Timesteps` /
//! `get_timestep_embedding`) and `TimestepEmbedding` (linear, activation, linear), shared by the
//! prior, the decoder and the upsamplers.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::{Activation, Linear};

/// diffusers `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift, scale=1,
/// max_period=10000)` with torch's float32 rounding reproduced step by step
/// (`exponent = f32(-ln 10000) * i`, divided by `f32(half - shift)`, `exp`, times `t`), so large
/// timesteps (t = 999) match to the last bits.
///
/// `timesteps [B]` -> `[B, dim]` (`[cos, sin]` when flipped, else `[sin, cos]`; zero-padded when
/// `dim` is odd).
pub fn timestep_embedding(
    timesteps: Tensor<1>,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
) -> Tensor<2> {
    let device = timesteps.device();
    let half = dim / 2;
    let neg_log = -(10000f64.ln()) as f32;
    let denom = (half as f64 - downscale_freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((neg_log * i as f32) / denom).exp())
        .collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device).unsqueeze::<2>(); // [1, half]
    let args = timesteps.unsqueeze_dim::<2>(1) * freqs; // [B, half]
    let (s, c) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![c, s], 1)
    } else {
        Tensor::cat(vec![s, c], 1)
    };
    if dim % 2 == 1 {
        let b = emb.dims()[0];
        Tensor::cat(vec![emb, Tensor::zeros([b, 1], &device)], 1)
    } else {
        emb
    }
}

/// A `[B]` float tensor holding `t` for every row.
pub fn timesteps_tensor(t: f32, batch: usize, device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![t; batch], [batch]), device)
}

/// diffusers `TimestepEmbedding`: `linear_2(act(linear_1(x)))`, then the optional post activation.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// `[d_hidden, d_in]`
    pub linear_1: Linear,
    /// `[d_out, d_hidden]`
    pub linear_2: Linear,
    #[module(skip)]
    pub act: Activation,
    #[module(skip)]
    pub post_act: Option<Activation>,
}

impl TimestepEmbedding {
    pub fn new(
        d_in: usize,
        d_hidden: usize,
        d_out: usize,
        act: Activation,
        post_act: Option<Activation>,
        device: &Device,
    ) -> Self {
        TimestepEmbedding {
            linear_1: Linear::new(d_in, d_hidden, true, device),
            linear_2: Linear::new(d_hidden, d_out, true, device),
            act,
            post_act,
        }
    }

    /// `[B, d_in] -> [B, d_out]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self
            .linear_2
            .forward(self.act.forward(self.linear_1.forward(x)));
        match self.post_act {
            Some(a) => a.forward(h),
            None => h,
        }
    }
}
