//! Training the prior (DALL-E 2 §2.2, Karlo's prior recipe): the network predicts the clean,
//! normalised image embedding x_0 from x_t (`prediction_type = "sample"`), trained with MSE on
//! x_0; the text conditioning of each example is replaced by the empty prompt's embeddings with
//! probability 10% so classifier-free guidance works; an exponential moving average (EMA) of the
//! weights is kept for sampling.
//!
//! Forward diffusion and the loss come from `unclip-diffusion` ([`TrainingObjective`] with the
//! `squaredcos_cap_v2` schedule of Karlo's prior scheduler, `prediction_type = "sample"`):
//! `x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`, loss `mean((f(x_t, t, text) - x_0)^2)`.
//! Timesteps, noise and the dropout draws come from one seeded host generator
//! ([`SeededNoise`]), so a run is reproducible on every device.
//!
//! Checkpoints ([`PriorTrainer::save_checkpoint`]) use the diffusers folder layout, every file
//! written atomically:
//!
//! ```text
//! <dir>/config.json                              the prior config
//! <dir>/diffusion_pytorch_model.safetensors      EMA weights (the model when EMA is off): what
//!                                                PriorTransformer::from_pretrained(<dir>) loads
//! <dir>/online/config.json                       the raw (optimised) weights, same layout
//! <dir>/online/diffusion_pytorch_model.safetensors
//! <dir>/trainer_state.json                       step and training settings (written last)
//! ```
//!
//! That folder is the run's export (what sampling and `export-shapes` read); a resume that
//! continues the run exactly reads the training checkpoints instead
//! ([`PriorTrainer::save_state`] / [`PriorTrainer::resume_state`], `unclip_nn::CheckpointStore`):
//! one directory per save, written atomically, holding the weights with their parameter ids,
//! the EMA, Adam's moments and step counts, the random stream's position, the step and the run's
//! config. [`PriorTrainer::resume`] (the export folder) restarts Adam's moments and reseeds the
//! stream: it is for importing weights, not for continuing a run.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::tensor::{Bool, Device, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};
use unclip_diffusion::{
    NoiseSource, PredictionType, SchedulerConfig, SeededNoise, StreamState, TrainingObjective,
};
use unclip_nn::{CheckpointStore, TrainResume, TrainSnapshot};

use crate::{PriorConditioning, PriorError, PriorTransformer, PriorTransformerConfig};

/// Settings of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Adam learning rate.
    pub learning_rate: f64,
    /// EMA decay per step (`None`: no EMA). DALL-E 2 uses 0.9999.
    pub ema_decay: Option<f64>,
    /// Probability of replacing an example's text conditioning with the unconditional one.
    pub cond_drop_prob: f64,
    /// Diffusion steps of the noise schedule.
    pub num_train_timesteps: usize,
    /// Seed of the host RNG (timesteps, noise, dropout).
    pub seed: u64,
    /// Global gradient-norm clipping (`None`: off).
    #[serde(default)]
    pub max_grad_norm: Option<f32>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            learning_rate: 1e-4,
            ema_decay: Some(0.9999),
            cond_drop_prob: 0.1,
            num_train_timesteps: 1000,
            seed: 0,
            max_grad_norm: None,
        }
    }
}

/// One training batch.
#[derive(Debug, Clone)]
pub struct PriorBatch {
    /// CLIP image embeddings, un-normalised `[B, clip_embed_dim]` (the target x_0 before
    /// `(x - clip_mean) / clip_std`).
    pub image_embeddings: Tensor<2>,
    /// The text side `[B, ...]`.
    pub cond: PriorConditioning,
}

/// What `trainer_state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub train: TrainConfig,
}

/// A training loop's state: the model on an autodiff device, its EMA, Adam and the host RNG.
pub struct PriorTrainer {
    /// The optimised model (autodiff device).
    pub model: PriorTransformer,
    /// EMA of the weights (plain device), when enabled.
    pub ema: Option<PriorTransformer>,
    /// The unconditional (empty prompt) conditioning, one row, used for conditioning dropout.
    pub uncond: PriorConditioning,
    pub config: TrainConfig,
    /// Optimiser steps taken.
    pub step: u64,
    optim: ModuleOptimizer,
    noise: SeededNoise,
    objective: TrainingObjective,
    /// The learning rate of the next steps when a schedule set one (`config` keeps the base).
    lr_now: Option<f64>,
}

impl std::fmt::Debug for PriorTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorTrainer")
            .field("step", &self.step)
            .field("config", &self.config)
            .finish()
    }
}

