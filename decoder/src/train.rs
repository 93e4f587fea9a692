//! Training the unCLIP decoder (DALL-E 2 §2.1, GLIDE / improved DDPM recipe): the
//! `UnCLIPTextProjModel` and the `UNet2DConditionModel` are optimised together on
//! `(image, CLIP image embedding, CLIP text embedding, text hidden states, text mask)` batches.
//!
//! - Objective: the UNet outputs `[B, 2C, S, S]` (eps + learned-range variance values); the loss
//!   is the improved-DDPM hybrid `MSE(eps) + lambda * L_vlb` with `lambda = 0.001` (GLIDE,
//!   Nichol & Dhariwal), from `unclip-diffusion`'s [`TrainingObjective`] with Karlo's decoder
//!   schedule (`squaredcos_cap_v2`, eps prediction, `learned_range`), `T0Likelihood::
//!   DiscretizedGaussian` (images in `[-1, 1]`, 256 levels).
//! - Conditioning dropout (DALL-E 2: "randomly setting the CLIP embeddings to zero (or a learned
//!   embedding) 10% of the time, and randomly dropping the text caption 50% of the time"):
//!   a dropped image embedding is replaced by text_proj's learned
//!   `learned_classifier_free_guidance_embeddings` (exactly what text_proj puts in the
//!   unconditional rows under classifier-free guidance, so sampling with guidance sees what
//!   training saw); a dropped caption is replaced by the empty prompt's conditioning (text
//!   embedding, hidden states and mask), passed in by the caller as in `PriorTrainer`.
//! - AdamW, an exponential moving average (EMA) of both models, and atomic checkpoints.
//!
//! Timesteps, noise and the dropout draws come from one seeded host generator
//! ([`SeededNoise`]), so a run is reproducible on every device.
//!
//! Checkpoint layout ([`DecoderTrainer::save_checkpoint`]), every file written atomically
//! (temporary file + rename), the state file last:
//!
//! ```text
//! <dir>/text_proj/config.json                          EMA text_proj (the model when EMA is off):
//! <dir>/text_proj/diffusion_pytorch_model.safetensors  UnCLIPTextProjModel::from_pretrained
//! <dir>/decoder/config.json                            EMA decoder UNet:
//! <dir>/decoder/diffusion_pytorch_model.safetensors    UNet2DConditionModel::from_pretrained
//! <dir>/online/text_proj/...                           the raw (optimised) weights, same layout
//! <dir>/online/decoder/...
//! <dir>/trainer_state.json                             step and training settings
//! ```
//!
//! The weight files carry diffusers' key names (`….to_out.0.weight`), so diffusers reads them
//! too. That folder is the run's export; a resume that continues the run exactly reads the
//! training checkpoints instead ([`DecoderTrainer::save_state`] /
//! [`DecoderTrainer::resume_state`], `unclip_nn::CheckpointStore`: one directory per save,
//! written atomically, with the weights and their parameter ids, the EMA, AdamW's moments and
//! step counts, the random stream's position, the step and the run's config).
//! [`DecoderTrainer::resume`] (the export folder) restarts AdamW's moments and reseeds the
//! stream: it imports weights, it does not continue a run exactly.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::store::ModuleSnapshot;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};
use unclip_diffusion::{
    HybridLossConfig, LossTerms, LossWeighting, NoiseSource, PredictionType, SchedulerConfig,
    SeededNoise, StreamState, T0Likelihood, TrainSchedule, TrainingObjective, VarianceType,
};
use unclip_nn::{CheckpointStore, LoadError, TrainResume, TrainSnapshot};

use crate::UNet2DConditionConfig;
use crate::config::TextProjConfig;
use crate::{DecoderError, TextConditioning, UNet2DConditionModel, UnCLIPTextProjModel};

/// Stem of the weights file (`.safetensors`).
pub const WEIGHTS_STEM: &str = "diffusion_pytorch_model";
/// Name of the config file.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the trainer state file.
pub const STATE_FILE: &str = "trainer_state.json";

// ---------------------------------------------------------------------------------------------
// Shared helpers (also used by `unclip-upsampler`'s trainer).
// ---------------------------------------------------------------------------------------------

/// One EMA update (shared with every stage's trainer; lives in `unclip-nn`).
pub use unclip_nn::ema_update;

/// Writes `dir/config.json` (`config` with `_class_name` added) and
/// `dir/diffusion_pytorch_model.safetensors` (f32; each module path turned into a checkpoint key
/// by `key`), each atomically. The safetensors header carries `{"format": "pt"}` as
/// diffusers / transformers write it.
pub fn save_diffusers_folder<M: ModuleSnapshot>(
    module: &M,
    config: &impl Serialize,
    class_name: &str,
    dir: &Path,
    key: impl Fn(&str) -> String,
) -> Result<(), DecoderError> {
    unclip_nn::save_safetensors_with(module, dir.join(format!("{WEIGHTS_STEM}.safetensors")), key)?;

    let cpath = dir.join(CONFIG_FILE);
    let mut value = serde_json::to_value(config).map_err(|e| LoadError::Write {
        path: cpath.clone(),
        message: e.to_string(),
    })?;
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "_class_name".to_string(),
            serde_json::Value::String(class_name.to_string()),
        );
    }
    unclip_nn::write_json(&cpath, &value)?;
    Ok(())
}

