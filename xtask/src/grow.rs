//! Growing a trained decoder (`xtask grow-decoder`): by one outer level at twice its resolution
//! (`--mode outer-level`, below), or by cross-attention at its top level (`--mode
//! top-attention`, [`add_top_attention`]).
//!
//! The shapes world's 32x32 decoder draws small shapes (6 pixels) as round dots; at 64x64 they
//! are 11-12 pixels, the size at which the 32x32 decoder already draws large shapes right. A
//! 64x64 decoder trained from scratch costs days of this CPU, and running the 32x32 weights at
//! 64x64 (tried first) moves the attention to 32x32 (1024 tokens, 5-6x the step cost). Growing
//! instead keeps the trained network as the *inner* levels, still seeing a 32x32 world, and adds
//! a thin outer level in front of it (progressive growing, as in ProGAN, applied to a UNet):
//!
//! - `block_out_channels` `[c0, ...]` -> `[c0, c0, ...]`, a `ResnetDownsampleBlock2D` prepended
//!   and a `ResnetUpsampleBlock2D` appended, `sample_size` doubled. The time embedding
//!   (`4 * c0`), every old block and the mid block keep their shapes and weights; `conv_in`,
//!   `conv_norm_out` and `conv_out` move to the outer level with their weights.
//! - New modules start as a pass-through: every new resnet's `conv2` is zero (so its residual
//!   branch is zero), the new outer down level is then the identity followed by 2x average
//!   pooling, the old top up block's new upsampler a 2x nearest upsampling, and the new outer up
//!   level's resnets (input `[upsampled | skip]`, `2 c0` channels) pass the upsampled half
//!   through their 1x1 shortcut `[I | 0]`.
//!
//! So the grown model computes `up2(old(avgpool(conv_in(x))))` followed by the old output
//! head: with 1x1 `conv_in`/`conv_out` kernels exactly `up2(old(avgpool(x)))` (tested below);
//! with the 3x3 kernels the decoders use, approximately (the kernels see half the footprint).
//! Training then teaches the outer level the 64x64 detail.
//!
//! `--mode top-attention` keeps the resolution and gives the top level (where the shapes world's
//! small shapes are drawn: 6 pixels at 32x32, 3 at the next level) what only the inner levels
//! had: attention to the text tokens and the four image-embedding tokens, so the conditioning
//! can vary per pixel instead of reaching the top level only as the time embedding's per-channel
//! scale and shift. The new attentions' output projections start at zero (the model is
//! unchanged until trained).

use std::path::PathBuf;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, TensorData};
use unclip_decoder::config::{DownBlockType, OneOrMany, SampleSize, UpBlockType};
use unclip_decoder::{UNet2DConditionConfig, UNet2DConditionModel};
use unclip_nn::Linear;

use crate::shapes::Error;

/// The config of `config` grown by one outer level (see the module docs).
pub fn grown_config(config: &UNet2DConditionConfig) -> Result<UNet2DConditionConfig, Error> {
    let c0 = *config
        .block_out_channels
        .first()
        .ok_or("the decoder config has no block_out_channels")?;
    let mut cfg = config.clone();
    cfg.block_out_channels.insert(0, c0);
    cfg.down_block_types
        .insert(0, DownBlockType::ResnetDownsampleBlock2D);
    cfg.up_block_types.push(UpBlockType::ResnetUpsampleBlock2D);
    // Per-block lists are indexed like the down blocks (the up blocks read them reversed).
    fn prepend<T: Clone>(v: &mut OneOrMany<T>) {
        if let OneOrMany::Many(list) = v
            && let Some(first) = list.first().cloned()
        {
            list.insert(0, first);
        }
    }
    prepend(&mut cfg.layers_per_block);
    prepend(&mut cfg.attention_head_dim);
    prepend(&mut cfg.cross_attention_dim);
    prepend(&mut cfg.only_cross_attention);
    cfg.sample_size = match config.sample_size {
        Some(SampleSize::Square(side)) => Some(SampleSize::Square(2 * side)),
        Some(SampleSize::Rect([h, w])) => Some(SampleSize::Rect([2 * h, 2 * w])),
        None => return Err("the decoder config has no sample_size to double".into()),
    };
    Ok(cfg)
}

