//! Progress reporting and cancellation.

use std::fmt;

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The diffusion prior (text embedding -> CLIP image embedding).
    Prior,
    /// The decoder (image embedding -> 64x64 image).
    Decoder,
    /// The (first) super-resolution stage (64 -> 256 in Karlo).
    SuperRes,
    /// The optional second super-resolution stage (DALL-E 2's 256 -> 1024).
    SuperRes2,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Prior => "prior",
            Stage::Decoder => "decoder",
            Stage::SuperRes => "super-resolution",
            Stage::SuperRes2 => "super-resolution 2",
        })
    }
}

/// One finished denoising step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The stage the step belongs to.
    pub stage: Stage,
    /// 1-based step within the stage.
    pub step: usize,
    /// Steps of the stage.
    pub total: usize,
    /// The timestep just denoised.
    pub timestep: usize,
}

/// What the callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop the call with [`crate::UnclipError::Cancelled`].
    Cancel,
}

/// A progress callback: called after every step of every stage; returning [`Control::Cancel`]
/// stops the call with [`crate::UnclipError::Cancelled`].
pub type ProgressFn<'a> = dyn FnMut(Progress) -> Control + 'a;
