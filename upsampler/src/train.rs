//! Training a super-resolution `UNet2DModel` (DALL-E 2 §2.1 and appendix C): the model sees
//! random crops of a quarter of the target size ("we train on random crops of images that are
//! one-fourth the target size ... the models are fully convolutional" so they sample full-size
//! images at inference), conditioned on the crop's low-resolution version:
//!
//! 1. a random `c x c` crop of each high-resolution image (`c` = a quarter of the image side by
//!    default), its offset a multiple of the scale factor `f`, so the crop lines up with the
//!    low-resolution pixel grid;
//! 2. `low = resize_bicubic_antialias(crop, [c/f, c/f])` (what the previous stage makes at that
//!    scale), augmented by [`LowResAugmentation`] ([`crate::degrade`]: Gaussian blur for 64 -> 256,
//!    BSR degradation for 256 -> 1024) and clamped to `[-1, 1]` like the decoder's output;
//! 3. `up = resize_bicubic_antialias(low, [c, c])`, as `sample_super_res` upsamples its input;
//! 4. the UNet predicts eps (or x_0, [`SuperResTrainConfig::prediction_type`]) from
//!    `cat([x_t, up], 1)` (`[B, 2C, c, c]`); the loss is the MSE on its target
//!    (`fixed_small_log` variance, Karlo's super-resolution scheduler), with the cosine
//!    schedule or, for the 256 -> 1024 stage, a linear one ([`TrainSchedule`]).
//!
//! AdamW, an EMA of the weights, atomic checkpoints in the diffusers layout and resume, as in
//! `unclip_prior::train`:
//!
//! ```text
//! <dir>/config.json                              EMA weights (the model when EMA is off):
//! <dir>/diffusion_pytorch_model.safetensors      UNet2DModel::from_pretrained(<dir>)
//! <dir>/online/config.json                       the raw (optimised) weights, same layout
//! <dir>/online/diffusion_pytorch_model.safetensors
//! <dir>/trainer_state.json                       step and training settings (written last)
//! ```
//!
//! Crops, timesteps, noise and the augmentation's draws come from one seeded host generator, so
//! a run is reproducible on every device. That folder is the run's export; a resume that
//! continues the run exactly reads the training checkpoints ([`SuperResTrainer::save_state`] /
//! [`SuperResTrainer::resume_state`]: weights with their parameter ids, EMA, AdamW's moments
//! and step counts, the random stream's position, the step and the run's config, one directory
//! per save written atomically). [`SuperResTrainer::resume`] restarts AdamW's moments and
//! reseeds the stream.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};
use unclip_decoder::DecoderError;
use unclip_decoder::train::{
    STATE_FILE, StepLosses, check_common, decoder_save_key, optimise_step, save_diffusers_folder,
};
use unclip_diffusion::{
    LossTerms, NoiseSource, PredictionType, SchedulerConfig, SeededNoise, StreamState,
    TrainingObjective, VarianceType,
};
use unclip_nn::{CheckpointStore, TrainResume, TrainSnapshot};

use crate::degrade::LowResAugmentation;
use crate::{UNet2DConfig, UNet2DModel, resize_bicubic_antialias};

impl UNet2DModel {
    /// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` (f32, diffusers
    /// keys), each atomically, so [`UNet2DModel::from_pretrained`] (and diffusers) reads the
    /// folder back.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<(), DecoderError> {
        save_diffusers_folder(
            self,
            &self.config,
            "UNet2DModel",
            dir.as_ref(),
            decoder_save_key,
        )
    }

    /// The factor the spatial size must be divisible by (2^(resolution changes)).
    pub fn size_factor(&self) -> usize {
        1usize
            << self
                .up_blocks
                .iter()
                .filter(|u| !u.upsamplers.is_empty())
                .count()
    }
}

/// The noise schedule of a super-resolution training run (shared with the decoder trainer).
pub use unclip_diffusion::TrainSchedule;

fn eps() -> PredictionType {
    PredictionType::Epsilon
}

