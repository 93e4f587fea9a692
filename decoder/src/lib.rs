//! The unCLIP (DALL-E 2 / Karlo) decoder on burn: the 64x64 `UNet2DConditionModel` and the
//! `UnCLIPTextProjModel` that turns CLIP embeddings into its conditioning, ported from diffusers
//! 0.42 (`models/unets/unet_2d_condition.py`, `models/unets/unet_2d_blocks.py`,
//! `models/resnet.py`, `models/attention_processor.py` `AttnAddedKVProcessor2_0`,
//! `models/embeddings.py`, `pipelines/deprecated/unclip/text_proj.py`, and the decoder stage of
//! `pipelines/deprecated/unclip/pipeline_unclip.py`).
//!
//! - [`UNet2DConditionModel::from_pretrained`] / [`UnCLIPTextProjModel::from_pretrained`] read a
//!   diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors` or `.bin`).
//! - [`blocks`], [`resnet`], [`attention`], [`embeddings`] are public: the super-resolution
//!   `UNet2DModel` of `unclip-upsampler` is built from them.
//! - [`sampling`]: the decoder stage of the Karlo pipeline (classifier-free guidance on the eps
//!   channels only, learned-range variance, clipping, final clamp to [-1, 1]).
//!
//! Sampling a 8x8 image with a tiny, freshly initialised decoder (a real one comes from
//! [`UNet2DConditionModel::from_pretrained`] and [`UnCLIPTextProjModel::from_pretrained`], its
//! inputs from the prior and CLIP's text encoder):
//!
//! ```
//! use burn::tensor::{Bool, Device, Tensor, TensorData};
//! use unclip_decoder::{
//!     DecoderRequest, TextConditioning, TextProjConfig, UNet2DConditionConfig,
//!     UNet2DConditionModel, UnCLIPTextProjModel, no_progress, sample_decoder,
//! };
//! use unclip_diffusion::{Sampler, SchedulerConfig, SeededNoise, UnCLIPScheduler, VarianceType};
//! use unclip_diffusion::randn;
//!
//! let device = Device::flex();
//! // Karlo's decoder layout at toy size (Karlo's: 64x64, CLIP width 768).
//! let config: UNet2DConditionConfig = serde_json::from_value(serde_json::json!({
//!     "in_channels": 3, "out_channels": 6, "sample_size": 8, // eps + learned variance
//!     "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
//!     "attention_head_dim": 8, "cross_attention_dim": 16, "class_embed_type": "identity",
//!     "resnet_time_scale_shift": "scale_shift", "act_fn": "silu",
//!     "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
//!     "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
//!     "up_block_types": ["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"]
//! }))?;
//! let unet = UNet2DConditionModel::new(&config, &device)?;
//! let text_proj = UnCLIPTextProjModel::new(
//!     &TextProjConfig {
//!         clip_extra_context_tokens: 2,
//!         clip_embeddings_dim: 8,
//!         time_embed_dim: 32, // 4 x block_out_channels[0]
//!         cross_attention_dim: 16,
//!     },
//!     &device,
//! );
//! // Karlo's decoder scheduler: eps prediction with learned-range variance.
//! let mut scheduler = UnCLIPScheduler::new(SchedulerConfig {
//!     variance_type: VarianceType::LearnedRange,
//!     ..SchedulerConfig::default()
//! });
//!
//! let mut noise = SeededNoise::new(0);
//! let mask = TensorData::new(vec![true, true, true, false], [1, 4]);
//! let mask = Tensor::<2, Bool>::from_data(mask, &device); // the tokenizer's mask
//! let text = TextConditioning {
//!     prompt_embeds: randn(&mut noise, [1, 8], &device)?, // CLIP `text_embeds`
//!     hidden_states: randn(&mut noise, [1, 4, 8], &device)?, // CLIP `last_hidden_state`
//!     mask: mask.clone(),
//! };
//! let empty_prompt = TextConditioning {
//!     prompt_embeds: randn(&mut noise, [1, 8], &device)?,
//!     hidden_states: randn(&mut noise, [1, 4, 8], &device)?,
//!     mask,
//! };
//! let request = DecoderRequest {
//!     image_embeddings: randn(&mut noise, [1, 8], &device)?, // the prior's output
//!     text,
//!     uncond_text: Some(empty_prompt), // classifier-free guidance
//!     guidance_scale: 8.0,
//!     num_inference_steps: 3,
//!     latents: None,
//!     sampler: Sampler::Ancestral,
//!     init_image: None,
//! };
//! let image =
//!     sample_decoder(&unet, &text_proj, &mut scheduler, request, &mut noise, &mut no_progress)?;
//! assert_eq!(image.dims(), [1, 3, 8, 8]); // in [-1, 1]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attention;
pub mod blocks;
pub mod config;
pub mod embeddings;
mod error;
pub mod load;
pub mod resnet;
pub mod sampling;
pub mod text_proj;
pub mod train;
pub mod unet;

pub use attention::{AddedKvAttention, CrossContext};
pub use config::{TextProjConfig, UNet2DConditionConfig};
pub use error::DecoderError;
pub use load::{DECODER_KEYMAP, TEXT_PROJ_KEYMAP};
pub use sampling::{
    DecoderGuide, DecoderRequest, GuidedDecoder, InitImage, LowNoiseExpert, StepInfo,
    TextConditioning, no_progress, sample_decoder, sample_decoder_guided,
    sample_decoder_with_expert,
};
pub use text_proj::{TextProjOutput, UnCLIPTextProjModel};
pub use train::{DecoderBatch, DecoderModels, DecoderTrainConfig, DecoderTrainer, StepLosses};
pub use unet::UNet2DConditionModel;
