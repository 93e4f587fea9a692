//! Progress reporting and cancellation.

use std::fmt;

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Prior,
    Decoder,
    SuperRes,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Prior => "prior",
            Stage::Decoder => "decoder",
            Stage::SuperRes => "super-resolution",
        })
    }
}

/// One finished denoising step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    /// 1-based step within the stage.
    pub step: usize,
    pub total: usize,
    /// The timestep just denoised.
    pub timestep: usize,
}

/// What the callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Cancel,
}

/// A progress callback: called after every step of every stage; returning [`Control::Cancel`]
/// stops the call with [`crate::UnclipError::Cancelled`].
pub type ProgressFn<'a> = dyn FnMut(Progress) -> Control + 'a;
