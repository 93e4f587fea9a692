//! unCLIP's super-resolution stage on burn (64 -> 256 in Karlo): the `UNet2DModel` of
//! `super_res_first` / `super_res_last` (diffusers 0.42 `models/unets/unet_2d.py`, built from
//! `unclip_decoder::blocks`) and the antialiased bicubic upsampling of the low-resolution image
//! that conditions it (`F.interpolate(mode="bicubic", align_corners=False, antialias=True)`),
//! as diffusers' `pipelines/deprecated/unclip/pipeline_unclip.py` runs them ([`sampling`]:
//! `super_res_first` for every step but the last, `super_res_last` for the last).
//!
//! Upsampling an 8x8 image to 16x16 with a tiny, freshly initialised super-resolution UNet (a
//! real one comes from [`UNet2DModel::from_pretrained`]):
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use unclip_decoder::no_progress;
//! use unclip_diffusion::{SchedulerConfig, SeededNoise, UnCLIPScheduler};
//! use unclip_upsampler::{
//!     SuperResRequest, UNet2DConfig, UNet2DModel, sample_super_res, to_rgb8, to_unit_range,
//! };
//!
//! let device = Device::flex();
//! // Karlo's super-resolution layout at toy size (Karlo's: 64 -> 256).
//! let config: UNet2DConfig = serde_json::from_value(serde_json::json!({
//!     "in_channels": 6, "out_channels": 3, "sample_size": 16, // noisy image + upsampled input
//!     "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
//!     "act_fn": "silu", "add_attention": false, "mid_block_type": "UNetMidBlock2D",
//!     "down_block_types": ["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"],
//!     "up_block_types": ["ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"]
//! }))?;
//! let unet = UNet2DModel::new(&config, &device)?;
//! // Karlo's super-resolution scheduler: diffusers' UnCLIPScheduler defaults.
//! let mut scheduler = UnCLIPScheduler::new(SchedulerConfig::default());
//!
//! let image_small = Tensor::<4>::zeros([1, 3, 8, 8], &device); // the decoder's output, [-1, 1]
//! let request = SuperResRequest {
//!     image_small,
//!     num_inference_steps: 3,
//!     latents: None,
//!     output_size: None, // the UNet's sample_size
//! };
//! let mut noise = SeededNoise::new(0);
//! // `super_res_first` for every step but the last, `super_res_last` for the last: one model here.
//! let image = sample_super_res(&unet, &unet, &mut scheduler, request, &mut noise, &mut no_progress)?;
//! assert_eq!(image.dims(), [1, 3, 16, 16]);
//! let pictures = to_rgb8(to_unit_range(image))?; // one `image::RgbImage` per batch row
//! assert_eq!(pictures[0].dimensions(), (16, 16));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
