//! The diffusion prior network: a port of diffusers' `PriorTransformer`
//! (`diffusers/models/transformers/prior_transformer.py`, diffusers 0.42) with the
//! `BasicTransformerBlock` it stacks (`diffusers/models/attention.py`: self-attention only,
//! `layer_norm`, `gelu` feed-forward, biased attention projections), as the Karlo v1-alpha
//! unCLIP prior uses it.
//!
//! The network reads a token sequence
//! `[text token states (T) | text embedding | time embedding | x_t | prd]` (Karlo: `T = 77`, four
//! additional tokens), adds a learned positional embedding, runs a causal transformer and projects
//! the last token (the `prd` token) back to the CLIP embedding width: the predicted clean image
//! embedding x_0 (Karlo's prior is trained with `prediction_type = "sample"`).
//!
//! Field names mirror the diffusers checkpoint keys; the three places where they cannot
//! (`attn1.to_out.0`, `ff.net.0.proj`, `ff.net.2`) are the key map in [`crate::load`].

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use unclip_nn::{
    LayerNorm, Linear, TimestepEmbedding, merge_heads, scaled_dot_product, split_heads,
    timestep_embedding,
};

use crate::{PriorError, PriorTransformerConfig};

/// The additive value diffusers' prior uses for masked attention positions (not `finfo.min`).
pub const PRIOR_MASK_VALUE: f32 = -10000.0;

/// Layer-norm epsilon of every norm in the prior (torch default).
const LN_EPS: f64 = 1e-5;

/// diffusers `Attention` as `BasicTransformerBlock.attn1` builds it (self-attention, biased
/// q/k/v, scale `head_dim^-0.5`).
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    /// Checkpoint key `to_out.0` (remapped, see [`crate::load::KARLO_PRIOR_KEYS`]).
    pub to_out: Linear,
    #[module(skip)]
    pub heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

impl SelfAttention {
    /// `x [B, S, D]`, `bias [B, 1, S, S]` (additive) -> `[B, S, D]`
    pub fn forward(&self, x: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let q = split_heads(self.to_q.forward(x.clone()), self.heads); // [B, H, S, Dh]
        let k = split_heads(self.to_k.forward(x.clone()), self.heads);
        let v = split_heads(self.to_v.forward(x), self.heads);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let out = scaled_dot_product(q, k, v, bias, scale); // [B, H, S, Dh]
        self.to_out.forward(merge_heads(out))
    }
}

/// diffusers `FeedForward(dim, activation_fn="gelu")`: `net.2(gelu(net.0.proj(x)))`, inner
/// width `4 * dim`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// Checkpoint key `net.0.proj`: `[4D, D]`
    pub proj_in: Linear,
    /// Checkpoint key `net.2`: `[D, 4D]`
    pub proj_out: Linear,
}

impl FeedForward {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.proj_out
            .forward(burn::tensor::activation::gelu(self.proj_in.forward(x)))
    }
}

/// diffusers `BasicTransformerBlock` without cross-attention:
/// `h += attn1(norm1(h)); h += ff(norm3(h))`.
#[derive(Module, Debug)]
pub struct TransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: SelfAttention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

impl TransformerBlock {
    pub fn new(dim: usize, heads: usize, head_dim: usize, device: &Device) -> Self {
        let inner = heads * head_dim;
        TransformerBlock {
            norm1: LayerNorm::new(dim, LN_EPS, device),
            attn1: SelfAttention {
                to_q: Linear::new(dim, inner, true, device),
                to_k: Linear::new(dim, inner, true, device),
                to_v: Linear::new(dim, inner, true, device),
                to_out: Linear::new(inner, dim, true, device),
                heads,
                head_dim,
            },
            norm3: LayerNorm::new(dim, LN_EPS, device),
            ff: FeedForward {
                proj_in: Linear::new(dim, 4 * dim, true, device),
                proj_out: Linear::new(4 * dim, dim, true, device),
            },
        }
    }

    /// `[B, S, D] -> [B, S, D]`
    pub fn forward(&self, h: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let h = h.clone() + self.attn1.forward(self.norm1.forward(h), bias);
        h.clone() + self.ff.forward(self.norm3.forward(h))
    }
}

