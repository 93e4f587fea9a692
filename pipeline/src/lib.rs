#![warn(missing_docs)]
//! **unclip**: DALL-E 2 (unCLIP, *Hierarchical Text-Conditional Image Generation with CLIP
//! Latents*) in Rust on burn. This crate assembles the stages — tokenizer, CLIP, prior, decoder,
//! upsamplers — into the pipeline, and re-exports the stage crates.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use unclip::{Control, UnclipBuilder};
//! let pipe = UnclipBuilder::new().device(Device::flex()).from_pretrained("karlo-v1-alpha").build()?;
//! let out = pipe.text_to_image(&["a large red circle in the top left"], &mut |p| {
//!     println!("{} {}/{}", p.stage, p.step, p.total);
//!     Control::Continue
//! })?;
//! for (i, img) in out.to_rgb8()?.iter().enumerate() {
//!     img.save(format!("{i:03}.png")).unwrap();
//! }
//! # Ok::<(), unclip::UnclipError>(())
//! ```

mod clip_guidance;
mod component;
mod edit;
mod error;
mod index;
mod pipeline;
mod progress;

pub use clip_guidance::NoisedClipGuide;
pub use component::{Component, ComponentModel, MemoryMode};
pub use edit::{Endpoint, Latent, XtMode, slerp};
pub use error::UnclipError;
pub use index::ModelIndex;
pub use pipeline::{
    EncodedText, Generation, Latents, SETTINGS_FILE, Settings, SuperRes2, UnclipBuilder,
    UnclipPipeline,
};
pub use progress::{Control, Progress, ProgressFn, Stage};
pub use unclip_diffusion::Sampler;

pub use burn;
pub use unclip_clip as clip;
pub use unclip_decoder as decoder;
pub use unclip_diffusion as diffusion;
pub use unclip_nn as nn;
pub use unclip_prior as prior;
pub use unclip_tokenizer as tokenizer;
pub use unclip_upsampler as upsampler;

/// The README's code, compiled as a doctest (`cargo test -p unclip --doc`).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