/// `unet` grown by one outer level at twice its resolution, starting as the pass-through the
/// module docs describe.
pub fn grow_unet(
    unet: UNet2DConditionModel,
    device: &Device,
) -> Result<UNet2DConditionModel, Error> {
    let cfg = grown_config(&unet.config)?;
    let mut grown = UNet2DConditionModel::new(&cfg, device)?;
    grown.conv_in = unet.conv_in;
    grown.time_embedding = unet.time_embedding;
    grown.mid_block = unet.mid_block;
    grown.conv_norm_out = unet.conv_norm_out;
    grown.conv_out = unet.conv_out;
    // Down: the new outer block, then the old ones.
    grown.down_blocks.truncate(1);
    grown.down_blocks.extend(unet.down_blocks);
    let outer_down = &mut grown.down_blocks[0];
    for r in outer_down
        .resnets
        .iter_mut()
        .chain(outer_down.downsamplers.iter_mut())
    {
        zero_conv(&mut r.conv2);
    }
    // Up: the old blocks; the old top one gets the new upsampler; then the new outer block.
    let mut old_up = unet.up_blocks;
    let top = old_up.pop().ok_or("the decoder has no up blocks")?;
    // The grown model's up blocks end with the old top level (now with an upsampler) and the
    // new outer level.
    let mut new_up = std::mem::take(&mut grown.up_blocks);
    let mut outer = new_up.pop().ok_or("the grown decoder has no up blocks")?;
    let mut grown_top = new_up
        .pop()
        .ok_or("the grown decoder has too few up blocks")?;
    grown_top.resnets = top.resnets;
    grown_top.attentions = top.attentions;
    for r in grown_top.upsamplers.iter_mut() {
        zero_conv(&mut r.conv2);
    }
    for r in outer.resnets.iter_mut() {
        zero_conv(&mut r.conv2);
        if let Some(s) = r.conv_shortcut.as_mut() {
            select_first_channels(s);
        }
    }
    old_up.push(grown_top);
    old_up.push(outer);
    grown.up_blocks = old_up;
    Ok(grown)
}

/// The config of `config` with cross-attention added to its top level: the first down block
/// becomes a `SimpleCrossAttnDownBlock2D` and the last up block a `SimpleCrossAttnUpBlock2D`, with
/// `only_cross_attention[0]` set (the top level's entries of the other per-block attention
/// settings, e.g. `attention_head_dim`, apply as they are).
pub fn top_attention_config(
    config: &UNet2DConditionConfig,
) -> Result<UNet2DConditionConfig, Error> {
    let mut cfg = config.clone();
    match (
        cfg.down_block_types.first_mut(),
        cfg.up_block_types.last_mut(),
    ) {
        (
            Some(down @ DownBlockType::ResnetDownsampleBlock2D),
            Some(up @ UpBlockType::ResnetUpsampleBlock2D),
        ) => {
            *down = DownBlockType::SimpleCrossAttnDownBlock2D;
            *up = UpBlockType::SimpleCrossAttnUpBlock2D;
        }
        _ => {
            return Err(
                "the decoder's top level is not a ResnetDownsampleBlock2D / \
                        ResnetUpsampleBlock2D pair (already attends, or another block type)"
                    .into(),
            );
        }
    }
    // Cross-attention only at the top level: each pixel attends to the text tokens and the four
    // image-embedding tokens, not to the other 1024 pixels (self-attention there too made a
    // batch-32 step ~12 s instead of 0.65 s here, measured with a build beside it). The other
    // levels keep their setting; the mid block keeps the one it had, written out since a
    // per-block list would change its default (both read from the decoder's own layout).
    let layout = config.layout()?;
    let mut only = layout.only_cross_attention;
    cfg.mid_block_only_cross_attention = Some(layout.mid_only_cross_attention);
    only[0] = true;
    cfg.only_cross_attention = OneOrMany::Many(only);
    Ok(cfg)
}

/// `unet` with cross-attention added to its top level (after every resnet of the first
/// down block and of the last up block, as `SimpleCrossAttn*Block2D` place them). Every new
/// attention's `to_out` starts at zero, so its residual adds nothing and the model computes
/// exactly what `unet` did until training moves it; every other weight is carried over.
pub fn add_top_attention(
    mut unet: UNet2DConditionModel,
    device: &Device,
) -> Result<UNet2DConditionModel, Error> {
    let cfg = top_attention_config(&unet.config)?;
    // The new attentions come from a fresh model of the new config; everything else is `unet`.
    let fresh = UNet2DConditionModel::new(&cfg, device)?;
    let (Some(fresh_down), Some(fresh_up), Some(top_down), Some(top_up)) = (
        fresh.down_blocks.into_iter().next(),
        fresh.up_blocks.into_iter().next_back(),
        unet.down_blocks.first_mut(),
        unet.up_blocks.last_mut(),
    ) else {
        return Err("the decoder has no blocks".into());
    };
    top_down.attentions = fresh_down.attentions;
    top_up.attentions = fresh_up.attentions;
    for a in top_down
        .attentions
        .iter_mut()
        .chain(top_up.attentions.iter_mut())
    {
        zero_linear(&mut a.to_out);
    }
    unet.config = cfg;
    Ok(unet)
}

/// How `xtask grow-decoder` grows the decoder.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrowMode {
    /// One new outer level at twice the resolution (see the module docs).
    OuterLevel,
    /// Cross-attention (to the text and image-embedding tokens) added to the top level, at the
    /// same resolution.
    TopAttention,
}

