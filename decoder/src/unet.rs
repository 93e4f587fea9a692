//! The unCLIP decoder: diffusers `models/unets/unet_2d_condition.py` `UNet2DConditionModel` in
//! the configuration Karlo uses (`ResnetDownsampleBlock2D` / `SimpleCrossAttn*` blocks,
//! `UNetMidBlock2DSimpleCrossAttn`, `class_embed_type = "identity"`: the text_proj's additive
//! CLIP time embedding is added to the time embedding, `resnet_time_scale_shift =
//! "scale_shift"`, learned variance: `out_channels = 2 * in_channels`).

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Bool, Device, Tensor};
use unclip_nn::{Activation, Checkpoint, GroupNorm};

use crate::DecoderError;
use crate::attention::CrossContext;
use crate::blocks::{AttnSettings, BlockSettings, DownBlock, MidBlock, UpBlock};
use crate::config::{ClassEmbedType, DownBlockType, UNet2DConditionConfig, UpBlockType};
use crate::embeddings::{TimestepEmbedding, timestep_proj};
use crate::load::DECODER_KEYMAP;
use crate::resnet::conv2d;

/// The additive value diffusers' `UNet2DConditionModel` puts on masked context tokens.
pub const ATTENTION_MASK_BIAS: f32 = -10000.0;

/// diffusers `UNet2DConditionModel` (the subset unCLIP decoders use; see [`UNet2DConditionConfig`]).
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// `[C0, in, k, k]`
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: Option<MidBlock>,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    /// `[out, C0, k, k]`
    pub conv_out: Conv2d,
    #[module(skip)]
    pub config: UNet2DConditionConfig,
    #[module(skip)]
    pub act: Activation,
    #[module(skip)]
    pub time_embed_act: Option<Activation>,
}

