//! The pre-LayerNorm transformer encoder shared by CLIP's text and vision towers
//! (transformers `CLIPEncoder` / `CLIPEncoderLayer` / `CLIPAttention` / `CLIPMLP`).
//! Field names follow the HF checkpoint keys (`layers.N.self_attn.q_proj`, `layer_norm1`, `mlp.fc1`).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use unclip_nn::{Activation, LayerNorm, Linear, merge_heads, scaled_dot_product, split_heads};

/// Multi-head self-attention with q/k/v/out projections (all with bias).
#[derive(Module, Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    pub num_heads: usize,
}

impl ClipAttention {
    pub fn new(d: usize, num_heads: usize, device: &Device) -> Self {
        ClipAttention {
            q_proj: Linear::new(d, d, true, device),
            k_proj: Linear::new(d, d, true, device),
            v_proj: Linear::new(d, d, true, device),
            out_proj: Linear::new(d, d, true, device),
            num_heads,
        }
    }

    /// `x [B, L, D]`, `bias` additive `[B or 1, 1, L, L]` -> `[B, L, D]`.
    pub fn forward(&self, x: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let d = x.dims()[2];
        let scale = 1.0 / ((d / self.num_heads) as f64).sqrt();
        let q = split_heads(self.q_proj.forward(x.clone()), self.num_heads);
        let k = split_heads(self.k_proj.forward(x.clone()), self.num_heads);
        let v = split_heads(self.v_proj.forward(x), self.num_heads);
        self.out_proj
            .forward(merge_heads(scaled_dot_product(q, k, v, bias, scale)))
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub act: Activation,
}

/// One pre-LN block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    pub fn new(
        d: usize,
        inter: usize,
        heads: usize,
        act: Activation,
        eps: f64,
        device: &Device,
    ) -> Self {
        ClipEncoderLayer {
            self_attn: ClipAttention::new(d, heads, device),
            layer_norm1: LayerNorm::new(d, eps, device),
            mlp: ClipMlp {
                fc1: Linear::new(d, inter, true, device),
                fc2: Linear::new(inter, d, true, device),
                act,
            },
            layer_norm2: LayerNorm::new(d, eps, device),
        }
    }

    pub fn forward(&self, x: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), bias);
        let m = self.mlp.fc2.forward(
            self.mlp
                .act
                .forward(self.mlp.fc1.forward(self.layer_norm2.forward(h.clone()))),
        );
        h + m
    }
}

/// The stack of encoder layers.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    pub fn new(
        layers: usize,
        d: usize,
        inter: usize,
        heads: usize,
        act: Activation,
        eps: f64,
        device: &Device,
    ) -> Self {
        ClipEncoder {
            layers: (0..layers)
                .map(|_| ClipEncoderLayer::new(d, inter, heads, act, eps, device))
                .collect(),
        }
    }

    /// Returns the output and, when `collect` is set, every hidden state (input first, then the
    /// output of each layer), as transformers' `output_hidden_states`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: Option<Tensor<4>>,
        collect: bool,
    ) -> (Tensor<3>, Vec<Tensor<3>>) {
        let mut states = Vec::new();
        let mut h = x;
        for layer in &self.layers {
            if collect {
                states.push(h.clone());
            }
            h = layer.forward(h, bias.clone());
        }
        if collect {
            states.push(h.clone());
        }
        (h, states)
    }
}