/// `xtask grow-decoder`: a decoder trainer checkpoint folder grown by one outer level, or by
/// attention at its top level.
#[derive(clap::Args)]
pub struct GrowArgs {
    /// A decoder trainer checkpoint folder (`trainer_state.json`, `decoder/`, `text_proj/`,
    /// `online/decoder/`, `online/text_proj/`), e.g. `runs/shapes/decoder`.
    #[arg(long)]
    pub from: PathBuf,
    /// The folder to write the grown checkpoint to (a run's `decoder/` folder; the run's
    /// `clip/` must be beside it to train on). Must not exist yet.
    #[arg(long)]
    pub to: PathBuf,
    /// What to add.
    #[arg(long, value_enum, default_value = "outer-level")]
    pub mode: GrowMode,
}

/// Grows both the EMA and the online UNet of a decoder trainer checkpoint; the text projection
/// and the trainer state (step, training config) are copied unchanged, so `train-shapes
/// --stages decoder` resumes the grown run at twice the resolution.
pub fn grow(args: &GrowArgs) -> Result<(), Error> {
    if args.to.exists() {
        return Err(format!("--to {}: already exists", args.to.display()).into());
    }
    const COPIED: [&str; 5] = [
        "text_proj/config.json",
        "text_proj/diffusion_pytorch_model.safetensors",
        "online/text_proj/config.json",
        "online/text_proj/diffusion_pytorch_model.safetensors",
        "trainer_state.json",
    ];
    // Check every input before writing anything, so a bad --from leaves no partial --to.
    for file in COPIED {
        let path = args.from.join(file);
        if !path.is_file() {
            return Err(format!(
                "--from {}: missing {file} (not a decoder trainer checkpoint folder)",
                args.from.display()
            )
            .into());
        }
    }
    let device = crate::shapes::compute_device()?;
    // Both UNets (EMA and online) are loaded and grown before anything is written.
    let mut grown = Vec::with_capacity(2);
    for unet_dir in ["decoder", "online/decoder"] {
        let from = args.from.join(unet_dir);
        let unet = UNet2DConditionModel::from_pretrained(&from, &device)
            .map_err(|e| format!("{}: {e}", from.display()))?;
        let unet = match args.mode {
            GrowMode::OuterLevel => grow_unet(unet, &device)?,
            GrowMode::TopAttention => add_top_attention(unet, &device)?,
        };
        grown.push((unet_dir, unet));
    }
    for (unet_dir, unet) in grown {
        unet.save_pretrained(args.to.join(unet_dir))?;
    }
    for file in COPIED {
        let (from, to) = (args.from.join(file), args.to.join(file));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    println!("grew {} -> {}", args.from.display(), args.to.display());
    Ok(())
}

/// Zeroes a convolution's weight and bias.
fn zero_conv(conv: &mut Conv2d) {
    conv.weight = Param::from_tensor(conv.weight.val().zeros_like());
    if let Some(b) = conv.bias.take() {
        conv.bias = Some(Param::from_tensor(b.val().zeros_like()));
    }
}

/// Zeroes a linear layer's weight and bias.
fn zero_linear(linear: &mut Linear) {
    linear.weight = Param::from_tensor(linear.weight.val().zeros_like());
    if let Some(b) = linear.bias.take() {
        linear.bias = Some(Param::from_tensor(b.val().zeros_like()));
    }
}

/// Sets a 1x1 convolution `[out, in, 1, 1]` (in >= out) to pass its first `out` input channels
/// through: weight `[I | 0]`, bias 0.
fn select_first_channels(conv: &mut Conv2d) {
    let w = conv.weight.val();
    let [o, i, kh, kw] = w.dims();
    let mut v = vec![0.0f32; o * i * kh * kw];
    for j in 0..o.min(i) {
        v[(j * i + j) * kh * kw] = 1.0; // [j, j, 0, 0]
    }
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(v, [o, i, kh, kw]),
        &w.device(),
    ));
    if let Some(b) = conv.bias.take() {
        conv.bias = Some(Param::from_tensor(b.val().zeros_like()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use unclip_decoder::resnet::{avg_pool_2x, upsample_nearest_2x};

    fn device() -> Device {
        unclip_nn::parse_device("flex").expect("flex device")
    }

    /// The shapes decoder's config with 1x1 input and output kernels: then the grown model is
    /// exactly the old one between 2x average pooling and 2x nearest upsampling.
    fn config() -> UNet2DConditionConfig {
        let mut c: UNet2DConditionConfig =
            serde_json::from_str(crate::shapes::DECODER_CONFIG).expect("embedded decoder config");
        c.conv_in_kernel = 1;
        c.conv_out_kernel = 1;
        c.sample_size = Some(SampleSize::Square(16));
        c
    }

    #[test]
    fn the_grown_config_adds_one_outer_level() {
        let old = config();
        let g = grown_config(&old).expect("grown config");
        assert_eq!(g.block_out_channels, vec![16, 16, 32, 64]);
        assert_eq!(g.down_block_types.len(), 4);
        assert_eq!(
            g.down_block_types[0],
            DownBlockType::ResnetDownsampleBlock2D
        );
        assert_eq!(&g.down_block_types[1..], &old.down_block_types[..]);
        assert_eq!(&g.up_block_types[..3], &old.up_block_types[..]);
        assert_eq!(g.up_block_types[3], UpBlockType::ResnetUpsampleBlock2D);
        assert_eq!(g.sample_size.map(|s| s.hw()), Some([32, 32]));
    }

    #[test]
    fn the_grown_model_is_the_old_one_between_pooling_and_upsampling() {
        let device = device();
        device.seed(7);
        let old = UNet2DConditionModel::new(&config(), &device).expect("old model");
        // A fresh model's weights are all random (no zeroed convolutions), so every branch of
        // the old network shows in the comparison: a 32x32 input against the old model at 16x16.
        let x64: Tensor<4> =
            Tensor::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<1>::from_floats([30.0, 700.0], &device);
        let ctx: Tensor<3> = Tensor::random([2, 5, 64], Distribution::Normal(0.0, 1.0), &device);
        let emb: Tensor<2> = Tensor::random([2, 64], Distribution::Normal(0.0, 0.5), &device);
        let pooled = avg_pool_2x(x64.clone());
        let want = old
            .forward(pooled, t.clone(), ctx.clone(), Some(emb.clone()), None)
            .expect("old forward");
        let want = upsample_nearest_2x(want);
        let grown = grow_unet(old, &device).expect("grown model");
        let got = grown
            .forward(x64, t, ctx, Some(emb), None)
            .expect("grown forward");
        assert_eq!(got.dims(), [2, 6, 32, 32]);
        let err: f32 = (got - want.clone()).abs().max().into_scalar();
        let scale: f32 = want.abs().max().into_scalar();
        assert!(
            scale > 0.1,
            "the old model's output is not trivial: {scale}"
        );
        assert!(err < 1e-4 * scale.max(1.0), "max |grown - old| = {err}");
    }

    #[test]
    fn top_attention_starts_as_the_old_model_and_is_wired_in() {
        let device = device();
        device.seed(11);
        let mut cfg = config();
        cfg.conv_in_kernel = 3;
        cfg.conv_out_kernel = 3;
        let old = UNet2DConditionModel::new(&cfg, &device).expect("old model");
        let x: Tensor<4> = Tensor::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<1>::from_floats([30.0, 700.0], &device);
        let ctx: Tensor<3> = Tensor::random([2, 5, 64], Distribution::Normal(0.0, 1.0), &device);
        let emb: Tensor<2> = Tensor::random([2, 64], Distribution::Normal(0.0, 0.5), &device);
        let run = |m: &UNet2DConditionModel| {
            m.forward(x.clone(), t.clone(), ctx.clone(), Some(emb.clone()), None)
                .expect("forward")
        };
        let want = run(&old);
        let mut grown = add_top_attention(old, &device).expect("top attention");
        assert_eq!(
            grown.config.down_block_types[0],
            DownBlockType::SimpleCrossAttnDownBlock2D
        );
        assert_eq!(
            grown.config.up_block_types.last(),
            Some(&UpBlockType::SimpleCrossAttnUpBlock2D)
        );
        let n_down = grown.down_blocks[0].attentions.len();
        let n_up = grown.up_blocks.last().map_or(0, |b| b.attentions.len());
        assert_eq!((n_down, n_up), (1, 2), "one attention per resnet");
        // Cross-attention only at the top; the levels below and the mid block keep their
        // self-attention.
        assert!(grown.down_blocks[0].attentions[0].to_k.is_none());
        assert!(grown.down_blocks[1].attentions[0].to_k.is_some());
        let mid = grown.mid_block.as_ref().expect("mid block");
        assert!(mid.attentions[0].to_k.is_some());
        let err: f32 = (run(&grown) - want.clone()).abs().max().into_scalar();
        assert!(err < 1e-5, "zeroed attentions change the output by {err}");
        // A non-zero output projection must change the output: the attention is in the path.
        let a = &mut grown.down_blocks[0].attentions[0];
        a.to_out.weight = Param::from_tensor(a.to_out.weight.val().ones_like());
        let moved: f32 = (run(&grown) - want).abs().max().into_scalar();
        assert!(
            moved > 1e-3,
            "the top attention does not reach the output ({moved})"
        );
        // Growing twice is refused: the top level already attends.
        assert!(add_top_attention(grown, &device).is_err());
    }
}