/// Settings of a super-resolution training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuperResTrainConfig {
    /// AdamW learning rate (DALL-E 2's upsamplers: 1.2e-4 / 1.0e-4).
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// EMA decay per step (`None`: no EMA). DALL-E 2 uses 0.9999.
    pub ema_decay: Option<f64>,
    /// Diffusion steps of the noise schedule.
    pub num_train_timesteps: usize,
    pub schedule: TrainSchedule,
    /// What the UNet predicts: `epsilon` (Karlo's super-resolution models) or `sample` (x_0).
    /// With few sampling steps from `t = T - 1` an eps model must be accurate to ~1e-5 there
    /// (x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a), sqrt(a_999) = 4.9e-5 for the cosine schedule),
    /// or the first clipped x_0 puts a colour cast into every later step; an x_0 model has no
    /// such amplification. Written to the scheduler config the model is sampled with.
    #[serde(default = "eps")]
    pub prediction_type: PredictionType,
    /// Ratio of the high- to the low-resolution side (4 for 64 -> 256 and 256 -> 1024).
    pub scale_factor: usize,
    /// Side of the training crops; `None`: a quarter of the images' side.
    pub crop_size: Option<usize>,
    /// Augmentation of the low-resolution crop.
    pub augmentation: LowResAugmentation,
    /// Seed of the host RNG (crops, timesteps, noise, augmentation).
    pub seed: u64,
    /// Global gradient-norm clipping (`None`: off).
    #[serde(default)]
    pub max_grad_norm: Option<f32>,
}

impl SuperResTrainConfig {
    /// DALL-E 2's 64 -> 256 stage: cosine schedule, Gaussian blur (kernel 3, sigma 0.6).
    pub fn stage_64_to_256() -> Self {
        SuperResTrainConfig {
            learning_rate: 1.2e-4,
            weight_decay: 0.0,
            ema_decay: Some(0.9999),
            num_train_timesteps: 1000,
            schedule: TrainSchedule::SquaredcosCapV2,
            prediction_type: PredictionType::Epsilon,
            scale_factor: 4,
            crop_size: None,
            augmentation: LowResAugmentation::blur_64_to_256(),
            seed: 0,
            max_grad_norm: None,
        }
    }

    /// DALL-E 2's 256 -> 1024 stage: linear schedule (1e-4 .. 0.02), BSR degradation.
    pub fn stage_256_to_1024() -> Self {
        SuperResTrainConfig {
            learning_rate: 1.0e-4,
            schedule: TrainSchedule::Linear {
                beta_start: 1e-4,
                beta_end: 0.02,
            },
            augmentation: LowResAugmentation::bsr_256_to_1024(),
            ..Self::stage_64_to_256()
        }
    }
}

impl Default for SuperResTrainConfig {
    fn default() -> Self {
        Self::stage_64_to_256()
    }
}

/// What `trainer_state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuperResTrainerState {
    pub step: u64,
    pub train: SuperResTrainConfig,
}

/// One training example pair made from high-resolution images.
#[derive(Debug, Clone)]
pub struct CropPair {
    /// `[B, C, c, c]`: the high-resolution crops (x_0).
    pub crops: Tensor<4>,
    /// `[B, C, c, c]`: the augmented low-resolution crops upsampled back to `c` (the condition).
    pub upsampled: Tensor<4>,
}

/// A super-resolution training loop's state: the UNet on an autodiff device, its EMA, AdamW and
/// the host RNG.
///
/// ```no_run
/// use burn::tensor::{Device, Tensor};
/// use unclip_upsampler::UNet2DModel;
/// use unclip_upsampler::train::{SuperResTrainConfig, SuperResTrainer};
///
/// # fn example(image_batches: Vec<Tensor<4>>) -> Result<(), Box<dyn std::error::Error>> {
/// let device = Device::flex().autodiff();
/// let unet = UNet2DModel::from_pretrained("karlo-v1-alpha/super_res_first", &device)?;
/// let mut trainer = SuperResTrainer::new(unet, SuperResTrainConfig::stage_64_to_256(), &device)?;
/// for images in image_batches {
///     // images: [B, 3, 256, 256] in [-1, 1]; trained on random 64x64 crops.
///     let losses = trainer.train_step(&images)?;
///     if trainer.step % 1000 == 0 {
///         println!("step {} eps mse {:.4}", trainer.step, losses.mse);
///         trainer.save_checkpoint("runs/super_res")?;
///     }
/// }
/// // Later: SuperResTrainer::resume("runs/super_res", &device)?
/// # Ok(())
/// # }
/// ```
pub struct SuperResTrainer {
    /// The optimised model (autodiff device).
    pub model: UNet2DModel,
    /// EMA of the weights (plain device), when enabled.
    pub ema: Option<UNet2DModel>,
    pub config: SuperResTrainConfig,
    /// Optimiser steps taken.
    pub step: u64,
    device: Device,
    optim: ModuleOptimizer,
    noise: SeededNoise,
    objective: TrainingObjective,
    /// The learning rate of the next steps when a schedule set one (`config` keeps the base).
    lr_now: Option<f64>,
}