impl UNet2DConditionModel {
    /// A randomly initialised model of this config (validated first).
    pub fn new(config: &UNet2DConditionConfig, device: &Device) -> Result<Self, DecoderError> {
        let layout = config.layout()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let t_dim = layout.time_embed_dim;
        let settings = BlockSettings {
            temb_channels: t_dim,
            groups: layout.norm_num_groups,
            eps: config.norm_eps,
            act: layout.act,
            time_scale_shift: config.resnet_time_scale_shift.clone(),
            skip_time_act: config.resnet_skip_time_act,
            output_scale_factor: config.resnet_out_scale_factor,
        };
        let mut down_blocks = Vec::with_capacity(n);
        let mut c_out = ch[0];
        for (i, ty) in config.down_block_types.iter().enumerate() {
            let c_in = c_out;
            c_out = ch[i];
            let attn = match ty {
                DownBlockType::SimpleCrossAttnDownBlock2D => Some(AttnSettings {
                    head_dim: layout.attention_head_dim[i],
                    context_dim: layout.cross_attention_dim[i],
                    only_cross_attention: layout.only_cross_attention[i],
                }),
                _ => None,
            };
            down_blocks.push(DownBlock::new(
                c_in,
                c_out,
                layout.layers_per_block[i],
                i + 1 < n,
                &settings,
                attn.as_ref(),
                device,
            ));
        }
        let mid_block = config.mid_block_type.as_ref().map(|_| {
            let s = BlockSettings {
                output_scale_factor: config.mid_block_scale_factor,
                ..settings.clone()
            };
            let a = AttnSettings {
                head_dim: layout.attention_head_dim[n - 1],
                context_dim: layout.cross_attention_dim[n - 1],
                only_cross_attention: layout.mid_only_cross_attention,
            };
            MidBlock::new(ch[n - 1], 1, &s, Some(&a), device)
        });
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let rev_layers: Vec<usize> = layout.layers_per_block.iter().rev().copied().collect();
        let rev_xdim: Vec<usize> = layout.cross_attention_dim.iter().rev().copied().collect();
        let rev_only: Vec<bool> = layout.only_cross_attention.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut c_out = rev[0];
        for (i, ty) in config.up_block_types.iter().enumerate() {
            let c_prev = c_out;
            c_out = rev[i];
            let c_in = rev[(i + 1).min(n - 1)];
            // diffusers indexes the *non-reversed* attention_head_dim list with the up-block
            // index (cross_attention_dim and only_cross_attention are reversed).
            let attn = match ty {
                UpBlockType::SimpleCrossAttnUpBlock2D => Some(AttnSettings {
                    head_dim: layout.attention_head_dim[i],
                    context_dim: rev_xdim[i],
                    only_cross_attention: rev_only[i],
                }),
                _ => None,
            };
            up_blocks.push(UpBlock::new(
                c_in,
                c_prev,
                c_out,
                rev_layers[i] + 1,
                i + 1 < n,
                &settings,
                attn.as_ref(),
                device,
            ));
        }
        Ok(UNet2DConditionModel {
            conv_in: conv2d(config.in_channels, ch[0], config.conv_in_kernel, device),
            time_embedding: TimestepEmbedding::new(
                ch[0],
                t_dim,
                t_dim,
                layout.act,
                layout.timestep_post_act,
                device,
            ),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(layout.norm_num_groups, ch[0], config.norm_eps, device),
            conv_out: conv2d(ch[0], config.out_channels, config.conv_out_kernel, device),
            config: config.clone(),
            act: layout.act,
            time_embed_act: layout.time_embed_act,
        })
    }

    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.{safetensors,bin}` (the diffusers
    /// layout of Karlo's `decoder/` folder), strictly: a missing, unused or mis-shaped tensor is a
    /// [`DecoderError::Load`] naming the key.
    ///
    /// ```no_run
    /// use burn::tensor::{Device, Tensor};
    /// use unclip_decoder::UNet2DConditionModel;
    ///
    /// let device = Device::default();
    /// let unet = UNet2DConditionModel::from_pretrained("karlo-v1-alpha/decoder", &device)?;
    /// let b = 2;
    /// let cfg = &unet.config;
    /// let sample = Tensor::<4>::zeros([b, cfg.in_channels, 64, 64], &device);
    /// let t = Tensor::<1>::from_floats([999.0], &device);
    /// let ctx = Tensor::<3>::zeros([b, 81, 1536], &device);
    /// let class_labels = Tensor::<2>::zeros([b, 1536 * 4], &device);
    /// let out = unet.forward(sample, t, ctx, Some(class_labels), None)?; // [B, 6, 64, 64]
    /// # Ok::<(), unclip_decoder::DecoderError>(())
    /// ```
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, DecoderError> {
        let dir = dir.as_ref();
        let config = UNet2DConditionConfig::from_file(dir.join("config.json"))?;
        let model = Self::new(&config, device)?;
        let ckpt = Checkpoint::open_dir(dir, "diffusion_pytorch_model")?.remap(&DECODER_KEYMAP)?;
        Ok(ckpt.load_into(model)?)
    }