impl PriorTrainer {
    /// Starts training `model` (moved to `device`, which should be an autodiff device such as
    /// `Device::flex().autodiff()`). `uncond` is the empty prompt's conditioning (one row).
    pub fn new(
        model: PriorTransformer,
        uncond: PriorConditioning,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self, PriorError> {
        Self::with_step(model, None, uncond, config, 0, device)
    }

    fn with_step(
        model: PriorTransformer,
        ema: Option<PriorTransformer>,
        uncond: PriorConditioning,
        config: TrainConfig,
        step: u64,
        device: &Device,
    ) -> Result<Self, PriorError> {
        if !(0.0..=1.0).contains(&config.cond_drop_prob) {
            return Err(PriorError::InvalidArgument {
                name: "cond_drop_prob",
                message: format!("{} is not in [0, 1]", config.cond_drop_prob),
            });
        }
        if let Some(d) = config.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return Err(PriorError::InvalidArgument {
                name: "ema_decay",
                message: format!("{d} is not in [0, 1)"),
            });
        }
        if config.num_train_timesteps == 0 {
            return Err(PriorError::InvalidArgument {
                name: "num_train_timesteps",
                message: "must be positive".into(),
            });
        }
        if uncond.batch() != 1 {
            return Err(PriorError::InvalidArgument {
                name: "uncond",
                message: format!("expected one row, got {}", uncond.batch()),
            });
        }
        // Through the plain device, so every parameter becomes a fresh autodiff leaf.
        let model = model
            .valid()
            .to_device(&device.clone().inner())
            .to_device(device)
            .train();
        let ema = match (config.ema_decay, ema) {
            (None, _) => None,
            (Some(_), Some(e)) => Some(e.to_device(&device.clone().inner())),
            (Some(_), None) => Some(model.valid()),
        };
        let uncond = PriorConditioning {
            proj_embedding: uncond.proj_embedding.to_device(device),
            encoder_hidden_states: uncond.encoder_hidden_states.map(|t| t.to_device(device)),
            attention_mask: uncond.attention_mask.map(|t| t.to_device(device)),
        };
        Ok(PriorTrainer {
            model,
            ema,
            uncond,
            optim: AdamConfig::new().init(),
            noise: SeededNoise::new(config.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            objective: TrainingObjective::new(&Self::scheduler_config(&config)),
            config,
            step,
            lr_now: None,
        })
    }

    /// The run's config as a training checkpoint records it: the training settings and the
    /// model config.
    pub fn run_config(config: &TrainConfig, model: &PriorTransformerConfig) -> serde_json::Value {
        serde_json::json!({ "train": config, "model": model })
    }

    /// Saves everything a resume needs (weights with their parameter ids, EMA, Adam's state,
    /// the random stream's position, the step, the run's config) as `store`'s checkpoint of the
    /// current step: one directory, written atomically (`unclip_nn::CheckpointStore`).
    pub fn save_state(&self, store: &CheckpointStore) -> Result<PathBuf, PriorError> {
        Ok(TrainSnapshot {
            step: self.step,
            model: &self.model.valid(),
            ema: self.ema.as_ref(),
            optim: &self.optim,
            config: Self::run_config(&self.config, &self.model.config),
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
        uncond: PriorConditioning,
        expected: Option<&TrainConfig>,
        device: &Device,
    ) -> Result<Option<Self>, PriorError> {
        let Some(r) = TrainResume::load(store)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct RunConfig {
            train: TrainConfig,
            model: PriorTransformerConfig,
        }
        let run: RunConfig = r.run_config()?;
        if let Some(expected) = expected {
            r.check_config(&Self::run_config(expected, &run.model))?;
        }
        let plain = device.clone().inner();
        let model = r.load_model(PriorTransformer::new(&run.model, &plain)?)?;
        let ema = r.load_ema_if(run.train.ema_decay.is_some(), || {
            PriorTransformer::new(&run.model, &plain).map_err(|e| r.corrupt(e.to_string()))
        })?;
        let mut t = Self::with_step(model, ema, uncond, run.train, r.meta.step, device)?;
        t.optim = r.load_optimizer(t.optim)?;
        (t.noise, t.lr_now) = StreamState::restore(&r)?;
        Ok(Some(t))
    }

    /// The training schedule: Karlo's prior scheduler (`squaredcos_cap_v2`, x_0 prediction).
    pub fn scheduler_config(config: &TrainConfig) -> SchedulerConfig {
        SchedulerConfig {
            num_train_timesteps: config.num_train_timesteps,
            prediction_type: PredictionType::Sample,
            ..SchedulerConfig::default()
        }
    }

    /// The weights to sample with: the EMA when enabled, else the model (plain device).
    pub fn inference_model(&self) -> PriorTransformer {
        match &self.ema {
            Some(e) => e.clone(),
            None => self.model.valid(),
        }
    }

    /// The x_0-prediction loss of `batch` at random timesteps, with conditioning dropout
    /// (no optimiser step). Returns the scalar loss tensor (autodiff graph attached).
    pub fn loss(&mut self, batch: &PriorBatch) -> Result<Tensor<1>, PriorError> {
        let device = self.model.clip_mean.val().device();
        let x = batch.image_embeddings.clone().to_device(&device);
        let [b, e] = x.dims();
        if batch.cond.batch() != b {
            return Err(PriorError::shape(
                "cond.proj_embedding",
                format!("[{b}, ..]"),
                &batch.cond.proj_embedding.dims(),
            ));
        }
        // Normalised target (statistics are constants, never trained).
        let mean = self.model.clip_mean.val().detach();
        let std = self.model.clip_std.val().detach();
        let x0 = (x - mean) / std; // [B, E]

        // Host draws: timesteps, noise, dropout.
        let ts = self.objective.sample_timesteps(self.noise.rng_mut(), b);
        let noise = self
            .noise
            .randn([b, e], &device)
            .map_err(unclip_diffusion::DiffusionError::from)?; // [B, E]
        let p = self.config.cond_drop_prob;
        let keep: Vec<f32> = (0..b)
            .map(|_| {
                let u = (self.noise.rng_mut().next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if u < p { 0.0 } else { 1.0 }
            })
            .collect();
        let x_t = self.objective.noisy_input(x0.clone(), noise.clone(), &ts)?; // [B, E]
        let t = Tensor::<1>::from_data(
            TensorData::new(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), [b]),
            &device,
        );

        let cond = self.drop_conditioning(&batch.cond, &keep, &device)?;
        let pred = self.model.forward(x_t.clone(), t, &cond)?; // [B, E]
        // prediction_type = sample: MSE against x_0.
        Ok(self.objective.loss(pred, x0, noise, x_t, &ts)?.loss)
    }

    /// Replaces rows whose `keep` is 0 by the unconditional conditioning.
    fn drop_conditioning(
        &self,
        cond: &PriorConditioning,
        keep: &[f32],
        device: &Device,
    ) -> Result<PriorConditioning, PriorError> {
        let b = keep.len();
        let k = Tensor::<1>::from_data(TensorData::new(keep.to_vec(), [b]), device); // [B]
        let u = &self.uncond;
        let mix2 = |c: Tensor<2>, un: Tensor<2>| {
            let [_, d] = c.dims();
            let k2 = k.clone().reshape([b, 1]);
            c.to_device(device) * k2.clone() + un.expand([b, d]) * (k2.neg() + 1.0)
        };
        let proj_embedding = mix2(cond.proj_embedding.clone(), u.proj_embedding.clone());
        let encoder_hidden_states = match (&cond.encoder_hidden_states, &u.encoder_hidden_states) {
            (Some(c), Some(un)) => {
                let [_, l, d] = c.dims();
                let k3 = k.clone().reshape([b, 1, 1]);
                Some(
                    c.clone().to_device(device) * k3.clone()
                        + un.clone().expand([b, l, d]) * (k3.neg() + 1.0),
                )
            }
            (None, None) => None,
            _ => {
                return Err(PriorError::InvalidArgument {
                    name: "uncond",
                    message: "encoder_hidden_states present in only one of cond / uncond".into(),
                });
            }
        };
        let attention_mask: Option<Tensor<2, Bool>> =
            match (&cond.attention_mask, &u.attention_mask) {
                (Some(c), Some(un)) => {
                    let [_, l] = c.dims();
                    let drop = k.clone().reshape([b, 1]).lower_elem(0.5).expand([b, l]); // [B, T]
                    Some(
                        c.clone()
                            .to_device(device)
                            .int()
                            .mask_where(drop, un.clone().int().expand([b, l]))
                            .equal_elem(1),
                    )
                }
                (None, None) => None,
                _ => {
                    return Err(PriorError::InvalidArgument {
                        name: "uncond",
                        message: "attention_mask present in only one of cond / uncond".into(),
                    });
                }
            };
        Ok(PriorConditioning {
            proj_embedding,
            encoder_hidden_states,
            attention_mask,
        })
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

    /// One optimiser step on `batch`; returns the loss before the step.
    pub fn train_step(&mut self, batch: &PriorBatch) -> Result<f32, PriorError> {
        let loss = self.loss(batch)?;
        let value: f32 = loss.clone().into_scalar::<f32>();
        let lr = self.learning_rate();
        let (model, _norm) = unclip_nn::apply_gradients(
            &mut self.optim,
            lr,
            self.model.clone(),
            loss,
            self.config.max_grad_norm,
        );
        self.model = model;
        self.step += 1;
        if let (Some(decay), Some(ema)) = (self.config.ema_decay, self.ema.take()) {
            self.ema = Some(unclip_nn::ema_update(ema, &self.model.valid(), decay));
        }
        Ok(value)
    }

    /// Writes a checkpoint folder (layout in the module docs); every file atomically, the state
    /// file last.
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<(), PriorError> {
        let dir = dir.as_ref();
        self.model.valid().save_pretrained(dir.join("online"))?;
        self.inference_model().save_pretrained(dir)?;
        let state = TrainerState {
            step: self.step,
            train: self.config.clone(),
        };
        unclip_nn::write_json(dir.join("trainer_state.json"), &state)?;
        Ok(())
    }

    /// Resumes from a folder written by [`Self::save_checkpoint`] on `device` (autodiff).
    pub fn resume(
        dir: impl AsRef<Path>,
        uncond: PriorConditioning,
        device: &Device,
    ) -> Result<Self, PriorError> {
        let dir = dir.as_ref();
        let state: TrainerState = unclip_nn::read_json(dir.join("trainer_state.json"))?;
        let model = PriorTransformer::from_pretrained(dir.join("online"), device)?;
        let ema = match state.train.ema_decay {
            Some(_) => Some(PriorTransformer::from_pretrained(
                dir,
                &device.clone().inner(),
            )?),
            None => None,
        };
        Self::with_step(model, ema, uncond, state.train, state.step, device)
    }
}

impl unclip_nn::Trainer for PriorTrainer {
    type Batch = PriorBatch;
    type Error = PriorError;
    fn step(&self) -> u64 {
        self.step
    }
    fn set_learning_rate(&mut self, lr: f64) {
        PriorTrainer::set_learning_rate(self, lr)
    }
    fn learning_rate(&self) -> f64 {
        PriorTrainer::learning_rate(self)
    }
    fn train_step(&mut self, batch: &PriorBatch) -> Result<f32, PriorError> {
        PriorTrainer::train_step(self, batch)
    }
    fn save(&self, store: &CheckpointStore) -> Result<PathBuf, PriorError> {
        self.save_state(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PriorTransformerConfig;

    #[test]
    fn conditioning_dropout_swaps_in_the_unconditional_rows() {
        let device = Device::flex();
        let cfg = PriorTransformerConfig::tiny(4, 3, 1, 4, 1);
        let model = PriorTransformer::new(&cfg, &device).unwrap();
        let uncond = PriorConditioning {
            proj_embedding: Tensor::full([1, 4], -1.0, &device),
            encoder_hidden_states: Some(Tensor::full([1, 3, 4], -2.0, &device)),
            attention_mask: Some(
                Tensor::<2, burn::tensor::Int>::from_ints([[1, 0, 0]], &device).equal_elem(1),
            ),
        };
        let trainer = PriorTrainer::new(
            model,
            uncond,
            TrainConfig::default(),
            &device.clone().autodiff(),
        )
        .unwrap();
        let cond = PriorConditioning {
            proj_embedding: Tensor::ones([2, 4], &device),
            encoder_hidden_states: Some(Tensor::ones([2, 3, 4], &device)),
            attention_mask: Some(
                Tensor::<2, burn::tensor::Int>::ones([2, 3], &device).equal_elem(1),
            ),
        };
        let ad = device.clone().autodiff();
        let out = trainer.drop_conditioning(&cond, &[1.0, 0.0], &ad).unwrap();
        let v = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let p = v(out.proj_embedding);
        assert_eq!(p, vec![1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]);
        let h = v(out.encoder_hidden_states.unwrap().reshape([2, 12]));
        assert!(h[..12].iter().all(|&v| v == 1.0) && h[12..].iter().all(|&v| v == -2.0));
        let m = v(out.attention_mask.unwrap().float());
        assert_eq!(m, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    }
}