/// Module path -> checkpoint key for every UNet built from this crate's blocks (the inverse of
/// [`crate::DECODER_KEYMAP`]: diffusers' `to_out` is `ModuleList([Linear, Dropout])`).
pub fn decoder_save_key(module_path: &str) -> String {
    module_path.replace(".to_out.", ".to_out.0.")
}

/// A uniform draw in `[0, 1)` (53 random bits).
pub fn uniform01<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// `keep[i] = 0` with probability `p`, else 1.
fn keep_mask<R: Rng + ?Sized>(rng: &mut R, b: usize, p: f64) -> Vec<f32> {
    (0..b)
        .map(|_| if uniform01(rng) < p { 0.0 } else { 1.0 })
        .collect()
}

pub(crate) fn check_prob(name: &str, p: f64) -> Result<(), DecoderError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(DecoderError::InvalidArgument {
            name: name.into(),
            message: format!("{p} is not in [0, 1]"),
        })
    }
}

/// One optimiser step shared by the decoder and super-resolution trainers: refuses a non-finite
/// loss (naming `input` and the step), backpropagates, clips the global gradient norm to
/// `max_grad_norm` when set, steps AdamW and updates the EMA copy.
#[allow(clippy::too_many_arguments)]
pub fn optimise_step<M: Module>(
    optim: &mut ModuleOptimizer,
    learning_rate: f64,
    model: M,
    terms: LossTerms,
    ema: &mut Option<M>,
    ema_decay: Option<f64>,
    max_grad_norm: Option<f32>,
    input: &str,
    step: u64,
) -> Result<(M, StepLosses), DecoderError> {
    let values = StepLosses::from_terms(&terms);
    if !values.loss.is_finite() {
        return Err(DecoderError::InvalidArgument {
            name: input.into(),
            message: format!(
                "the loss is not finite ({}) at step {step}: check the inputs' range and the learning rate",
                values.loss
            ),
        });
    }
    let (model, _norm) =
        unclip_nn::apply_gradients(optim, learning_rate, model, terms.loss, max_grad_norm);
    if let (Some(decay), Some(e)) = (ema_decay, ema.take()) {
        *ema = Some(ema_update(e, &model.valid(), decay));
    }
    Ok((model, values))
}

/// Checks the shared optimiser / EMA settings of a training config.
pub fn check_common(
    learning_rate: f64,
    weight_decay: f64,
    ema_decay: Option<f64>,
    num_train_timesteps: usize,
) -> Result<(), DecoderError> {
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        return Err(DecoderError::InvalidArgument {
            name: "learning_rate".into(),
            message: format!("{learning_rate} is not a positive number"),
        });
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(DecoderError::InvalidArgument {
            name: "weight_decay".into(),
            message: format!("{weight_decay} is not a non-negative number"),
        });
    }
    if let Some(d) = ema_decay
        && !(0.0..1.0).contains(&d)
    {
        return Err(DecoderError::InvalidArgument {
            name: "ema_decay".into(),
            message: format!("{d} is not in [0, 1)"),
        });
    }
    if num_train_timesteps == 0 {
        return Err(DecoderError::InvalidArgument {
            name: "num_train_timesteps".into(),
            message: "must be positive".into(),
        });
    }
    Ok(())
}

/// The loss values of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    /// What was minimised (`mse + lambda * T * vlb`, or `mse`).
    pub loss: f32,
    /// The simple MSE on eps.
    pub mse: f32,
    /// Mean VLB term in bits per dimension (learned-range variance only).
    pub vlb: Option<f32>,
}

