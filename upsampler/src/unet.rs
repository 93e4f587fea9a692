//! The unCLIP super-resolution UNet: diffusers `models/unets/unet_2d.py` `UNet2DModel` in Karlo's
//! configuration (`ResnetDownsampleBlock2D` / `ResnetUpsampleBlock2D`, `UNetMidBlock2D` without
//! attention, positional time embedding added in every resnet, no class conditioning). Its input
//! is the noisy high-resolution image concatenated with the upsampled low-resolution image
//! (`in_channels = 2 * out_channels`). The blocks are `unclip_decoder::blocks`.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use unclip_decoder::blocks::{BlockSettings, DownBlock, MidBlock, UpBlock};
use unclip_decoder::embeddings::{TimestepEmbedding, timestep_proj};
use unclip_decoder::resnet::conv2d;
use unclip_decoder::unet::broadcast_timesteps;
use unclip_decoder::{DECODER_KEYMAP, DecoderError};
use unclip_nn::{Activation, Checkpoint, GroupNorm};

use crate::config::UNet2DConfig;

/// diffusers `UNet2DModel` (the subset unCLIP's super-resolution stage uses).
#[derive(Module, Debug)]
pub struct UNet2DModel {
    /// `[C0, in, 3, 3]`
    pub conv_in: Conv2d,
    /// linear, SiLU, linear (diffusers does not pass `act_fn` here).
    pub time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: Option<MidBlock>,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    /// `[out, C0, 3, 3]`
    pub conv_out: Conv2d,
    #[module(skip)]
    pub config: UNet2DConfig,
}

impl UNet2DModel {
    /// A randomly initialised model of this config (validated first).
    pub fn new(config: &UNet2DConfig, device: &Device) -> Result<Self, DecoderError> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let t_dim = config.time_embed_dim();
        let groups = config.groups()?;
        let settings = BlockSettings {
            temb_channels: t_dim,
            groups,
            eps: config.norm_eps,
            act: config.activation()?,
            time_scale_shift: config.resnet_time_scale_shift.clone(),
            skip_time_act: false,
            output_scale_factor: 1.0,
        };
        let mut down_blocks = Vec::with_capacity(n);
        let mut c_out = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let c_in = c_out;
            c_out = c;
            down_blocks.push(DownBlock::new(
                c_in,
                c_out,
                config.layers_per_block,
                i + 1 < n,
                &settings,
                None,
                device,
            ));
        }
        let mid_block = config.mid_block_type.as_ref().map(|_| {
            let s = BlockSettings {
                output_scale_factor: config.mid_block_scale_factor,
                ..settings.clone()
            };
            MidBlock::new(ch[n - 1], 1, &s, None, device)
        });
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut c_out = rev[0];
        for i in 0..n {
            let c_prev = c_out;
            c_out = rev[i];
            let c_in = rev[(i + 1).min(n - 1)];
            up_blocks.push(UpBlock::new(
                c_in,
                c_prev,
                c_out,
                config.layers_per_block + 1,
                i + 1 < n,
                &settings,
                None,
                device,
            ));
        }
        Ok(UNet2DModel {
            conv_in: conv2d(config.in_channels, ch[0], 3, device),
            time_embedding: TimestepEmbedding::new(
                ch[0],
                t_dim,
                t_dim,
                Activation::Silu,
                None,
                device,
            ),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(groups, ch[0], config.norm_eps, device),
            conv_out: conv2d(ch[0], config.out_channels, 3, device),
            config: config.clone(),
        })
    }

    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.{safetensors,bin}` (Karlo's
    /// `super_res_first/` or `super_res_last/`) strictly: a missing, unused or mis-shaped tensor
    /// is an error naming the key.
    ///
    /// ```no_run
    /// use burn::tensor::{Device, Tensor};
    /// use unclip_upsampler::UNet2DModel;
    ///
    /// let device = Device::default();
    /// let unet = UNet2DModel::from_pretrained("karlo-v1-alpha/super_res_first", &device)?;
    /// // noisy 256x256 image (3 channels) + the upsampled 64x64 decoder output (3 channels)
    /// let x = Tensor::<4>::zeros([1, 6, 256, 256], &device);
    /// let eps = unet.forward(x, Tensor::<1>::from_floats([999.0], &device))?; // [1, 3, 256, 256]
    /// # Ok::<(), unclip_decoder::DecoderError>(())
    /// ```
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, DecoderError> {
        let dir = dir.as_ref();
        let config = UNet2DConfig::from_file(dir.join("config.json"))?;
        let model = Self::new(&config, device)?;
        let ckpt =
            Checkpoint::open_dir(dir, "diffusion_pytorch_model")?.remap(&SUPER_RES_KEYMAP)?;
        Ok(ckpt.load_into(model)?)
    }

    /// `sample [B, in, H, W]` (H, W divisible by 2^(blocks - 1)), `timesteps [1]` or `[B]` ->
    /// `[B, out, H, W]`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: Tensor<1>,
    ) -> Result<Tensor<4>, DecoderError> {
        let cfg = &self.config;
        let [b, c, h, w] = sample.dims();
        if c != cfg.in_channels {
            return Err(DecoderError::InputShape {
                name: "sample".into(),
                expected: format!("[B, {}, H, W]", cfg.in_channels),
                got: sample.dims().to_vec(),
            });
        }
        let factor = 1usize
            << self
                .up_blocks
                .iter()
                .filter(|u| !u.upsamplers.is_empty())
                .count();
        if h == 0 || w == 0 || h % factor != 0 || w % factor != 0 {
            return Err(DecoderError::InputShape {
                name: "sample".into(),
                expected: format!("spatial size divisible by {factor}"),
                got: sample.dims().to_vec(),
            });
        }
        let timesteps = broadcast_timesteps(timesteps, b)?;
        let t_emb = timestep_proj(
            timesteps,
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        );
        let emb = self.time_embedding.forward(t_emb); // [B, T]
        let sample = if cfg.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };
        let mut hs = self.conv_in.forward(sample); // [B, C0, H, W]
        let mut skips = vec![hs.clone()];
        for block in &self.down_blocks {
            let (h2, s) = block.forward(hs, &emb, None);
            hs = h2;
            skips.extend(s);
        }
        if let Some(mid) = &self.mid_block {
            hs = mid.forward(hs, &emb, None);
        }
        for block in &self.up_blocks {
            hs = block.forward(hs, &mut skips, &emb, None);
        }
        let hs = Activation::Silu.forward(self.conv_norm_out.forward(hs));
        Ok(self.conv_out.forward(hs))
    }
}