impl std::fmt::Debug for SuperResTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperResTrainer")
            .field("step", &self.step)
            .field("config", &self.config)
            .finish()
    }
}

impl SuperResTrainer {
    /// Starts training `model` (moved to `device`, which should be an autodiff device such as
    /// `Device::flex().autodiff()`).
    pub fn new(
        model: UNet2DModel,
        config: SuperResTrainConfig,
        device: &Device,
    ) -> Result<Self, DecoderError> {
        Self::with_step(model, None, config, 0, device)
    }

    fn with_step(
        model: UNet2DModel,
        ema: Option<UNet2DModel>,
        config: SuperResTrainConfig,
        step: u64,
        device: &Device,
    ) -> Result<Self, DecoderError> {
        check_common(
            config.learning_rate,
            config.weight_decay,
            config.ema_decay,
            config.num_train_timesteps,
        )?;
        config.augmentation.validate()?;
        if config.scale_factor == 0 {
            return Err(DecoderError::InvalidArgument {
                name: "scale_factor".into(),
                message: "must be positive".into(),
            });
        }
        if let Err(message) = config.schedule.check() {
            return Err(DecoderError::InvalidArgument {
                name: "schedule".into(),
                message,
            });
        }
        let mc = &model.config;
        if mc.in_channels != 2 * mc.out_channels {
            return Err(DecoderError::invalid(
                "in_channels",
                format!(
                    "{} must be 2 * out_channels = {} (noisy image + upsampled low-resolution image)",
                    mc.in_channels,
                    2 * mc.out_channels
                ),
            ));
        }
        let plain = device.clone().inner();
        // Through the plain device, so every parameter becomes a fresh autodiff leaf.
        let model = model.valid().to_device(&plain).to_device(device).train();
        let ema = match (config.ema_decay, ema) {
            (None, _) => None,
            (Some(_), Some(e)) => Some(e.to_device(&plain)),
            (Some(_), None) => Some(model.valid()),
        };
        let optim = AdamWConfig::new()
            .with_weight_decay(config.weight_decay as f32)
            .init();
        Ok(SuperResTrainer {
            model,
            ema,
            optim,
            noise: SeededNoise::new(config.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            objective: TrainingObjective::new(&Self::scheduler_config(&config)),
            device: device.clone(),
            config,
            step,
            lr_now: None,
        })
    }

    /// The run's config as a training checkpoint records it: the training settings and the
    /// UNet's config.
    pub fn run_config(config: &SuperResTrainConfig, unet: &UNet2DConfig) -> serde_json::Value {
        serde_json::json!({ "train": config, "unet": unet })
    }

    /// Saves everything a resume needs (weights with their parameter ids, EMA, AdamW's state,
    /// the random stream's position, the step, the run's config) as `store`'s checkpoint of the
    /// current step: one directory, written atomically (`unclip_nn::CheckpointStore`).
    pub fn save_state(&self, store: &CheckpointStore) -> Result<PathBuf, DecoderError> {
        let online = self.model.valid();
        Ok(TrainSnapshot {
            step: self.step,
            model: &online,
            ema: self.ema.as_ref(),
            optim: &self.optim,
            config: Self::run_config(&self.config, &online.config),
            extra: StreamState::capture(&self.noise, self.lr_now),
        }
        .save(store)?)
    }

    /// Continues the run of `store`'s latest checkpoint exactly where it was saved (`Ok(None)`
    /// when the store has none). With `expected` (the training settings the caller would start
    /// a run with), a checkpoint written with other settings is
    /// `TrainCheckpointError::ConfigMismatch` naming the field.
    pub fn resume_state(
        store: &CheckpointStore,
        expected: Option<&SuperResTrainConfig>,
        device: &Device,
    ) -> Result<Option<Self>, DecoderError> {
        let Some(r) = TrainResume::load(store)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct RunConfig {
            train: SuperResTrainConfig,
            unet: UNet2DConfig,
        }
        let run: RunConfig = r.run_config()?;
        if let Some(expected) = expected {
            r.check_config(&Self::run_config(expected, &run.unet))?;
        }
        let plain = device.clone().inner();
        let model = r.load_model(UNet2DModel::new(&run.unet, &plain)?)?;
        let ema = r.load_ema_if(run.train.ema_decay.is_some(), || {
            UNet2DModel::new(&run.unet, &plain).map_err(|e| r.corrupt(e.to_string()))
        })?;
        let mut t = Self::with_step(model, ema, run.train, r.meta.step, device)?;
        t.optim = r.load_optimizer(t.optim)?;
        (t.noise, t.lr_now) = StreamState::restore(&r)?;
        Ok(Some(t))
    }

    /// The learning rate of the next steps (a schedule's value; `config.learning_rate` stays
    /// the run's base rate).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr_now = Some(lr);
    }

