//! diffusers `models/resnet.py` `ResnetBlock2D` (pre-norm, optional 2x nearest up / 2x average
//! pooling down inside the block, `time_embedding_norm` "default" or "scale_shift") and the small
//! resampling ops it needs.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};
use unclip_nn::{Activation, GroupNorm, Linear};

use crate::config::TimeScaleShift;

/// A `k x k` convolution with "same" padding `k / 2` and bias (torch `nn.Conv2d(c_in, c_out, k,
/// padding=k // 2)`); `weight [c_out, c_in, k, k]`, `bias [c_out]`.
pub fn conv2d(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// torch `F.avg_pool2d(x, 2, 2)` (odd trailing rows / columns dropped, as torch floors).
/// `[B, C, H, W] -> [B, C, H/2, W/2]`.
pub fn avg_pool_2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let (ho, wo) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.slice([0..b, 0..c, 0..ho * 2, 0..wo * 2])
    } else {
        x
    };
    x.reshape([b, c, ho, 2, wo, 2])
        .mean_dim(5)
        .mean_dim(3)
        .reshape([b, c, ho, wo])
}

/// torch `F.interpolate(x, scale_factor=2.0, mode="nearest")`. `[B, C, H, W] -> [B, C, 2H, 2W]`.
pub fn upsample_nearest_2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .repeat_dim(3, 2)
        .repeat_dim(5, 2)
        .reshape([b, c, 2 * h, 2 * w])
}

/// What a resnet block does to the resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resample {
    #[default]
    None,
    /// 2x nearest upsampling of both branches after `norm1` + activation (diffusers `up=True`).
    Up,
    /// 2x average pooling of both branches (diffusers `down=True`).
    Down,
}

/// Construction parameters of a [`ResnetBlock2D`].
#[derive(Debug, Clone)]
pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the time embedding (`time_emb_proj` input).
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    pub skip_time_act: bool,
    pub output_scale_factor: f64,
    pub resample: Resample,
}

/// diffusers `ResnetBlock2D`:
/// `h = conv1(resample(act(norm1(x))))`, time conditioning, `h = conv2(act(norm2'(h)))`,
/// `out = (shortcut(resample(x)) + h) / output_scale_factor`.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    /// `[out, in, 3, 3]`
    pub conv1: Conv2d,
    /// `[out or 2*out, temb]` (2*out for scale_shift)
    pub time_emb_proj: Linear,
    pub norm2: GroupNorm,
    /// `[out, out, 3, 3]`
    pub conv2: Conv2d,
    /// 1x1 `[out, in, 1, 1]` when `in != out`.
    pub conv_shortcut: Option<Conv2d>,
    #[module(skip)]
    pub act: Activation,
    #[module(skip)]
    pub scale_shift: bool,
    #[module(skip)]
    pub skip_time_act: bool,
    #[module(skip)]
    pub output_scale_factor: f64,
    #[module(skip)]
    pub up: bool,
    #[module(skip)]
    pub down: bool,
}

impl ResnetBlock2D {
    pub fn new(cfg: &ResnetConfig, device: &Device) -> Self {
        let scale_shift = cfg.time_scale_shift == TimeScaleShift::ScaleShift;
        let proj_out = if scale_shift {
            2 * cfg.out_channels
        } else {
            cfg.out_channels
        };
        ResnetBlock2D {
            norm1: GroupNorm::new(cfg.groups, cfg.in_channels, cfg.eps, device),
            conv1: conv2d(cfg.in_channels, cfg.out_channels, 3, device),
            time_emb_proj: Linear::new(cfg.temb_channels, proj_out, true, device),
            norm2: GroupNorm::new(cfg.groups, cfg.out_channels, cfg.eps, device),
            conv2: conv2d(cfg.out_channels, cfg.out_channels, 3, device),
            conv_shortcut: (cfg.in_channels != cfg.out_channels)
                .then(|| conv2d(cfg.in_channels, cfg.out_channels, 1, device)),
            act: cfg.act,
            scale_shift,
            skip_time_act: cfg.skip_time_act,
            output_scale_factor: cfg.output_scale_factor,
            up: cfg.resample == Resample::Up,
            down: cfg.resample == Resample::Down,
        }
    }

    /// `x [B, Cin, H, W]`, `temb [B, T]` -> `[B, Cout, H', W']` (H' = 2H up, H/2 down, else H).
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>) -> Tensor<4> {
        let mut input = x.clone();
        let mut h = self.act.forward(self.norm1.forward(x));
        if self.up {
            input = upsample_nearest_2x(input);
            h = upsample_nearest_2x(h);
        } else if self.down {
            input = avg_pool_2x(input);
            h = avg_pool_2x(h);
        }
        let h = self.conv1.forward(h);
        let t = if self.skip_time_act {
            temb.clone()
        } else {
            self.act.forward(temb.clone())
        };
        let t: Tensor<4> = self
            .time_emb_proj
            .forward(t)
            .unsqueeze_dim::<3>(2)
            .unsqueeze_dim(3); // [B, P, 1, 1]
        let h = if self.scale_shift {
            let [b, p, _, _] = t.dims();
            let c = p / 2;
            let scale = t.clone().slice([0..b, 0..c]);
            let shift = t.slice([0..b, c..p]);
            self.norm2.forward(h) * (scale + 1.0) + shift
        } else {
            self.norm2.forward(h + t)
        };
        let h = self.conv2.forward(self.act.forward(h));
        let input = match &self.conv_shortcut {
            Some(conv) => conv.forward(input),
            None => input,
        };
        let out = input + h;
        if self.output_scale_factor != 1.0 {
            out / self.output_scale_factor
        } else {
            out
        }
    }
}