/// What the prior is conditioned on (the text side), shared by every denoising step.
#[derive(Debug, Clone)]
pub struct PriorConditioning {
    /// CLIP text embedding (`text_embeds`, not normalised) `[B, embedding_proj_dim]`.
    pub proj_embedding: Tensor<2>,
    /// CLIP text `last_hidden_state` `[B, num_embeddings, embedding_dim]`; required when the
    /// config has `encoder_hid_proj_type = "linear"` (Karlo).
    pub encoder_hidden_states: Option<Tensor<3>>,
    /// Text mask `[B, num_embeddings]`, `true` = a real token. `None` applies no mask at all
    /// (diffusers then skips the causal mask too).
    pub attention_mask: Option<Tensor<2, Bool>>,
}

impl PriorConditioning {
    /// Batch size (rows of `proj_embedding`).
    pub fn batch(&self) -> usize {
        self.proj_embedding.dims()[0]
    }

    /// Rows `[a, b)` of every tensor.
    pub fn rows(&self, a: usize, b: usize) -> Result<Self, PriorError> {
        if a >= b || b > self.batch() {
            return Err(PriorError::InvalidArgument {
                name: "rows",
                message: format!("rows {a}..{b} of a batch of {}", self.batch()),
            });
        }
        Ok(PriorConditioning {
            proj_embedding: self.proj_embedding.clone().narrow(0, a, b - a),
            encoder_hidden_states: self
                .encoder_hidden_states
                .clone()
                .map(|t| t.narrow(0, a, b - a)),
            attention_mask: self.attention_mask.clone().map(|t| t.narrow(0, a, b - a)),
        })
    }

    /// Each row repeated `n` times in place (`repeat_interleave(n, dim=0)`), as pipelines do for
    /// `num_images_per_prompt`.
    pub fn repeat_interleave(&self, n: usize) -> Self {
        fn rep2<K: burn::tensor::kind::Basic>(t: Tensor<2, K>, n: usize) -> Tensor<2, K> {
            let [b, d] = t.dims();
            t.unsqueeze_dim::<3>(1).repeat_dim(1, n).reshape([b * n, d])
        }
        PriorConditioning {
            proj_embedding: rep2(self.proj_embedding.clone(), n),
            encoder_hidden_states: self.encoder_hidden_states.clone().map(|t| {
                let [b, l, d] = t.dims();
                t.unsqueeze_dim::<4>(1)
                    .repeat_dim(1, n)
                    .reshape([b * n, l, d])
            }),
            attention_mask: self.attention_mask.clone().map(|t| rep2(t, n)),
        }
    }

    /// Rows of `self` followed by rows of `other` (e.g. `[uncond; cond]` for guidance).
    pub fn cat(&self, other: &Self) -> Result<Self, PriorError> {
        let both = |a: bool, b: bool, what: &'static str| {
            if a != b {
                Err(PriorError::InvalidArgument {
                    name: what,
                    message: "present in one conditioning but not the other".into(),
                })
            } else {
                Ok(())
            }
        };
        both(
            self.encoder_hidden_states.is_some(),
            other.encoder_hidden_states.is_some(),
            "encoder_hidden_states",
        )?;
        both(
            self.attention_mask.is_some(),
            other.attention_mask.is_some(),
            "attention_mask",
        )?;
        Ok(PriorConditioning {
            proj_embedding: Tensor::cat(
                vec![self.proj_embedding.clone(), other.proj_embedding.clone()],
                0,
            ),
            encoder_hidden_states: match (&self.encoder_hidden_states, &other.encoder_hidden_states)
            {
                (Some(a), Some(b)) => Some(Tensor::cat(vec![a.clone(), b.clone()], 0)),
                _ => None,
            },
            attention_mask: match (&self.attention_mask, &other.attention_mask) {
                (Some(a), Some(b)) => Some(Tensor::cat(vec![a.clone(), b.clone()], 0)),
                _ => None,
            },
        })
    }
}

