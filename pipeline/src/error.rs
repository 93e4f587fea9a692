//! The pipeline's error type: every stage's error, plus what only the pipeline can get wrong.

use std::path::PathBuf;

/// Everything a pipeline call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UnclipError {
    #[error("component `{name}` is missing: {why}")]
    MissingComponent { name: &'static str, why: String },
    #[error("{path}: {message}")]
    ModelIndex { path: PathBuf, message: String },
    #[error("no prompts were given")]
    EmptyPrompt,
    #[error("invalid setting `{name}`: {message}")]
    InvalidSetting { name: &'static str, message: String },
    #[error("cancelled by the progress callback during the {stage} stage")]
    Cancelled { stage: crate::Stage },
    #[error(transparent)]
    Load(#[from] unclip_nn::LoadError),
    #[error(transparent)]
    Tokenizer(#[from] unclip_tokenizer::TokenizerError),
    #[error(transparent)]
    Clip(#[from] unclip_clip::ClipError),
    #[error(transparent)]
    Prior(#[from] unclip_prior::PriorError),
    #[error(transparent)]
    Decoder(#[from] unclip_decoder::DecoderError),
    #[error(transparent)]
    Diffusion(#[from] unclip_diffusion::DiffusionError),
    #[error(transparent)]
    Noise(#[from] unclip_diffusion::NoiseError),
}