    /// The learning rate the next step uses.
    pub fn learning_rate(&self) -> f64 {
        self.lr_now.unwrap_or(self.config.learning_rate)
    }

    /// The training schedule: the configured prediction type and betas, `fixed_small_log`
    /// variance.
    pub fn scheduler_config(config: &SuperResTrainConfig) -> SchedulerConfig {
        let (beta_schedule, beta_start, beta_end) = config.schedule.betas();
        SchedulerConfig {
            num_train_timesteps: config.num_train_timesteps,
            beta_schedule,
            beta_start,
            beta_end,
            prediction_type: config.prediction_type,
            variance_type: VarianceType::FixedSmallLog,
            ..SchedulerConfig::default()
        }
    }

    /// The weights to sample with: the EMA when enabled, else the model (plain device).
    pub fn inference_model(&self) -> UNet2DModel {
        match &self.ema {
            Some(e) => e.clone(),
            None => self.model.valid(),
        }
    }

    /// The crop side for images of side `min(h, w)`, checked against the scale factor and the
    /// UNet's size factor.
    pub fn crop_size(&self, h: usize, w: usize) -> Result<usize, DecoderError> {
        let f = self.config.scale_factor;
        let c = self.config.crop_size.unwrap_or(h.min(w) / 4);
        let unet_factor = self.model.size_factor();
        if c == 0 || c > h || c > w {
            return Err(DecoderError::InvalidArgument {
                name: "crop_size".into(),
                message: format!("crop {c} does not fit images of {h}x{w}"),
            });
        }
        if !c.is_multiple_of(f) || !c.is_multiple_of(unet_factor) {
            return Err(DecoderError::InvalidArgument {
                name: "crop_size".into(),
                message: format!(
                    "crop {c} must be divisible by the scale factor {f} and by the UNet's size factor {unet_factor}"
                ),
            });
        }
        Ok(c)
    }

    /// Random aligned crops of `images [B, C, H, W]` and their augmented, re-upsampled
    /// low-resolution versions (draws from the trainer's RNG).
    pub fn make_pair(&mut self, images: &Tensor<4>) -> Result<CropPair, DecoderError> {
        let [b, c, h, w] = images.dims();
        let out_c = self.model.config.out_channels;
        if c != out_c || b == 0 {
            return Err(DecoderError::shape(
                "images",
                format!("[B >= 1, {out_c}, H, W] in [-1, 1]"),
                &images.dims(),
            ));
        }
        let side = self.crop_size(h, w)?;
        let f = self.config.scale_factor;
        let images = images.clone().to_device(&self.device);
        let rng = self.noise.rng_mut();
        let crops: Vec<Tensor<4>> = (0..b)
            .map(|i| {
                // Offsets are multiples of f in [0, H - side].
                let oy = (rng.next_u64() % ((h - side) / f + 1) as u64) as usize * f;
                let ox = (rng.next_u64() % ((w - side) / f + 1) as u64) as usize * f;
                images
                    .clone()
                    .slice([i..i + 1, 0..c, oy..oy + side, ox..ox + side])
            })
            .collect();
        let crops = Tensor::cat(crops, 0); // [B, C, side, side]
        let low = resize_bicubic_antialias(crops.clone(), [side / f, side / f]); // [B, C, s, s]
        let low = self
            .config
            .augmentation
            .apply(low, self.noise.rng_mut())?
            .clamp(-1.0, 1.0);
        let upsampled = resize_bicubic_antialias(low, [side, side]); // [B, C, side, side]
        Ok(CropPair {
            crops: crops.detach(),
            upsampled: upsampled.detach(),
        })
    }

