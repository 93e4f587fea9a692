//! UNet blocks of diffusers `models/unets/unet_2d_blocks.py`, shared by the decoder
//! (`UNet2DConditionModel`) and the super-resolution `UNet2DModel` of `unclip-upsampler`:
//!
//! - [`DownBlock`] implements `ResnetDownsampleBlock2D` (no attention) and `SimpleCrossAttnDownBlock2D`
//!   (an [`AddedKvAttention`] after every resnet); the downsampler is a resnet with `down=True`.
//! - [`MidBlock`] implements `UNetMidBlock2DSimpleCrossAttn` (resnet, then attention + resnet per layer)
//!   and `UNetMidBlock2D` with `add_attention=False` (resnet, resnet).
//! - [`UpBlock`] implements `ResnetUpsampleBlock2D` / `SimpleCrossAttnUpBlock2D`: each resnet takes the
//!   previous output concatenated with a skip tensor; the upsampler is a resnet with `up=True`.
//!
//! Attention-free blocks hold empty `attentions` vectors, so one struct serves both types
//! and the module paths equal diffusers' state-dict keys (`resnets.0`, `attentions.0`,
//! `downsamplers.0`, `upsamplers.0`).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use unclip_nn::Activation;

use crate::attention::{AddedKvAttention, CrossContext};
use crate::config::TimeScaleShift;
use crate::resnet::{Resample, ResnetBlock2D, ResnetConfig};

/// Resnet settings common to every block of a UNet.
#[derive(Debug, Clone)]
pub struct BlockSettings {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    pub skip_time_act: bool,
    pub output_scale_factor: f64,
}

impl BlockSettings {
    pub fn resnet(&self, c_in: usize, c_out: usize, resample: Resample) -> ResnetConfig {
        ResnetConfig {
            in_channels: c_in,
            out_channels: c_out,
            temb_channels: self.temb_channels,
            groups: self.groups,
            eps: self.eps,
            act: self.act,
            time_scale_shift: self.time_scale_shift.clone(),
            skip_time_act: self.skip_time_act,
            output_scale_factor: self.output_scale_factor,
            resample,
        }
    }
}

/// Settings of the added-KV attention layers of the `SimpleCrossAttn*` blocks.
#[derive(Debug, Clone, Copy)]
pub struct AttnSettings {
    pub head_dim: usize,
    pub context_dim: usize,
    pub only_cross_attention: bool,
}

fn attention(c: usize, s: &BlockSettings, a: &AttnSettings, device: &Device) -> AddedKvAttention {
    AddedKvAttention::new(
        c,
        a.head_dim,
        a.context_dim,
        s.groups,
        a.only_cross_attention,
        device,
    )
}

fn apply_attention(
    attentions: &[AddedKvAttention],
    i: usize,
    h: Tensor<4>,
    ctx: Option<&CrossContext>,
) -> Tensor<4> {
    match (attentions.get(i), ctx) {
        (Some(attn), Some(ctx)) => attn.forward(h, ctx),
        _ => h,
    }
}

/// `ResnetDownsampleBlock2D` / `SimpleCrossAttnDownBlock2D`.
#[derive(Module, Debug)]
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    /// Empty for `ResnetDownsampleBlock2D`.
    pub attentions: Vec<AddedKvAttention>,
    /// Empty for the last down block.
    pub downsamplers: Vec<ResnetBlock2D>,
}

impl DownBlock {
    pub fn new(
        c_in: usize,
        c_out: usize,
        num_layers: usize,
        add_downsample: bool,
        s: &BlockSettings,
        attn: Option<&AttnSettings>,
        device: &Device,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                ResnetBlock2D::new(
                    &s.resnet(if i == 0 { c_in } else { c_out }, c_out, Resample::None),
                    device,
                )
            })
            .collect();
        let attentions = match attn {
            Some(a) => (0..num_layers)
                .map(|_| attention(c_out, s, a, device))
                .collect(),
            None => Vec::new(),
        };
        let downsamplers = if add_downsample {
            vec![ResnetBlock2D::new(
                &s.resnet(c_out, c_out, Resample::Down),
                device,
            )]
        } else {
            Vec::new()
        };
        DownBlock {
            resnets,
            attentions,
            downsamplers,
        }
    }

    /// `h [B, Cin, H, W]` -> (`[B, Cout, H', W']`, the skip tensors it adds, in order).
    pub fn forward(
        &self,
        mut h: Tensor<4>,
        temb: &Tensor<2>,
        ctx: Option<&CrossContext>,
    ) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, temb);
            h = apply_attention(&self.attentions, i, h, ctx);
            skips.push(h.clone());
        }
        for ds in &self.downsamplers {
            h = ds.forward(h, temb);
        }
        if !self.downsamplers.is_empty() {
            skips.push(h.clone());
        }
        (h, skips)
    }
}

