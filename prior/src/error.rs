//! Typed errors of the prior crate.

use unclip_nn::LoadError;

/// Everything that can go wrong when building, loading, running, sampling or training the prior.
#[derive(Debug, thiserror::Error)]
pub enum PriorError {
    /// Reading / writing config or weights failed (missing, unused or mis-shaped tensors name the key).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A config value this port (or diffusers) does not support.
    #[error("unsupported prior config: {field} = {value}")]
    UnsupportedConfig { field: &'static str, value: String },
    /// An input of the wrong shape.
    #[error("prior input `{input}` has shape {found:?}, expected {expected}")]
    Shape {
        input: &'static str,
        expected: String,
        found: Vec<usize>,
    },
    /// An invalid argument (guidance scale, number of candidates, steps, ...).
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument { name: &'static str, message: String },
    /// The progress callback of [`crate::sample::sample`] asked to stop after step `step` of
    /// `total` (1-based).
    #[error("prior sampling cancelled by the progress callback after step {step} of {total}")]
    Cancelled { step: usize, total: usize },
    /// The scheduler, guidance or noise source rejected a call.
    #[error(transparent)]
    Diffusion(#[from] unclip_diffusion::DiffusionError),
}

impl PriorError {
    pub(crate) fn shape(input: &'static str, expected: impl Into<String>, found: &[usize]) -> Self {
        PriorError::Shape {
            input,
            expected: expected.into(),
            found: found.to_vec(),
        }
    }
}

impl From<unclip_nn::TrainCheckpointError> for PriorError {
    fn from(e: unclip_nn::TrainCheckpointError) -> Self {
        PriorError::Load(LoadError::from(e))
    }
}