impl StepLosses {
    /// Host values of a [`LossTerms`].
    pub fn from_terms(terms: &LossTerms) -> Self {
        StepLosses {
            loss: terms.loss.clone().into_scalar::<f32>(),
            mse: terms.mse.clone().into_scalar::<f32>(),
            vlb: terms.vlb.as_ref().map(|v| v.clone().into_scalar::<f32>()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Saving the decoder models in the diffusers layout.
// ---------------------------------------------------------------------------------------------

impl UNet2DConditionModel {
    /// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` (f32, diffusers
    /// keys), each atomically, so [`UNet2DConditionModel::from_pretrained`] (and diffusers) reads
    /// the folder back.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<(), DecoderError> {
        save_diffusers_folder(
            self,
            &self.config,
            "UNet2DConditionModel",
            dir.as_ref(),
            decoder_save_key,
        )
    }
}

impl UnCLIPTextProjModel {
    /// The config this model was built from (recovered from its layer shapes).
    pub fn config(&self) -> TextProjConfig {
        TextProjConfig {
            clip_extra_context_tokens: self.clip_extra_context_tokens,
            clip_embeddings_dim: self.clip_embeddings_dim(),
            time_embed_dim: self.embedding_proj.d_out(),
            cross_attention_dim: self.cross_attention_dim(),
        }
    }

    /// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` (the keys are the
    /// module paths, as in diffusers), each atomically, so
    /// [`UnCLIPTextProjModel::from_pretrained`] reads the folder back.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<(), DecoderError> {
        save_diffusers_folder(
            self,
            &self.config(),
            "UnCLIPTextProjModel",
            dir.as_ref(),
            |k| k.to_string(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The decoder trainer.
// ---------------------------------------------------------------------------------------------

fn one() -> f64 {
    1.0
}

fn epsilon() -> PredictionType {
    PredictionType::Epsilon
}

/// Settings of a decoder training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderTrainConfig {
    /// AdamW learning rate (DALL-E 2's decoder: 1.2e-4).
    pub learning_rate: f64,
    /// AdamW decoupled weight decay (DALL-E 2's decoder: 0).
    pub weight_decay: f64,
    /// EMA decay per step (`None`: no EMA). DALL-E 2 uses 0.9999.
    pub ema_decay: Option<f64>,
    /// Probability of replacing an example's CLIP image embedding by text_proj's learned
    /// unconditional embedding (DALL-E 2: 10%).
    pub image_embedding_drop_prob: f64,
    /// Probability of replacing an example's caption by the empty prompt (DALL-E 2: 50%).
    pub caption_drop_prob: f64,
    /// Weight of `L_vlb` in the hybrid loss (improved DDPM / GLIDE: 0.001).
    pub vlb_weight: f32,
    /// Diffusion steps of the noise schedule.
    pub num_train_timesteps: usize,
    /// The betas (default: cosine, Karlo's decoder scheduler). The cosine schedule was made for
    /// 32x32-64x64 natural images; flat, low-detail images keep their colours and layout in
    /// `x_t` up to `t ~ 950` under it, so a model can denoise from `x_t` alone and learn to
    /// ignore its conditioning, which then only matters in the last few percent of `t` (measured
    /// on the shapes world, `docs/shapes.md`). DDPM's linear 1e-4 .. 0.02 destroys them by
    /// `t ~ 700`. Written to the scheduler config the model is sampled with.
    #[serde(default)]
    pub schedule: TrainSchedule,
    /// What the UNet's first `C` channels predict: `epsilon` (Karlo) or `sample` (x_0). An eps
    /// model sampled from `t = 999` must be accurate to ~1e-5 there (x_0 = (x_t - sqrt(1 - a)
    /// eps) / sqrt(a), sqrt(a_999) = 4.9e-5), or the first clipped x_0 is noise the later steps
    /// keep; a small, briefly trained decoder is not, an x_0 model has no such amplification.
    #[serde(default = "epsilon")]
    pub prediction_type: PredictionType,
    /// Timesteps are drawn uniformly from `min_timestep..num_train_timesteps` (default 0).
    /// Raising it for a while trains the high-noise end, where at small resolutions the cosine
    /// schedule leaves x_t with enough signal below t ~ 900 that a model can ignore its
    /// conditioning everywhere else (measured on the shapes decoder: x_0 error at t = 500 and
    /// 800 the same with right, shuffled and no conditioning).
    #[serde(default)]
    pub min_timestep: usize,
    /// Timesteps are drawn below this (default `None`: `num_train_timesteps`), for every row.
    /// A run restricted to the low-noise end trains a decoder for
    /// [`crate::LowNoiseExpert`] (its `below`).
    #[serde(default)]
    pub max_timestep: Option<usize>,
    /// Fraction of each batch whose timesteps are drawn from `min_timestep..T`; the other rows
    /// are drawn from `0..T` (default 1: the whole batch; with `min_timestep` 0 the two are the
    /// same).
    #[serde(default = "one")]
    pub high_noise_fraction: f64,
    /// Per-timestep weighting of the simple loss (default uniform, GLIDE's and Karlo's). With
    /// x_0 prediction the uniform loss barely penalises a slightly blurred reconstruction at low
    /// noise (measured on the shapes decoder: x_0 error 0.012 at t = 10, about what it is at
    /// t = 500, and blurred samples); `snr_plus_one` weights the low-noise end as v-prediction
    /// does.
    #[serde(default)]
    pub loss_weighting: LossWeighting,
    /// Seed of the host RNG (timesteps, noise, dropout).
    pub seed: u64,
    /// Global gradient-norm clipping (`None`: off).
    #[serde(default)]
    pub max_grad_norm: Option<f32>,
}

impl Default for DecoderTrainConfig {
    fn default() -> Self {
        DecoderTrainConfig {
            learning_rate: 1.2e-4,
            weight_decay: 0.0,
            ema_decay: Some(0.9999),
            image_embedding_drop_prob: 0.1,
            caption_drop_prob: 0.5,
            vlb_weight: 0.001,
            num_train_timesteps: 1000,
            schedule: TrainSchedule::SquaredcosCapV2,
            prediction_type: PredictionType::Epsilon,
            min_timestep: 0,
            max_timestep: None,
            high_noise_fraction: 1.0,
            loss_weighting: LossWeighting::Uniform,
            seed: 0,
            max_grad_norm: None,
        }
    }
}

/// One decoder training batch.
#[derive(Debug, Clone)]
pub struct DecoderBatch {
    /// `[B, C, S, S]`: images in `[-1, 1]` (x_0).
    pub images: Tensor<4>,
    /// `[B, E]`: CLIP image embeddings of the images.
    pub image_embeddings: Tensor<2>,
    /// The captions' CLIP conditioning: `prompt_embeds [B, E]`, `hidden_states [B, T, E]`,
    /// `mask [B, T]`.
    pub text: TextConditioning,
    /// Optional `[B, 1, S, S]` weights of the simple loss per pixel (finite, >= 0, a positive
    /// sum per image; each image's error is normalised by its weights' sum, so uniform weights
    /// are the plain loss; see `TrainingObjective::loss_with_pixel_weights`). `None`: the plain
    /// loss (GLIDE, Karlo).
    pub pixel_weights: Option<Tensor<4>>,
}

/// The models the decoder trainer optimises together.
#[derive(Module, Debug)]
pub struct DecoderModels {
    pub text_proj: UnCLIPTextProjModel,
    pub unet: UNet2DConditionModel,
}

/// What `trainer_state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecoderTrainerState {
    pub step: u64,
    pub train: DecoderTrainConfig,
}

/// A decoder training loop's state: text_proj + UNet on an autodiff device, their EMA, AdamW
/// and the host RNG.
///
/// ```no_run
/// use burn::tensor::Device;
/// use unclip_decoder::train::{DecoderBatch, DecoderTrainConfig, DecoderTrainer};
/// use unclip_decoder::{TextConditioning, UNet2DConditionModel, UnCLIPTextProjModel};
///
/// # fn example(batches: Vec<DecoderBatch>, empty_prompt: TextConditioning) -> Result<(), Box<dyn std::error::Error>> {
/// let device = Device::flex().autodiff();
/// let unet = UNet2DConditionModel::from_pretrained("karlo-v1-alpha/decoder", &device)?;
/// let text_proj = UnCLIPTextProjModel::from_pretrained("karlo-v1-alpha/text_proj", &device)?;
/// // The empty prompt's CLIP conditioning (one row): prompt_embeds [1, E],
/// // hidden_states [1, T, E], mask [1, T].
/// let uncond: TextConditioning = empty_prompt;
/// let mut trainer =
///     DecoderTrainer::new(text_proj, unet, uncond, DecoderTrainConfig::default(), &device)?;
/// for batch in batches {
///     let losses = trainer.train_step(&batch)?;
///     println!("step {} loss {:.4} (mse {:.4})", trainer.step, losses.loss, losses.mse);
///     if trainer.step % 1000 == 0 {
///         trainer.save_checkpoint("runs/decoder")?;
///     }
/// }
/// // Later: DecoderTrainer::resume("runs/decoder", uncond_again, &device)?
/// # Ok(())
/// # }
/// ```
pub struct DecoderTrainer {
    /// The optimised models (autodiff device).
    pub models: DecoderModels,
    /// EMA of the weights (plain device), when enabled.
    pub ema: Option<DecoderModels>,
    /// The empty prompt's conditioning (one row), used for caption dropout.
    pub uncond: TextConditioning,
    pub config: DecoderTrainConfig,
    /// Optimiser steps taken.
    pub step: u64,
    device: Device,
    optim: ModuleOptimizer,
    noise: SeededNoise,
    objective: TrainingObjective,
    /// The learning rate of the next steps when a schedule set one (`config` keeps the base).
    lr_now: Option<f64>,
}

impl std::fmt::Debug for DecoderTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderTrainer")
            .field("step", &self.step)
            .field("config", &self.config)
            .finish()
    }
}

impl DecoderTrainer {
    /// Starts training `text_proj` and `unet` (moved to `device`, which should be an autodiff
    /// device such as `Device::flex().autodiff()`). `uncond` is the empty prompt's conditioning
    /// (one row; its token length must be the batches' T).
    pub fn new(
        text_proj: UnCLIPTextProjModel,
        unet: UNet2DConditionModel,
        uncond: TextConditioning,
        config: DecoderTrainConfig,
        device: &Device,
    ) -> Result<Self, DecoderError> {
        Self::with_step(
            DecoderModels { text_proj, unet },
            None,
            uncond,
            config,
            0,
            device,
        )
    }

    /// Continues a run from weights alone, at step `step` (an exported model folder keeps the
    /// EMA weights only, without the online weights or optimiser state: pass the same weights
    /// as `text_proj`/`unet` and as `ema`). AdamW starts with fresh moments, as on any resume.
    ///
    /// ```no_run
    /// use burn::tensor::{Bool, Device, Tensor, TensorData};
    /// use unclip_decoder::train::{DecoderTrainConfig, DecoderTrainer};
    /// use unclip_decoder::{TextConditioning, UNet2DConditionModel, UnCLIPTextProjModel};
    /// let plain = Device::flex();
    /// // The empty prompt's CLIP encoding in a real run; zeros of its shapes here
    /// // (E = 64 embedding width, T = 24 tokens, only the first attended).
    /// let attend: Vec<bool> = (0..24).map(|i| i == 0).collect();
    /// let mask = Tensor::<2, Bool>::from_data(TensorData::new(attend, [1, 24]), &plain);
    /// let uncond = || TextConditioning {
    ///     prompt_embeds: Tensor::zeros([1, 64], &plain),
    ///     hidden_states: Tensor::zeros([1, 24, 64], &plain),
    ///     mask: mask.clone(),
    /// };
    /// let unet = UNet2DConditionModel::from_pretrained("models/shapes/decoder", &plain)?;
    /// let text_proj = UnCLIPTextProjModel::from_pretrained("models/shapes/text_proj", &plain)?;
    /// let ema = Some((text_proj.clone(), unet.clone()));
    /// let config = DecoderTrainConfig::default();
    /// let trainer = DecoderTrainer::continue_from(
    ///     text_proj, unet, ema, uncond(), config, 13200, &plain.autodiff(),
    /// )?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn continue_from(
        text_proj: UnCLIPTextProjModel,
        unet: UNet2DConditionModel,
        ema: Option<(UnCLIPTextProjModel, UNet2DConditionModel)>,
        uncond: TextConditioning,
        config: DecoderTrainConfig,
        step: u64,
        device: &Device,
    ) -> Result<Self, DecoderError> {
        let ema = ema.map(|(text_proj, unet)| DecoderModels { text_proj, unet });
        Self::with_step(
            DecoderModels { text_proj, unet },
            ema,
            uncond,
            config,
            step,
            device,
        )
    }

    fn with_step(
        models: DecoderModels,
        ema: Option<DecoderModels>,
        uncond: TextConditioning,
        config: DecoderTrainConfig,
        step: u64,
        device: &Device,
    ) -> Result<Self, DecoderError> {
        check_common(
            config.learning_rate,
            config.weight_decay,
            config.ema_decay,
            config.num_train_timesteps,
        )?;
        if config.min_timestep >= config.num_train_timesteps {
            return Err(DecoderError::InvalidArgument {
                name: "min_timestep".into(),
                message: format!(
                    "{} must be below num_train_timesteps = {}",
                    config.min_timestep, config.num_train_timesteps
                ),
            });
        }
        check_prob(
            "image_embedding_drop_prob",
            config.image_embedding_drop_prob,
        )?;
        check_prob("caption_drop_prob", config.caption_drop_prob)?;
        check_prob("high_noise_fraction", config.high_noise_fraction)?;
        if let Err(message) = config.schedule.check() {
            return Err(DecoderError::InvalidArgument {
                name: "schedule".into(),
                message,
            });
        }
        if !(config.vlb_weight.is_finite() && config.vlb_weight >= 0.0) {
            return Err(DecoderError::InvalidArgument {
                name: "vlb_weight".into(),
                message: format!("{} is not a non-negative number", config.vlb_weight),
            });
        }
        let ucfg = &models.unet.config;
        if ucfg.out_channels != 2 * ucfg.in_channels {
            return Err(DecoderError::invalid(
                "out_channels",
                format!(
                    "{} must be 2 * in_channels = {} for learned-range variance training",
                    ucfg.out_channels,
                    2 * ucfg.in_channels
                ),
            ));
        }
        let e = models.text_proj.clip_embeddings_dim();
        let t_dim = models.text_proj.embedding_proj.d_out();
        if t_dim != models.unet.time_embed_dim() {
            return Err(DecoderError::invalid(
                "time_embed_dim",
                format!(
                    "text_proj makes {t_dim}-wide time embeddings, the UNet's are {}",
                    models.unet.time_embed_dim()
                ),
            ));
        }
        if let Some(d) = models.unet.context_dim()
            && d != models.text_proj.cross_attention_dim()
        {
            return Err(DecoderError::invalid(
                "cross_attention_dim",
                format!(
                    "text_proj makes {}-wide context tokens, the UNet attends to {d}",
                    models.text_proj.cross_attention_dim()
                ),
            ));
        }
        uncond.check("uncond")?;
        if uncond.prompt_embeds.dims() != [1, e] {
            return Err(DecoderError::shape(
                "uncond.prompt_embeds",
                format!("[1, {e}] (one row)"),
                &uncond.prompt_embeds.dims(),
            ));
        }
        let plain = device.clone().inner();
        // Through the plain device, so every parameter becomes a fresh autodiff leaf.
        let models = models.valid().to_device(&plain).to_device(device).train();
        let ema = match (config.ema_decay, ema) {
            (None, _) => None,
            (Some(_), Some(e)) => Some(e.to_device(&plain)),
            (Some(_), None) => Some(models.valid()),
        };
        let uncond = TextConditioning {
            prompt_embeds: uncond.prompt_embeds.to_device(device),
            hidden_states: uncond.hidden_states.to_device(device),
            mask: uncond.mask.to_device(device),
        };
        let optim = AdamWConfig::new()
            .with_weight_decay(config.weight_decay as f32)
            .init();
        Ok(DecoderTrainer {
            models,
            ema,
            uncond,
            optim,
            noise: SeededNoise::new(config.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            objective: TrainingObjective::new(&Self::scheduler_config(&config))
                .with_hybrid(HybridLossConfig {
                    lambda: config.vlb_weight,
                    t0_likelihood: T0Likelihood::DiscretizedGaussian,
                })
                .with_weighting(config.loss_weighting)?,
            device: device.clone(),
            config,
            step,
            lr_now: None,
        })
    }

    /// The run's config as a training checkpoint records it: the training settings and both
    /// models' configs.
    pub fn run_config(
        config: &DecoderTrainConfig,
        unet: &UNet2DConditionConfig,
        text_proj: &TextProjConfig,
    ) -> serde_json::Value {
        serde_json::json!({ "train": config, "unet": unet, "text_proj": text_proj })
    }

    /// Saves everything a resume needs (weights with their parameter ids, EMA, AdamW's state,
    /// the random stream's position, the step, the run's config) as `store`'s checkpoint of the
    /// current step: one directory, written atomically (`unclip_nn::CheckpointStore`).
    pub fn save_state(&self, store: &CheckpointStore) -> Result<PathBuf, DecoderError> {
        let online = self.models.valid();
        Ok(TrainSnapshot {
            step: self.step,
            model: &online,
            ema: self.ema.as_ref(),
            optim: &self.optim,
            config: Self::run_config(
                &self.config,
                &online.unet.config,
                &online.text_proj.config(),
            ),
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
        uncond: TextConditioning,
        expected: Option<&DecoderTrainConfig>,
        device: &Device,
    ) -> Result<Option<Self>, DecoderError> {
        let Some(r) = TrainResume::load(store)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct RunConfig {
            train: DecoderTrainConfig,
            unet: UNet2DConditionConfig,
            text_proj: TextProjConfig,
        }
        let run: RunConfig = r.run_config()?;
        if let Some(expected) = expected {
            r.check_config(&Self::run_config(expected, &run.unet, &run.text_proj))?;
        }
        let plain = device.clone().inner();
        let template = || -> Result<DecoderModels, DecoderError> {
            Ok(DecoderModels {
                text_proj: UnCLIPTextProjModel::new(&run.text_proj, &plain),
                unet: UNet2DConditionModel::new(&run.unet, &plain)?,
            })
        };
        let models = r.load_model(template()?)?;
        let ema = r.load_ema_if(run.train.ema_decay.is_some(), || {
            template().map_err(|e| r.corrupt(e.to_string()))
        })?;
        let mut t = Self::with_step(models, ema, uncond, run.train, r.meta.step, device)?;
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

    /// The training schedule: Karlo's decoder scheduler (learned-range variance) with the
    /// configured betas (Karlo: `squaredcos_cap_v2`) and prediction type (Karlo: eps).
    pub fn scheduler_config(config: &DecoderTrainConfig) -> SchedulerConfig {
        let (beta_schedule, beta_start, beta_end) = config.schedule.betas();
        SchedulerConfig {
            num_train_timesteps: config.num_train_timesteps,
            beta_schedule,
            beta_start,
            beta_end,
            prediction_type: config.prediction_type,
            variance_type: VarianceType::LearnedRange,
            ..SchedulerConfig::default()
        }
    }

    /// The weights to sample with: the EMA when enabled, else the models (plain device).
    pub fn inference_models(&self) -> DecoderModels {
        match &self.ema {
            Some(e) => e.clone(),
            None => self.models.valid(),
        }
    }

    /// The hybrid loss of `batch` at random timesteps with conditioning dropout (no optimiser
    /// step); the terms keep their autodiff graph.
    pub fn loss(&mut self, batch: &DecoderBatch) -> Result<LossTerms, DecoderError> {
        let device = self.device.clone();
        let [b, c, h, w] = batch.images.dims();
        let unet = &self.models.unet;
        if c != unet.in_channels() {
            return Err(DecoderError::shape(
                "images",
                format!("[B, {}, S, S]", unet.in_channels()),
                &batch.images.dims(),
            ));
        }
        let e = self.models.text_proj.clip_embeddings_dim();
        if batch.image_embeddings.dims() != [b, e] {
            return Err(DecoderError::shape(
                "image_embeddings",
                format!("[{b}, {e}] (rows of images)"),
                &batch.image_embeddings.dims(),
            ));
        }
        batch.text.check("text")?;
        let [tb, tt, te] = batch.text.hidden_states.dims();
        let ut = self.uncond.hidden_states.dims()[1];
        if tb != b || te != e || tt != ut {
            return Err(DecoderError::shape(
                "text.hidden_states",
                format!("[{b}, {ut}, {e}] (rows of images, length of the empty prompt)"),
                &batch.text.hidden_states.dims(),
            ));
        }
        if self.objective.weighting() != self.config.loss_weighting {
            // `config` is public: a weighting changed between steps applies from this step.
            self.objective = self
                .objective
                .clone()
                .with_weighting(self.config.loss_weighting)?;
        }
        let x0 = batch.images.clone().to_device(&device); // [B, C, S, S]

        // Host draws, in this order: timesteps, noise, image-embedding drops, caption drops.
        // The first round(b * high_noise_fraction) rows from min_timestep..max, the rest from
        // 0..max (max: max_timestep, default T).
        let lo = self.config.min_timestep;
        let n_high = ((b as f64) * self.config.high_noise_fraction).round() as usize;
        let t_total = self
            .config
            .max_timestep
            .unwrap_or(self.config.num_train_timesteps);
        if t_total > self.config.num_train_timesteps || t_total <= lo {
            // `config` is public: checked at every step.
            return Err(DecoderError::InvalidArgument {
                name: "max_timestep".into(),
                message: format!(
                    "{t_total} must be above min_timestep = {lo} and at most num_train_timesteps = {}",
                    self.config.num_train_timesteps
                ),
            });
        }
        let mut ts: Vec<usize> = unclip_diffusion::sample_timesteps(
            self.noise.rng_mut(),
            n_high,
            t_total.saturating_sub(lo),
        )
        .into_iter()
        .map(|t| t + lo)
        .collect();
        ts.extend(unclip_diffusion::sample_timesteps(
            self.noise.rng_mut(),
            b - n_high.min(b),
            t_total,
        ));
        let noise = self
            .noise
            .randn([b, c, h, w], &device)
            .map_err(unclip_diffusion::DiffusionError::from)?; // [B, C, S, S]
        let keep_image = keep_mask(
            self.noise.rng_mut(),
            b,
            self.config.image_embedding_drop_prob,
        );
        let keep_text = keep_mask(self.noise.rng_mut(), b, self.config.caption_drop_prob);
        let x_t = self.objective.noisy_input(x0.clone(), noise.clone(), &ts)?; // [B, C, S, S]
        let t = Tensor::<1>::from_data(
            TensorData::new(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), [b]),
            &device,
        );

        let image_embeddings = self.drop_image_embeddings(
            batch.image_embeddings.clone().to_device(&device),
            &keep_image,
        ); // [B, E]
        let text = self.drop_captions(&batch.text, &keep_text); // [B, ...]
        let cond = self.models.text_proj.forward(
            image_embeddings,
            text.prompt_embeds,
            text.hidden_states,
            false,
        )?;
        let mask = self.models.text_proj.extend_attention_mask(text.mask); // [B, K + T]
        let out = self.models.unet.forward(
            x_t.clone(),
            t,
            cond.encoder_hidden_states,
            Some(cond.additive_clip_time_embeddings),
            Some(mask),
        )?; // [B, 2C, S, S]
        let pixel_weights = batch.pixel_weights.clone().map(|w| w.to_device(&device)); // [B, 1, S, S]
        Ok(self
            .objective
            .loss_with_pixel_weights(out, x0, noise, x_t, &ts, pixel_weights)?)
    }

    /// Rows whose `keep` is 0 get text_proj's learned unconditional image embedding (gradients
    /// reach it, as in diffusers' CFG rows). `[B, E] -> [B, E]`.
    fn drop_image_embeddings(&self, x: Tensor<2>, keep: &[f32]) -> Tensor<2> {
        let [b, e] = x.dims();
        let k = Tensor::<2>::from_data(TensorData::new(keep.to_vec(), [b, 1]), &self.device);
        let null = self
            .models
            .text_proj
            .learned_classifier_free_guidance_embeddings
            .val()
            .reshape([1, e])
            .expand([b, e]);
        x * k.clone() + null * (k.neg() + 1.0)
    }

    /// Rows whose `keep` is 0 get the empty prompt's embedding, hidden states and mask.
    fn drop_captions(&self, text: &TextConditioning, keep: &[f32]) -> TextConditioning {
        let device = &self.device;
        let b = keep.len();
        let k = Tensor::<1>::from_data(TensorData::new(keep.to_vec(), [b]), device); // [B]
        let u = &self.uncond;
        let [_, e] = text.prompt_embeds.dims();
        let [_, l, d] = text.hidden_states.dims();
        let k2 = k.clone().reshape([b, 1]);
        let prompt_embeds = text.prompt_embeds.clone().to_device(device) * k2.clone()
            + u.prompt_embeds.clone().expand([b, e]) * (k2.clone().neg() + 1.0);
        let k3 = k.clone().reshape([b, 1, 1]);
        let hidden_states = text.hidden_states.clone().to_device(device) * k3.clone()
            + u.hidden_states.clone().expand([b, l, d]) * (k3.neg() + 1.0);
        let drop = k2.lower_elem(0.5).expand([b, l]); // [B, T]
        let mask: Tensor<2, Bool> = text
            .mask
            .clone()
            .to_device(device)
            .int()
            .mask_where(drop, u.mask.clone().int().expand([b, l]))
            .equal_elem(1);
        TextConditioning {
            prompt_embeds,
            hidden_states,
            mask,
        }
    }

    /// One AdamW step on `batch`; returns the loss values before the step.
    pub fn train_step(&mut self, batch: &DecoderBatch) -> Result<StepLosses, DecoderError> {
        let terms = self.loss(batch)?;
        let lr = self.learning_rate();
        let (models, values) = optimise_step(
            &mut self.optim,
            lr,
            self.models.clone(),
            terms,
            &mut self.ema,
            self.config.ema_decay,
            self.config.max_grad_norm,
            "batch",
            self.step,
        )?;
        self.models = models;
        self.step += 1;
        Ok(values)
    }

    /// Writes a checkpoint folder (layout in the module docs); every file atomically, the state
    /// file last.
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<(), DecoderError> {
        let dir = dir.as_ref();
        let online = self.models.valid();
        online
            .text_proj
            .save_pretrained(dir.join("online").join("text_proj"))?;
        online
            .unet
            .save_pretrained(dir.join("online").join("decoder"))?;
        let inference = self.inference_models();
        inference.text_proj.save_pretrained(dir.join("text_proj"))?;
        inference.unet.save_pretrained(dir.join("decoder"))?;
        let state = DecoderTrainerState {
            step: self.step,
            train: self.config.clone(),
        };
        unclip_nn::write_json(dir.join(STATE_FILE), &state)?;
        Ok(())
    }

    /// Resumes from a folder written by [`Self::save_checkpoint`] on `device` (autodiff).
    pub fn resume(
        dir: impl AsRef<Path>,
        uncond: TextConditioning,
        device: &Device,
    ) -> Result<Self, DecoderError> {
        let dir = dir.as_ref();
        let state: DecoderTrainerState = unclip_nn::read_json(dir.join(STATE_FILE))?;
        let plain = device.clone().inner();
        let models = DecoderModels {
            text_proj: UnCLIPTextProjModel::from_pretrained(
                dir.join("online").join("text_proj"),
                &plain,
            )?,
            unet: UNet2DConditionModel::from_pretrained(
                dir.join("online").join("decoder"),
                &plain,
            )?,
        };
        let ema = match state.train.ema_decay {
            Some(_) => Some(DecoderModels {
                text_proj: UnCLIPTextProjModel::from_pretrained(dir.join("text_proj"), &plain)?,
                unet: UNet2DConditionModel::from_pretrained(dir.join("decoder"), &plain)?,
            }),
            None => None,
        };
        Self::with_step(models, ema, uncond, state.train, state.step, device)
    }
}

impl unclip_nn::Trainer for DecoderTrainer {
    type Batch = DecoderBatch;
    type Error = DecoderError;
    fn step(&self) -> u64 {
        self.step
    }
    fn set_learning_rate(&mut self, lr: f64) {
        DecoderTrainer::set_learning_rate(self, lr)
    }
    fn learning_rate(&self) -> f64 {
        DecoderTrainer::learning_rate(self)
    }
    fn train_step(&mut self, batch: &DecoderBatch) -> Result<f32, DecoderError> {
        DecoderTrainer::train_step(self, batch).map(|l| l.loss)
    }
    fn save(&self, store: &CheckpointStore) -> Result<PathBuf, DecoderError> {
        self.save_state(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_key_inverts_the_decoder_keymap() {
        for (ckpt, module) in [
            (
                "down_blocks.1.attentions.0.to_out.0.weight",
                "down_blocks.1.attentions.0.to_out.weight",
            ),
            (
                "mid_block.attentions.0.to_q.bias",
                "mid_block.attentions.0.to_q.bias",
            ),
            ("conv_in.weight", "conv_in.weight"),
        ] {
            assert_eq!(decoder_save_key(module), ckpt);
        }
    }

    #[test]
    fn uniform_draws_are_in_range() {
        let mut rng = SeededNoise::new(3);
        for _ in 0..1000 {
            let u = uniform01(rng.rng_mut());
            assert!((0.0..1.0).contains(&u));
        }
        let keep = keep_mask(rng.rng_mut(), 10_000, 0.5);
        let dropped = keep.iter().filter(|&&k| k == 0.0).count();
        assert!((4500..5500).contains(&dropped), "{dropped}");
    }
}