    /// Channels of the noisy sample the model takes.
    pub fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    /// Width of the time embedding (= the width `class_labels` must have).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding.linear_2.d_out()
    }

    /// One denoising call.
    ///
    /// - `sample [B, Cin, H, W]` (H, W divisible by 2^(blocks - 1))
    /// - `timesteps [B]` or `[1]` (broadcast), as floats
    /// - `encoder_hidden_states [B, L, Dc]` (text_proj output)
    /// - `class_labels [B, time_embed_dim]` (text_proj's additive CLIP time embedding; required
    ///   with `class_embed_type = "identity"`)
    /// - `attention_mask [B, L]`, true = attend (converted to a -10000 bias for false)
    ///
    /// Returns `[B, Cout, H, W]`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: Tensor<1>,
        encoder_hidden_states: Tensor<3>,
        class_labels: Option<Tensor<2>>,
        attention_mask: Option<Tensor<2, Bool>>,
    ) -> Result<Tensor<4>, DecoderError> {
        let [b, c, h, w] = sample.dims();
        let cfg = &self.config;
        if c != cfg.in_channels {
            return Err(DecoderError::shape(
                "sample",
                format!("[B, {}, H, W]", cfg.in_channels),
                &sample.dims(),
            ));
        }
        let factor = 1usize
            << (self
                .up_blocks
                .iter()
                .filter(|u| !u.upsamplers.is_empty())
                .count());
        if h % factor != 0 || w % factor != 0 || h == 0 || w == 0 {
            return Err(DecoderError::shape(
                "sample",
                format!("spatial size divisible by {factor} (the number of resolution changes)"),
                &sample.dims(),
            ));
        }
        let [eb, el, ed] = encoder_hidden_states.dims();
        if eb != b {
            return Err(DecoderError::shape(
                "encoder_hidden_states",
                format!("[{b}, L, D] (batch of sample)"),
                &encoder_hidden_states.dims(),
            ));
        }
        let xdim = self.context_dim();
        if let Some(d) = xdim
            && d != ed
        {
            return Err(DecoderError::shape(
                "encoder_hidden_states",
                format!("[{b}, L, {d}] (cross_attention_dim)"),
                &encoder_hidden_states.dims(),
            ));
        }
        let timesteps = broadcast_timesteps(timesteps, b)?;
        let t_emb = timestep_proj(
            timesteps,
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        );
        let mut emb = self.time_embedding.forward(t_emb); // [B, T]
        let t_dim = emb.dims()[1];
        match (&cfg.class_embed_type, class_labels) {
            (Some(ClassEmbedType::Identity), Some(cl)) => {
                if cl.dims() != [b, t_dim] {
                    return Err(DecoderError::shape(
                        "class_labels",
                        format!("[{b}, {t_dim}]"),
                        &cl.dims(),
                    ));
                }
                emb = emb + cl;
            }
            (Some(_), None) => {
                return Err(DecoderError::InvalidArgument {
                    name: "class_labels".into(),
                    message: "required: the config sets class_embed_type".into(),
                });
            }
            (None, Some(_)) => {
                return Err(DecoderError::InvalidArgument {
                    name: "class_labels".into(),
                    message: "given, but the config has no class_embed_type".into(),
                });
            }
            _ => {}
        }
        if let Some(a) = self.time_embed_act {
            emb = a.forward(emb);
        }
        let bias = match attention_mask {
            Some(m) => {
                if m.dims() != [b, el] {
                    return Err(DecoderError::shape(
                        "attention_mask",
                        format!("[{b}, {el}]"),
                        &m.dims(),
                    ));
                }
                Some((m.float().neg() + 1.0) * ATTENTION_MASK_BIAS) // [B, L]
            }
            None => None,
        };
        let ctx = CrossContext {
            hidden_states: encoder_hidden_states,
            bias,
        };
        let sample = if cfg.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };
        let mut hs = self.conv_in.forward(sample); // [B, C0, H, W]
        let mut skips = vec![hs.clone()];
        for block in &self.down_blocks {
            let (h2, s) = block.forward(hs, &emb, Some(&ctx));
            hs = h2;
            skips.extend(s);
        }
        if let Some(mid) = &self.mid_block {
            hs = mid.forward(hs, &emb, Some(&ctx));
        }
        for block in &self.up_blocks {
            hs = block.forward(hs, &mut skips, &emb, Some(&ctx));
        }
        let hs = self.act.forward(self.conv_norm_out.forward(hs));
        Ok(self.conv_out.forward(hs))
    }

    /// The context width the attention layers expect (`None` without attention layers).
    pub fn context_dim(&self) -> Option<usize> {
        self.down_blocks
            .iter()
            .flat_map(|b| b.attentions.iter())
            .chain(self.mid_block.iter().flat_map(|m| m.attentions.iter()))
            .map(|a| a.add_k_proj.d_in())
            .next()
    }
}

/// `[1]` or `[B]` -> `[B]`.
pub fn broadcast_timesteps(t: Tensor<1>, b: usize) -> Result<Tensor<1>, DecoderError> {
    let n = t.dims()[0];
    if n == b {
        Ok(t)
    } else if n == 1 {
        Ok(t.expand([b]))
    } else {
        Err(DecoderError::shape(
            "timesteps",
            format!("[1] or [{b}]"),
            &t.dims(),
        ))
    }
}