/// The unCLIP diffusion prior (diffusers `PriorTransformer`).
#[derive(Module, Debug)]
pub struct PriorTransformer {
    /// `Timesteps(inner_dim, flip_sin_to_cos=True, shift=0)` feeds this MLP.
    pub time_embedding: TimestepEmbedding,
    /// `[inner, embedding_dim]`: x_t -> token.
    pub proj_in: Linear,
    /// Optional LayerNorm on `proj_embedding` (`embedding_proj_norm_type = "layer"`).
    pub embedding_proj_norm: Option<LayerNorm>,
    /// `[inner, embedding_proj_dim]`: text embedding -> token.
    pub embedding_proj: Linear,
    /// `[inner, embedding_dim]`: text token states -> tokens.
    pub encoder_hidden_states_proj: Option<Linear>,
    /// `[1, num_embeddings + additional_embeddings, inner]`
    pub positional_embedding: Param<Tensor<3>>,
    /// `[1, 1, inner]`: the learned query token whose output is the prediction.
    pub prd_embedding: Option<Param<Tensor<3>>>,
    pub transformer_blocks: Vec<TransformerBlock>,
    /// Optional LayerNorm before the blocks (`norm_in_type = "layer"`).
    pub norm_in: Option<LayerNorm>,
    pub norm_out: LayerNorm,
    /// `[clip_embed_dim, inner]`
    pub proj_to_clip_embeddings: Linear,
    /// `[1, clip_embed_dim]`: statistics of CLIP image embeddings; the prior works in the
    /// normalised space `(x - mean) / std`.
    pub clip_mean: Param<Tensor<2>>,
    /// `[1, clip_embed_dim]`
    pub clip_std: Param<Tensor<2>>,
    #[module(skip)]
    pub config: PriorTransformerConfig,
}

impl PriorTransformer {
    /// A freshly initialised prior (torch's default init for linear layers, zero positional and
    /// prd embeddings as diffusers; `clip_mean = 0`, `clip_std = 1`, where diffusers starts
    /// `clip_std` at 0 and expects it to be loaded).
    pub fn new(config: &PriorTransformerConfig, device: &Device) -> Result<Self, PriorError> {
        config.validate()?;
        let inner = config.inner_dim();
        let ted = config.time_embed_dim();
        let epd = config.embedding_proj_dim();
        let clip = config.clip_embed_dim();
        let e = config.embedding_dim;
        Ok(PriorTransformer {
            time_embedding: TimestepEmbedding::new(
                inner,
                ted,
                inner,
                config.time_activation()?.to_nn(),
                None,
                device,
            ),
            proj_in: Linear::new(e, inner, true, device),
            embedding_proj_norm: config
                .has_embedding_proj_norm()?
                .then(|| LayerNorm::new(epd, LN_EPS, device)),
            embedding_proj: Linear::new(epd, inner, true, device),
            encoder_hidden_states_proj: config
                .has_encoder_hid_proj()?
                .then(|| Linear::new(e, inner, true, device)),
            positional_embedding: Param::from_tensor(Tensor::zeros(
                [1, config.seq_len(), inner],
                device,
            )),
            prd_embedding: config
                .has_prd()?
                .then(|| Param::from_tensor(Tensor::zeros([1, 1, inner], device))),
            transformer_blocks: (0..config.num_layers)
                .map(|_| {
                    TransformerBlock::new(
                        inner,
                        config.num_attention_heads,
                        config.attention_head_dim,
                        device,
                    )
                })
                .collect(),
            norm_in: config
                .has_norm_in()?
                .then(|| LayerNorm::new(inner, LN_EPS, device)),
            norm_out: LayerNorm::new(inner, LN_EPS, device),
            proj_to_clip_embeddings: Linear::new(inner, clip, true, device),
            clip_mean: Param::from_tensor(Tensor::zeros([1, clip], device)),
            clip_std: Param::from_tensor(Tensor::ones([1, clip], device)),
            config: config.clone(),
        })
    }

    /// Like [`Self::new`] but with small random positional / prd embeddings (useful to train
    /// from scratch, where all-zero query tokens slow the start).
    pub fn new_random(
        config: &PriorTransformerConfig,
        device: &Device,
    ) -> Result<Self, PriorError> {
        let mut m = Self::new(config, device)?;
        let pe = m.positional_embedding.dims();
        m.positional_embedding =
            Param::from_tensor(Tensor::random(pe, Distribution::Normal(0.0, 0.02), device));
        if m.prd_embedding.is_some() {
            let d = config.inner_dim();
            m.prd_embedding = Some(Param::from_tensor(Tensor::random(
                [1, 1, d],
                Distribution::Normal(0.0, 0.02),
                device,
            )));
        }
        Ok(m)
    }

