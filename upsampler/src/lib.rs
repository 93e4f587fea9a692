//! unCLIP's super-resolution stage on burn (64 -> 256 in Karlo): the `UNet2DModel` of
//! `super_res_first` / `super_res_last` (diffusers 0.42 `models/unets/unet_2d.py`, built from
//! `unclip_decoder::blocks`) and the antialiased bicubic upsampling of the low-resolution image
//! that conditions it (`F.interpolate(mode="bicubic", align_corners=False, antialias=True)`),
//! as diffusers' `pipelines/deprecated/unclip/pipeline_unclip.py` runs them.

pub mod config;
pub mod resample;
pub mod unet;

pub use config::UNet2DConfig;
pub use resample::{bicubic_aa_weights, resize_bicubic_antialias};
pub use unet::{SUPER_RES_KEYMAP, UNet2DModel};
