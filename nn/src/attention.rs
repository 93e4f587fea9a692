//! Scaled dot-product attention shared by CLIP, the prior and the UNets: PyTorch's
//! `F.scaled_dot_product_attention` with an additive float mask (what transformers'
//! `CLIPAttention` and diffusers' attention processors call), written out as
//! `softmax(q k^T * scale + bias) v`.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// `softmax(q k^T * scale + bias) v`.
///
/// Shapes: `q [B, H, Lq, Dh]`, `k, v [B, H, Lk, Dh]`, `bias` broadcastable to `[B, H, Lq, Lk]`
/// (additive: 0 where attending is allowed, a large negative number where it is not).
pub fn scaled_dot_product(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<4>>,
    scale: f64,
) -> Tensor<4> {
    // The scale goes on q `[B, H, Lq, Dh]` rather than on the scores `[B, H, Lq, Lk]`: the
    // same product (exactly so for a power-of-two scale such as 1/8), one pass over the
    // smaller tensor.
    let scores = (q * scale).matmul(k.swap_dims(2, 3)); // [B, H, Lq, Lk]
    let scores = match bias {
        Some(b) => scores + b,
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}

/// The additive value used for masked positions: the most negative f32, as transformers'
/// masks use `torch.finfo(dtype).min`.
pub const MASK_MIN: f32 = f32::MIN;

/// Splits heads: `[B, L, H*Dh] -> [B, H, L, Dh]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, l, d] = x.dims();
    x.reshape([b, l, heads, d / heads]).swap_dims(1, 2)
}

/// Merges heads: `[B, H, L, Dh] -> [B, L, H*Dh]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, l, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, l, h * dh])
}
