//! Progress reporting and cancellation.

use burn::tensor::Tensor;
use std::fmt;

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The diffusion prior (text embedding -> CLIP image embedding).
    Prior,
    /// DDIM inversion of images to the decoder's latent ([`crate::UnclipPipeline::invert`]).
    Inversion,
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
            Stage::Inversion => "inversion",
            Stage::Decoder => "decoder",
            Stage::SuperRes => "super-resolution",
            Stage::SuperRes2 => "super-resolution 2",
        })
    }
}

/// One finished denoising step.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The stage the step belongs to.
    pub stage: Stage,
    /// 1-based step within the stage.
    pub step: usize,
    /// Steps of the stage.
    pub total: usize,
    /// The timestep just denoised.
    pub timestep: usize,
    /// A preview: the step's prediction of the clean image `x_0` `[B, C, H, W]` (after the
    /// scheduler's clipping, in about `[-1, 1]`; `unclip_upsampler::to_unit_range` and
    /// `to_rgb8` turn it into pictures) for the image stages (decoder and super-resolution);
    /// `None` for the prior, whose `x_0` is an embedding. Borrowed for the call only: clone it to
    /// keep it.
    pub preview: Option<&'a Tensor<4>>,
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
pub type ProgressFn<'a> = dyn FnMut(Progress<'_>) -> Control + 'a;
