//! The pipeline's error type: every stage's error, plus what only the pipeline can get wrong.

use std::path::PathBuf;

/// Everything a pipeline call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UnclipError {
    /// A component the call needs is neither given to the builder nor in the folder.
    #[error("component `{name}` is missing: {why}")]
    MissingComponent {
        /// The component's name in `model_index.json`.
        name: &'static str,
        /// What is missing where.
        why: String,
    },
    /// `model_index.json` is not what a diffusers pipeline folder has.
    #[error("{path}: {message}")]
    ModelIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An empty prompt list.
    #[error("no prompts were given")]
    EmptyPrompt,
    /// A setting or argument out of its range.
    #[error("invalid setting `{name}`: {message}")]
    InvalidSetting {
        /// The setting or argument.
        name: &'static str,
        /// Why it is invalid.
        message: String,
    },
    /// The float dtype asked for (`UnclipBuilder::dtype`) cannot be used on the device.
    #[error("float dtype {dtype:?}: {why}")]
    UnsupportedDtype {
        /// The dtype asked for.
        dtype: burn::tensor::FloatDType,
        /// Why it cannot be used.
        why: String,
    },
    /// The progress callback returned [`crate::Control::Cancel`].
    #[error("cancelled by the progress callback during the {stage} stage")]
    Cancelled {
        /// The stage that was running.
        stage: crate::Stage,
    },
    /// Reading a config or checkpoint failed.
    #[error(transparent)]
    Load(#[from] unclip_nn::LoadError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] unclip_tokenizer::TokenizerError),
    /// A CLIP tower or the image preprocessing failed.
    #[error(transparent)]
    Clip(#[from] unclip_clip::ClipError),
    /// The prior failed.
    #[error(transparent)]
    Prior(#[from] unclip_prior::PriorError),
    /// The decoder or a super-resolution stage failed.
    #[error(transparent)]
    Decoder(#[from] unclip_decoder::DecoderError),
    /// A scheduler failed.
    #[error(transparent)]
    Diffusion(#[from] unclip_diffusion::DiffusionError),
    /// The noise source failed (e.g. a replay ran out).
    #[error(transparent)]
    Noise(#[from] unclip_diffusion::NoiseError),
}
