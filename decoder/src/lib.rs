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