/// `UNetMidBlock2DSimpleCrossAttn` / `UNetMidBlock2D` (without attention).
#[derive(Module, Debug)]
pub struct MidBlock {
    /// `num_layers + 1` resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// `num_layers` attentions, or none.
    pub attentions: Vec<AddedKvAttention>,
}

impl MidBlock {
    /// `s.output_scale_factor` is diffusers' `mid_block_scale_factor` here.
    pub fn new(
        channels: usize,
        num_layers: usize,
        s: &BlockSettings,
        attn: Option<&AttnSettings>,
        device: &Device,
    ) -> Self {
        let resnets = (0..=num_layers)
            .map(|_| ResnetBlock2D::new(&s.resnet(channels, channels, Resample::None), device))
            .collect();
        let attentions = match attn {
            Some(a) => (0..num_layers)
                .map(|_| attention(channels, s, a, device))
                .collect(),
            None => Vec::new(),
        };
        MidBlock {
            resnets,
            attentions,
        }
    }

    /// `[B, C, H, W] -> [B, C, H, W]`.
    pub fn forward(
        &self,
        mut h: Tensor<4>,
        temb: &Tensor<2>,
        ctx: Option<&CrossContext>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            if i > 0 {
                h = apply_attention(&self.attentions, i - 1, h, ctx);
            }
            h = resnet.forward(h, temb);
        }
        h
    }
}

/// `ResnetUpsampleBlock2D` / `SimpleCrossAttnUpBlock2D`.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<AddedKvAttention>,
    /// Empty for the last up block.
    pub upsamplers: Vec<ResnetBlock2D>,
}

impl UpBlock {
    /// `c_in`: channels of the deepest skip this block consumes (diffusers `in_channels`),
    /// `c_prev`: channels of the incoming hidden state, `c_out`: this block's width.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c_in: usize,
        c_prev: usize,
        c_out: usize,
        num_layers: usize,
        add_upsample: bool,
        s: &BlockSettings,
        attn: Option<&AttnSettings>,
        device: &Device,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                let skip = if i == num_layers - 1 { c_in } else { c_out };
                let prev = if i == 0 { c_prev } else { c_out };
                ResnetBlock2D::new(&s.resnet(prev + skip, c_out, Resample::None), device)
            })
            .collect();
        let attentions = match attn {
            Some(a) => (0..num_layers)
                .map(|_| attention(c_out, s, a, device))
                .collect(),
            None => Vec::new(),
        };
        let upsamplers = if add_upsample {
            vec![ResnetBlock2D::new(
                &s.resnet(c_out, c_out, Resample::Up),
                device,
            )]
        } else {
            Vec::new()
        };
        UpBlock {
            resnets,
            attentions,
            upsamplers,
        }
    }

    /// `h [B, Cprev, H, W]`, popping one skip per resnet from the end of `skips` ->
    /// `[B, Cout, H', W']` (H' = 2H when upsampling).
    pub fn forward(
        &self,
        mut h: Tensor<4>,
        skips: &mut Vec<Tensor<4>>,
        temb: &Tensor<2>,
        ctx: Option<&CrossContext>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            if let Some(skip) = skips.pop() {
                h = Tensor::cat(vec![h, skip], 1);
            }
            h = resnet.forward(h, temb);
            h = apply_attention(&self.attentions, i, h, ctx);
        }
        for us in &self.upsamplers {
            h = us.forward(h, temb);
        }
        h
    }
}