    pub fn config(&self) -> &PriorTransformerConfig {
        &self.config
    }

    /// Predicts the (normalised) clean image embedding.
    ///
    /// - `hidden_states [B, embedding_dim]`: noisy image embedding x_t (normalised space).
    /// - `timesteps [B]` or `[1]` (broadcast): diffusion timesteps as floats.
    /// - `cond`: text embedding `[B, embedding_proj_dim]`, token states `[B, T, embedding_dim]`,
    ///   optional mask `[B, T]`.
    ///
    /// Returns `[B, clip_embed_dim]`. Mirrors `PriorTransformer.forward(...).predicted_image_embedding`:
    /// with a mask the attention bias is `(1 - mask) * -10000` padded with zeros for the
    /// `additional_embeddings` tokens, plus the causal `-10000` upper triangle; without a mask no
    /// bias at all. With `added_emb_type = null` the output is the token after the
    /// additional tokens (x_t's position) instead of the prd token.
    pub fn forward(
        &self,
        hidden_states: Tensor<2>,
        timesteps: Tensor<1>,
        cond: &PriorConditioning,
    ) -> Result<Tensor<2>, PriorError> {
        let cfg = &self.config;
        let [b, e] = hidden_states.dims();
        if e != cfg.embedding_dim {
            return Err(PriorError::shape(
                "hidden_states",
                format!("[B, {}]", cfg.embedding_dim),
                &[b, e],
            ));
        }
        let device = hidden_states.device();
        let inner = cfg.inner_dim();

        // Timesteps: [B] (or [1] broadcast) -> sinusoidal [B, inner] -> MLP [B, inner].
        let timesteps = match timesteps.dims()[0] {
            n if n == b => timesteps,
            1 => timesteps.expand([b]),
            n => {
                return Err(PriorError::shape(
                    "timesteps",
                    format!("[{b}] or [1]"),
                    &[n],
                ));
            }
        };
        let t_emb = timestep_embedding(timesteps, inner, true, 0.0);
        let time_embeddings = self.time_embedding.forward(t_emb); // [B, inner]

        // Text embedding -> [B, inner].
        let pe = cond.proj_embedding.clone();
        let [pb, pd] = pe.dims();
        if pb != b || pd != cfg.embedding_proj_dim() {
            return Err(PriorError::shape(
                "proj_embedding",
                format!("[{b}, {}]", cfg.embedding_proj_dim()),
                &[pb, pd],
            ));
        }
        let pe = match &self.embedding_proj_norm {
            Some(n) => n.forward(pe),
            None => pe,
        };
        let proj_embeddings = self.embedding_proj.forward(pe); // [B, inner]

        // Token states -> [B, T, inner].
        let mut tokens: Vec<Tensor<3>> = Vec::with_capacity(5);
        let mut text_len = 0;
        match (
            &self.encoder_hidden_states_proj,
            &cond.encoder_hidden_states,
        ) {
            (Some(proj), Some(ehs)) => {
                let [eb, t, ed] = ehs.dims();
                if eb != b || ed != cfg.embedding_dim {
                    return Err(PriorError::shape(
                        "encoder_hidden_states",
                        format!("[{b}, T, {}]", cfg.embedding_dim),
                        &[eb, t, ed],
                    ));
                }
                text_len = t;
                tokens.push(proj.forward(ehs.clone()));
            }
            (Some(_), None) => {
                return Err(PriorError::InvalidArgument {
                    name: "encoder_hidden_states",
                    message:
                        "this prior (encoder_hid_proj_type = linear) needs the text token states"
                            .into(),
                });
            }
            // diffusers would concatenate unprojected states; only meaningful when widths agree.
            (None, Some(ehs)) => {
                let [eb, t, ed] = ehs.dims();
                if eb != b || ed != inner {
                    return Err(PriorError::shape(
                        "encoder_hidden_states",
                        format!("[{b}, T, {inner}]"),
                        &[eb, t, ed],
                    ));
                }
                text_len = t;
                tokens.push(ehs.clone());
            }
            (None, None) => {}
        }
        tokens.push(proj_embeddings.unsqueeze_dim(1)); // [B, 1, inner]
        tokens.push(time_embeddings.unsqueeze_dim(1)); // [B, 1, inner]
        tokens.push(self.proj_in.forward(hidden_states).unsqueeze_dim(1)); // [B, 1, inner]
        if let Some(prd) = &self.prd_embedding {
            tokens.push(prd.val().expand([b, 1, inner])); // [B, 1, inner]
        }
        let h = Tensor::cat(tokens, 1); // [B, S, inner]
        let seq = h.dims()[1];
        // Tokens before x_t's successor: text tokens + text embedding + time embedding.
        let additional_len = text_len + 2;

        // Positional embedding [1, P, inner]; zero-padded around the text like diffusers when short.
        let mut pos = self.positional_embedding.val();
        let p = pos.dims()[1];
        if p < seq {
            let back = usize::from(self.prd_embedding.is_some());
            if p + additional_len + back != seq {
                return Err(PriorError::shape(
                    "positional_embedding",
                    format!("[1, {seq}, {inner}]"),
                    &[1, p, inner],
                ));
            }
            pos = Tensor::cat(
                vec![
                    Tensor::zeros([1, additional_len, inner], &device),
                    pos,
                    Tensor::zeros([1, back, inner], &device),
                ],
                1,
            );
        } else if p > seq {
            return Err(PriorError::shape(
                "encoder_hidden_states",
                format!(
                    "{} text tokens (positional embedding length {p})",
                    p - (seq - text_len)
                ),
                &[b, text_len, cfg.embedding_dim],
            ));
        }
        let mut h = h + pos;

        // Attention bias [B, 1, S, S].
        let bias = match &cond.attention_mask {
            None => None,
            Some(mask) => {
                let [mb, ml] = mask.dims();
                if mb != b || ml + cfg.additional_embeddings != seq || seq != cfg.seq_len() {
                    return Err(PriorError::shape(
                        "attention_mask",
                        format!(
                            "[{b}, {}]",
                            cfg.seq_len().saturating_sub(cfg.additional_embeddings)
                        ),
                        &[mb, ml],
                    ));
                }
                let pad = (mask.clone().float().neg() + 1.0) * PRIOR_MASK_VALUE; // [B, T]
                let pad = Tensor::cat(
                    vec![pad, Tensor::zeros([b, cfg.additional_embeddings], &device)],
                    1,
                ); // [B, S]
                let causal = causal_mask(seq, &device); // [S, S]
                Some((pad.unsqueeze_dim::<3>(1) + causal.unsqueeze::<3>()).unsqueeze_dim::<4>(1))
            }
        };

        if let Some(n) = &self.norm_in {
            h = n.forward(h);
        }
        for block in &self.transformer_blocks {
            h = block.forward(h, bias.clone());
        }
        // LayerNorm acts per token, so selecting the output token first is equivalent.
        let out_index = if self.prd_embedding.is_some() {
            seq - 1
        } else {
            additional_len
        };
        let last = h.narrow(1, out_index, 1).reshape([b, inner]); // [B, inner]
        let last = self.norm_out.forward(last);
        Ok(self.proj_to_clip_embeddings.forward(last)) // [B, clip]
    }

    /// `x * clip_std + clip_mean`: from the prior's normalised space to CLIP image embeddings.
    /// `[B, clip] -> [B, clip]`
    pub fn post_process_latents(&self, latents: Tensor<2>) -> Tensor<2> {
        latents * self.clip_std.val() + self.clip_mean.val()
    }

    /// `(x - clip_mean) / clip_std`: the inverse of [`Self::post_process_latents`] (training
    /// targets are CLIP image embeddings in this space).
    pub fn normalize_embeddings(&self, image_embeddings: Tensor<2>) -> Tensor<2> {
        (image_embeddings - self.clip_mean.val()) / self.clip_std.val()
    }
}

/// diffusers' `causal_attention_mask`: `full([S, S], -10000).triu_(1)`.
pub fn causal_mask(seq: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; seq * seq];
    for i in 0..seq {
        for j in (i + 1)..seq {
            v[i * seq + j] = PRIOR_MASK_VALUE;
        }
    }
    Tensor::from_data(TensorData::new(v, [seq, seq]), device)
}
