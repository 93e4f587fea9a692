//! Typed errors of the decoder crate (and of the upsampler, which reuses them).

use std::path::PathBuf;

use unclip_nn::LoadError;

/// Everything that can go wrong while building, loading or running a decoder-family model.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    /// Reading a config or a checkpoint failed (missing / unused / mis-shaped tensors included:
    /// the inner error names the key).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A config field holds a value this implementation does not support.
    #[error("{}unsupported value {value} for config field `{field}` (supported: {supported})", path_prefix(.path))]
    UnsupportedConfig {
        path: Option<PathBuf>,
        field: String,
        value: String,
        supported: String,
    },
    /// A config field is inconsistent with the others (e.g. list lengths differ).
    #[error("{}invalid config field `{field}`: {message}", path_prefix(.path))]
    InvalidConfig {
        path: Option<PathBuf>,
        field: String,
        message: String,
    },
    /// An input tensor has the wrong shape.
    #[error("input `{name}` has shape {got:?}; expected {expected}")]
    InputShape {
        name: String,
        expected: String,
        got: Vec<usize>,
    },
    /// An argument is out of range (e.g. a guidance scale or a step count).
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument { name: String, message: String },
    /// The progress callback of a sampling call ([`crate::sample_decoder`], or the upsampler's
    /// `sample_super_res`) asked to stop after step `step` of `total` (1-based).
    #[error("sampling cancelled by the progress callback after step {step} of {total}")]
    Cancelled { step: usize, total: usize },
    /// The scheduler (or the noise source) failed.
    #[error(transparent)]
    Diffusion(#[from] unclip_diffusion::DiffusionError),
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

impl DecoderError {
    /// Attaches the config file path to config errors that lack one.
    pub fn with_path(self, p: impl Into<PathBuf>) -> Self {
        match self {
            DecoderError::UnsupportedConfig {
                path: None,
                field,
                value,
                supported,
            } => DecoderError::UnsupportedConfig {
                path: Some(p.into()),
                field,
                value,
                supported,
            },
            DecoderError::InvalidConfig {
                path: None,
                field,
                message,
            } => DecoderError::InvalidConfig {
                path: Some(p.into()),
                field,
                message,
            },
            other => other,
        }
    }

    /// An [`UnsupportedConfig`](Self::UnsupportedConfig) error without a path.
    pub fn unsupported(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        supported: &str,
    ) -> Self {
        DecoderError::UnsupportedConfig {
            path: None,
            field: field.into(),
            value: value.to_string(),
            supported: supported.to_string(),
        }
    }

    /// An [`InvalidConfig`](Self::InvalidConfig) error without a path.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DecoderError::InvalidConfig {
            path: None,
            field: field.into(),
            message: message.into(),
        }
    }

    /// An [`InputShape`](Self::InputShape) error.
    pub fn shape(name: &str, expected: impl Into<String>, got: &[usize]) -> Self {
        DecoderError::InputShape {
            name: name.to_string(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }
}

impl From<unclip_nn::TrainCheckpointError> for DecoderError {
    fn from(e: unclip_nn::TrainCheckpointError) -> Self {
        DecoderError::Load(LoadError::from(e))
    }
}
