//! diffusers `models/attention_processor.py` `Attention` with `added_kv_proj_dim` run by
//! `AttnAddedKVProcessor2_0` (GLIDE's "encoder_kv" attention), as the UnCLIP decoder's
//! `SimpleCrossAttn*` blocks use it:
//!
//! - pixels `x [B, C, H, W]` become tokens `[B, HW, C]`; `group_norm` normalises them;
//! - queries from the normalised pixels; keys / values are the projected context tokens
//!   (`add_k_proj` / `add_v_proj`, `[B, L, Dc] -> [B, L, C]`) concatenated *before* the projected
//!   pixel tokens (`to_k` / `to_v`; absent with `only_cross_attention`);
//! - the additive padding bias `[B, L]` covers the context tokens and is padded with zeros for
//!   the pixel tokens (diffusers `prepare_attention_mask` pads by the query length);
//! - `softmax(q k^T / sqrt(Dh) + bias) v`, `to_out[0]`, plus the residual.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use unclip_nn::{GroupNorm, Linear, merge_heads, scaled_dot_product, split_heads};

/// The conditioning shared by every attention layer of one UNet call.
#[derive(Debug, Clone)]
pub struct CrossContext {
    /// `[B, L, Dc]` context tokens (text_proj output).
    pub hidden_states: Tensor<3>,
    /// `[B, L]` additive bias: 0 to attend, -10000 for padded tokens (diffusers converts a 0/1 mask
    /// with `(1 - mask) * -10000`).
    pub bias: Option<Tensor<2>>,
}

/// `Attention(query_dim=C, heads=C/Dh, dim_head=Dh, added_kv_proj_dim=Dc,
/// norm_num_groups=G, bias=True, out_bias=True)` with the added-KV processor.
#[derive(Module, Debug)]
pub struct AddedKvAttention {
    pub group_norm: GroupNorm,
    /// `[C, C]`
    pub to_q: Linear,
    /// `[C, C]`; `None` with `only_cross_attention`.
    pub to_k: Option<Linear>,
    pub to_v: Option<Linear>,
    /// `[C, Dc]`
    pub add_k_proj: Linear,
    pub add_v_proj: Linear,
    /// `[C, C]` (checkpoint key `to_out.0`; see `load.rs`).
    pub to_out: Linear,
    #[module(skip)]
    pub heads: usize,
}

impl AddedKvAttention {
    /// `channels` C, `head_dim` Dh, `context_dim` Dc, `groups` G (eps 1e-5 as diffusers'
    /// `Attention` default).
    pub fn new(
        channels: usize,
        head_dim: usize,
        context_dim: usize,
        groups: usize,
        only_cross_attention: bool,
        device: &Device,
    ) -> Self {
        let inner = channels; // heads * head_dim with heads = channels / head_dim
        AddedKvAttention {
            group_norm: GroupNorm::new(groups, channels, 1e-5, device),
            to_q: Linear::new(channels, inner, true, device),
            to_k: (!only_cross_attention).then(|| Linear::new(channels, inner, true, device)),
            to_v: (!only_cross_attention).then(|| Linear::new(channels, inner, true, device)),
            add_k_proj: Linear::new(context_dim, inner, true, device),
            add_v_proj: Linear::new(context_dim, inner, true, device),
            to_out: Linear::new(inner, channels, true, device),
            heads: channels / head_dim.max(1),
        }
    }

    /// `x [B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>, ctx: &CrossContext) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let hw = h * w;
        // [B, HW, C] laid out once (the transpose is copied here, not in each of the three
        // projections below)
        let normed = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, hw])
            .swap_dims(1, 2)
            .reshape([b * hw, c])
            .reshape([b, hw, c]);
        let q = split_heads(self.to_q.forward(normed.clone()), self.heads); // [B, h, HW, Dh]
        let ek = split_heads(
            self.add_k_proj.forward(ctx.hidden_states.clone()),
            self.heads,
        ); // [B, h, L, Dh]
        let ev = split_heads(
            self.add_v_proj.forward(ctx.hidden_states.clone()),
            self.heads,
        );
        let (k, v) = match (&self.to_k, &self.to_v) {
            (Some(tk), Some(tv)) => {
                let k = split_heads(tk.forward(normed.clone()), self.heads); // [B, h, HW, Dh]
                let v = split_heads(tv.forward(normed), self.heads);
                (Tensor::cat(vec![ek, k], 2), Tensor::cat(vec![ev, v], 2)) // [B, h, L+HW, Dh]
            }
            _ => (ek, ev),
        };
        let lk = k.dims()[2];
        let bias = ctx.bias.as_ref().map(|bias| {
            let [bb, l] = bias.dims();
            let full = if lk > l {
                Tensor::cat(
                    vec![bias.clone(), Tensor::zeros([bb, lk - l], &bias.device())],
                    1,
                )
            } else {
                bias.clone()
            };
            full.reshape([bb, 1, 1, lk]) // [B, 1, 1, L+HW]
        });
        let dh = c / self.heads;
        let out = scaled_dot_product(q, k, v, bias, 1.0 / (dh as f64).sqrt()); // [B, h, HW, Dh]
        let out = self.to_out.forward(merge_heads(out)); // [B, HW, C]
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}