/// Karlo `super_res_first/` / `super_res_last/` key table: the keys are the module paths (the
/// decoder's table applies; these checkpoints have no attention, so it changes nothing).
pub const SUPER_RES_KEYMAP: unclip_nn::KeyMap = DECODER_KEYMAP;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use burn::store::ModuleSnapshot;
    use burn::tensor::Device;
    use unclip_nn::Checkpoint;

    use super::*;

    /// Every key of the fixture checkpoints maps onto a parameter of the same shape, and every
    /// parameter has a key.
    #[test]
    fn super_res_keymap_covers_fixture_checkpoints() {
        for name in ["super_res_first", "super_res_last"] {
            let dir = unclip_testkit::fixture_dir("unclip_tiny").join(name);
            let cfg = UNet2DConfig::from_file(dir.join("config.json")).expect("config");
            let model = UNet2DModel::new(&cfg, &Device::flex()).expect("model");
            let ckpt = Checkpoint::open_dir(&dir, "diffusion_pytorch_model")
                .expect("checkpoint")
                .remap(&SUPER_RES_KEYMAP)
                .expect("remap");
            let ck: BTreeSet<String> = ckpt.keys().into_iter().map(str::to_string).collect();
            let params = model.collect(None, None, false);
            let mk: BTreeSet<String> = params.iter().map(|t| t.name.clone()).collect();
            assert_eq!(
                ck.difference(&mk).count(),
                0,
                "{name}: unmapped keys {:?}",
                ck.difference(&mk).collect::<Vec<_>>()
            );
            assert_eq!(
                mk.difference(&ck).count(),
                0,
                "{name}: missing keys {:?}",
                mk.difference(&ck).collect::<Vec<_>>()
            );
            for t in params {
                assert_eq!(
                    ckpt.shape(&t.name),
                    Some(t.shape.to_vec()),
                    "{name}: shape of {}",
                    t.name
                );
            }
        }
    }
}
