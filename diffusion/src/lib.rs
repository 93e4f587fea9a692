//! Diffusion core of unclip, shared by the prior, the decoder and the upsamplers.
//!
//! - [`SchedulerConfig`]: diffusers' `scheduler_config.json`, validated with typed errors.
//! - [`NoiseSchedule`]: betas / cumulative alphas (float32 exactly as torch), `q_sample`, the true
//!   posterior, eps / x0 / v conversions and training targets.
//! - [`UnCLIPScheduler`]: diffusers' UnCLIPScheduler (Karlo), plus DDIM steps and inversion.
//! - [`classifier_free_guidance`]: the Karlo pipeline's guidance (variance channels from the
//!   conditional half).
//! - [`NoiseSource`] with [`SeededNoise`] (host RNG, same values on every device) and
//!   [`ReplayNoise`] (recorded tensors in order).
//! - [`loss`]: training losses: uniform timestep sampling, simple MSE, improved-DDPM hybrid loss
//!   (MSE + lambda * VLB) for learned-range variance.
//!
//! Nothing here picks a backend: tensors live on whatever `Device` the caller uses.

mod config;
mod error;
mod guidance;
pub mod loss;
mod noise;
mod schedule;
mod scheduler;

pub use config::{
    BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing, TrainSchedule, VarianceType,
};
pub use error::{ConfigError, DiffusionError};
pub use guidance::{GradientGuide, apply_gradient_guidance, classifier_free_guidance};
pub use loss::{
    HybridLossConfig, LossTerms, LossWeighting, T0Likelihood, TrainingObjective, sample_timesteps,
};
pub use noise::{
    NoiseError, NoiseSource, NoiseState, RecordingNoise, ReplayNoise, SeededNoise, StreamState,
    randn,
};
pub use schedule::{NoiseSchedule, Posterior, cosine_betas};
pub use scheduler::{
    Sampler, StepCoefficients, StepOutput, UnCLIPScheduler, dynamic_threshold, leading_timesteps,
    unclip_timesteps,
};