    /// The eps-MSE loss on random crops of `images [B, C, H, W]` (in `[-1, 1]`) at random
    /// timesteps (no optimiser step); the terms keep their autodiff graph.
    pub fn loss(&mut self, images: &Tensor<4>) -> Result<LossTerms, DecoderError> {
        let device = self.device.clone();
        let CropPair { crops, upsampled } = self.make_pair(images)?;
        let [b, c, s, _] = crops.dims();
        let ts = self.objective.sample_timesteps(self.noise.rng_mut(), b);
        let noise = self
            .noise
            .randn([b, c, s, s], &device)
            .map_err(unclip_diffusion::DiffusionError::from)?; // [B, C, s, s]
        let x_t = self
            .objective
            .noisy_input(crops.clone(), noise.clone(), &ts)?;
        let t = Tensor::<1>::from_data(
            TensorData::new(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), [b]),
            &device,
        );
        let input = Tensor::cat(vec![x_t.clone(), upsampled], 1); // [B, 2C, s, s]
        let out = self.model.forward(input, t)?; // [B, C, s, s]
        Ok(self.objective.loss(out, crops, noise, x_t, &ts)?)
    }

    /// One AdamW step on random crops of `images [B, C, H, W]`; returns the loss before the
    /// step.
    pub fn train_step(&mut self, images: &Tensor<4>) -> Result<StepLosses, DecoderError> {
        let terms = self.loss(images)?;
        let lr = self.learning_rate();
        let (model, values) = optimise_step(
            &mut self.optim,
            lr,
            self.model.clone(),
            terms,
            &mut self.ema,
            self.config.ema_decay,
            self.config.max_grad_norm,
            "images",
            self.step,
        )?;
        self.model = model;
        self.step += 1;
        Ok(values)
    }

    /// Writes a checkpoint folder (layout in the module docs); every file atomically, the state
    /// file last.
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<(), DecoderError> {
        let dir = dir.as_ref();
        self.model.valid().save_pretrained(dir.join("online"))?;
        self.inference_model().save_pretrained(dir)?;
        let state = SuperResTrainerState {
            step: self.step,
            train: self.config.clone(),
        };
        unclip_nn::write_json(dir.join(STATE_FILE), &state)?;
        Ok(())
    }

    /// Resumes from a folder written by [`Self::save_checkpoint`] on `device` (autodiff).
    pub fn resume(dir: impl AsRef<Path>, device: &Device) -> Result<Self, DecoderError> {
        let dir = dir.as_ref();
        let state: SuperResTrainerState = unclip_nn::read_json(dir.join(STATE_FILE))?;
        let plain = device.clone().inner();
        let model = UNet2DModel::from_pretrained(dir.join("online"), &plain)?;
        let ema = match state.train.ema_decay {
            Some(_) => Some(UNet2DModel::from_pretrained(dir, &plain)?),
            None => None,
        };
        Self::with_step(model, ema, state.train, state.step, device)
    }
}

impl unclip_nn::Trainer for SuperResTrainer {
    /// High-resolution images `[B, C, H, W]` in `[-1, 1]` (cropped by the trainer).
    type Batch = Tensor<4>;
    type Error = DecoderError;
    fn step(&self) -> u64 {
        self.step
    }
    fn set_learning_rate(&mut self, lr: f64) {
        SuperResTrainer::set_learning_rate(self, lr)
    }
    fn learning_rate(&self) -> f64 {
        SuperResTrainer::learning_rate(self)
    }
    fn train_step(&mut self, images: &Tensor<4>) -> Result<f32, DecoderError> {
        SuperResTrainer::train_step(self, images).map(|l| l.loss)
    }
    fn save(&self, store: &CheckpointStore) -> Result<PathBuf, DecoderError> {
        self.save_state(store)
    }
}
