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
