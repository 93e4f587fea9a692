//! unCLIP's super-resolution stage on burn (64 -> 256 in Karlo): the `UNet2DModel` of
//! `super_res_first` / `super_res_last` (diffusers 0.42 `models/unets/unet_2d.py`, built from
//! `unclip_decoder::blocks`) and the antialiased bicubic upsampling of the low-resolution image
//! that conditions it (`F.interpolate(mode="bicubic", align_corners=False, antialias=True)`),
//! as diffusers' `pipelines/deprecated/unclip/pipeline_unclip.py` runs them ([`sampling`]:
//! `super_res_first` for every step but the last, `super_res_last` for the last).

pub mod config;
pub mod degrade;
pub mod resample;
pub mod sampling;
pub mod train;
pub mod unet;

pub use config::UNet2DConfig;
pub use degrade::{BsrConfig, LowResAugmentation};
pub use resample::{bicubic_aa_weights, resize_bicubic_antialias};
pub use sampling::{SuperResRequest, sample_super_res, to_nhwc, to_rgb8, to_unit_range};
pub use train::{SuperResTrainConfig, SuperResTrainer, TrainSchedule};
pub use unclip_decoder::{StepInfo, no_progress};
pub use unet::{SUPER_RES_KEYMAP, UNet2DModel};
