//! Typed errors of the diffusion crate.

use unclip_nn::LoadError;

use crate::noise::NoiseError;

/// A `scheduler_config.json` that cannot be used; every variant names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("scheduler config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("scheduler config is not a JSON object")]
    NotAnObject,
    #[error("scheduler config field `{field}`: unsupported value {value}; supported: {supported}")]
    Unsupported {
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("scheduler config field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Everything that can go wrong in scheduling, sampling and loss computation.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error(
        "set_timesteps({requested}): at least 2 inference steps are needed (the UnCLIP step ratio divides by N-1)"
    )]
    TooFewInferenceSteps { requested: usize },
    #[error("set_timesteps({requested}): more inference steps than the {train} training timesteps")]
    TooManyInferenceSteps { requested: usize, train: usize },
    #[error("timestep {t} is outside the training schedule 0..{num_train_timesteps}")]
    TimestepOutOfRange {
        t: usize,
        num_train_timesteps: usize,
    },
    #[error("prev_timestep {prev} must be smaller than the current timestep {t}")]
    InvalidPrevTimestep { t: usize, prev: usize },
    #[error("{what}: shape {found:?} does not fit: expected {expected}")]
    ShapeMismatch {
        what: &'static str,
        found: Vec<usize>,
        expected: String,
    },
    #[error("{what}: {message}")]
    InvalidArgument { what: &'static str, message: String },
}
