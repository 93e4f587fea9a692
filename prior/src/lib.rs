//! The unCLIP diffusion prior: a Rust port of diffusers' `PriorTransformer`
//! (`diffusers/models/transformers/prior_transformer.py`, diffusers 0.42) as the Karlo
//! v1-alpha unCLIP pipeline (`diffusers/pipelines/deprecated/unclip/pipeline_unclip.py`) uses it:
//! CLIP text embedding + text token states -> CLIP image embedding.
//!
//! - [`PriorTransformerConfig`] reads `prior/config.json`.
//! - [`PriorTransformer`] is the network, [`PriorTransformer::from_pretrained`] /
//!   [`PriorTransformer::save_pretrained`] (diffusers layout, key map in [`load`]).
//! - [`PriorConditioning`] holds the text-side inputs.
//! - [`sample`] maps text to an image embedding with the `UnCLIPScheduler`, classifier-free guidance and
//!   reranking of candidates.
//! - [`train`] has x_0-prediction training with conditioning dropout, EMA and checkpoints.
//!
//! Sampling image embeddings with a tiny, freshly initialised prior (a real one comes from
//! [`PriorTransformer::from_pretrained`], its conditioning from CLIP's text encoder):
//!
//! ```
//! use std::ops::ControlFlow;
//! use burn::tensor::Device;
//! use unclip_diffusion::{PredictionType, SchedulerConfig, SeededNoise, UnCLIPScheduler, randn};
//! use unclip_prior::sample::{PriorSampleConfig, sample};
//! use unclip_prior::{PriorConditioning, PriorTransformer, PriorTransformerConfig};
//!
//! let device = Device::flex();
//! // CLIP width 8, 4 text tokens, 2 heads of 4, 1 layer (Karlo: 768, 77, 32 x 64, 20).
//! let prior = PriorTransformer::new(&PriorTransformerConfig::tiny(8, 4, 2, 4, 1), &device)?;
//! // Karlo's prior scheduler: the network predicts x_0, clipped to [-5, 5].
//! let mut scheduler = UnCLIPScheduler::new(SchedulerConfig {
//!     prediction_type: PredictionType::Sample,
//!     clip_sample_range: 5.0,
//!     ..SchedulerConfig::default()
//! });
//! let mut noise = SeededNoise::new(0);
//! // Two prompts: CLIP's `text_embeds` [B, 8] and `last_hidden_state` [B, 4, 8].
//! let cond = PriorConditioning {
//!     proj_embedding: randn(&mut noise, [2, 8], &device)?,
//!     encoder_hidden_states: Some(randn(&mut noise, [2, 4, 8], &device)?),
//!     attention_mask: None, // or the tokenizer's mask (`true` = a token)
//! };
//! // The empty prompt's conditioning, for classifier-free guidance.
//! let uncond = PriorConditioning {
//!     proj_embedding: randn(&mut noise, [1, 8], &device)?,
//!     encoder_hidden_states: Some(randn(&mut noise, [1, 4, 8], &device)?),
//!     attention_mask: None,
//! };
//! let config = PriorSampleConfig { num_inference_steps: 5, guidance_scale: 4.0, num_candidates: 2 };
//! let out = sample(
//!     &prior, &mut scheduler, &cond, Some(&uncond), &config, None, &mut noise,
//!     &mut |_step| ControlFlow::Continue(()),
//! )?;
//! assert_eq!(out.image_embeddings.dims(), [2, 8]); // the better of 2 candidates per prompt
//! assert_eq!(out.candidates.dims(), [2, 2, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
pub mod load;
mod model;

pub use config::{PriorTransformerConfig, TimeActivation};
pub use error::PriorError;
pub use load::{CONFIG_FILE, KARLO_PRIOR_KEYS, WEIGHTS_STEM, save_key};
pub use model::{
    FeedForward, PRIOR_MASK_VALUE, PriorConditioning, PriorTransformer, SelfAttention,
    TransformerBlock, causal_mask,
};
pub mod sample;
pub mod train;
