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
//!
//! The reference implementations are diffusers 0.42 (`schedulers/scheduling_unclip.py`; the
//! DDIM steps as `scheduling_ddim.py`; guidance as `pipelines/deprecated/unclip/pipeline_unclip.py`)
//! and, for the losses, improved DDPM (Nichol & Dhariwal 2021) as GLIDE trains with it.
//!
//! A scheduler read from a model folder, and a whole reverse process with seeded noise:
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use unclip_diffusion::{DiffusionError, Sampler, SeededNoise, UnCLIPScheduler};
//!
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/shapes");
//! // `dir`: a model folder in the diffusers layout (here the repository's `models/shapes`).
//! let mut scheduler = UnCLIPScheduler::from_file(dir.join("prior_scheduler"))?;
//! scheduler.set_timesteps(10)?;
//!
//! let device = Device::flex();
//! let mut noise = SeededNoise::new(0); // host noise: the same values on every device
//! let x_t = unclip_diffusion::randn(&mut noise, [2, 16], &device)?;
//! // The model gives its prediction for (x_t, t); this one always predicts x_0 = 0 (the
//! // scheduler's `prediction_type` is "sample").
//! let x_0 = scheduler.denoise(x_t, Sampler::Ddim { eta: 0.0 }, &mut noise, |x: Tensor<2>, _t| {
//!     Ok::<_, DiffusionError>(x.zeros_like())
//! })?;
//! let values = x_0.into_data().try_to_vec::<f32>().unwrap();
//! assert!(values.iter().all(|v| v.abs() < 1e-3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
