//! A noise-aware CLIP image tower, GLIDE's "noised CLIP" (Nichol et al. 2021, section 3.2 and
//! appendix: CLIP models trained on noised images `x_t` with the timestep as an input, so that
//! `grad_x log p(caption | x_t)` is meaningful at every noise level and can guide a diffusion
//! sampler).
//!
//! The tower is transformers' `CLIPVisionModelWithProjection` (same fields, same checkpoint keys)
//! plus `time_embedding`, diffusers' `TimestepEmbedding` applied to the sinusoidal projection of
//! `t` (width `hidden_size`), added to every token (class token and patches) after the position
//! embeddings; and a learned `logit_scale` as `CLIPModel`'s. It reads the diffusion model's own
//! sample space: `x_t` in `[-1, 1]`-scaled units, not CLIP-normalised pixels.
//!
//! It is trained against a frozen text tower: [`NoisedClipTrainer`] minimises the cross-entropy
//! of each noised image against a bank of caption embeddings (the captions of the batch, or every
//! caption the data can produce), so the image tower learns the text tower's space.

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use unclip_nn::{
    Activation, Checkpoint, CheckpointStore, Linear, LoadError, TimestepEmbedding,
    timestep_embedding,
};

use crate::config::ClipVisionConfig;
use crate::load::HF_CLIP_KEYS;
use crate::model::l2_normalize;
use crate::train::TrainCore;
use crate::vision::ClipVisionTransformer;

/// GLIDE's noised CLIP image tower (see the module docs).
///
/// ```no_run
/// use burn::tensor::{Device, Tensor};
/// use unclip_clip::NoisedClipVisionModel;
/// let device = Device::flex();
/// let model = NoisedClipVisionModel::from_pretrained("models/shapes/noised_image_encoder", &device)?;
/// let x_t = Tensor::<4>::zeros([1, 3, 32, 32], &device);
/// let embeds = model.forward(x_t, &[500]); // [1, projection_dim]
/// # Ok::<(), unclip_nn::LoadError>(())
/// ```
#[derive(Module, Debug)]
pub struct NoisedClipVisionModel {
    pub vision_model: ClipVisionTransformer,
    /// `[P, D]`
    pub visual_projection: Linear,
    /// sinusoidal(t, D) -> linear -> SiLU -> linear -> `[D]`, added to every token.
    pub time_embedding: TimestepEmbedding,
    /// `[1]`, `exp` of it scales the cosine similarities into logits.
    pub logit_scale: Param<Tensor<1>>,
}

impl NoisedClipVisionModel {
    /// A randomly initialised tower for `cfg` (`logit_scale` = ln(1 / 0.07), as CLIP's).
    pub fn new(cfg: &ClipVisionConfig, device: &Device) -> Self {
        let d = cfg.hidden_size;
        NoisedClipVisionModel {
            vision_model: ClipVisionTransformer::new(cfg, device),
            visual_projection: Linear::new(d, cfg.projection_dim, false, device),
            time_embedding: TimestepEmbedding::new(d, d, d, Activation::Silu, None, device),
            logit_scale: Param::from_tensor(Tensor::from_floats([(1.0f32 / 0.07).ln()], device)),
        }
    }

    /// `x_t [B, C, S, S]` (the diffusion sample, `[-1, 1]` units) at `timesteps` (one per row)
    /// -> image embeddings `[B, P]` (not normalised).
    pub fn forward(&self, x_t: Tensor<4>, timesteps: &[usize]) -> Tensor<2> {
        let device = x_t.device();
        let b = x_t.dims()[0];
        let d = self
            .vision_model
            .embeddings
            .position_embedding
            .weight
            .dims()[1];
        let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        let t = Tensor::<1>::from_data(burn::tensor::TensorData::new(t, [b]), &device);
        let temb = self
            .time_embedding
            .forward(timestep_embedding(t, d, true, 0.0)); // [B, D]
        let out = self
            .vision_model
            .forward_with_token_bias(x_t, Some(temb), false);
        self.visual_projection.forward(out.pooler_output)
    }

    /// `exp(logit_scale) * cos(image, text)`: `x_t [B, C, S, S]`, `text_embeds [K, P]` ->
    /// logits `[B, K]`.
    pub fn logits(&self, x_t: Tensor<4>, timesteps: &[usize], text_embeds: Tensor<2>) -> Tensor<2> {
        let img = l2_normalize(self.forward(x_t, timesteps)); // [B, P]
        let txt = l2_normalize(text_embeds); // [K, P]
        img.matmul(txt.transpose()) * self.logit_scale.val().exp().unsqueeze::<2>()
    }

    /// Loads a folder written by [`Self::save_pretrained`]: `config.json` (a CLIP vision
    /// config) and `model.safetensors`, strictly (a missing or unused key is an error).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let cfg = ClipVisionConfig::from_file(dir.join("config.json"))?;
        Checkpoint::open_dir(dir, "model")?
            .remap(&HF_CLIP_KEYS)?
            .load_into(NoisedClipVisionModel::new(&cfg, device))
    }

    /// Writes `dir/config.json` and `dir/model.safetensors`.
    pub fn save_pretrained(
        &self,
        config: &ClipVisionConfig,
        dir: impl AsRef<Path>,
    ) -> Result<(), LoadError> {
        crate::save::save_folder(
            self,
            config,
            "NoisedCLIPVisionModel",
            "clip_vision_model",
            dir.as_ref(),
        )
    }
}

/// Cross-entropy of noised images against a bank of caption embeddings: `logits [B, K]`,
/// `labels [B]` (the row of each image's caption in the bank) -> `[1]`.
pub fn bank_cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let picked = log_softmax(logits, 1).gather(1, labels.unsqueeze_dim::<2>(1)); // [B, 1]
    picked.sum().neg() / b as f64
}

/// One batch for [`NoisedClipTrainer`]: noised images `x_t [B, C, S, S]` at `timesteps`, the
/// caption bank `text_embeds [K, P]` (frozen text tower) and each image's row in it.
#[derive(Debug, Clone)]
pub struct NoisedClipBatch {
    pub x_t: Tensor<4>,
    pub timesteps: Vec<usize>,
    pub text_embeds: Tensor<2>,
    pub labels: Tensor<1, Int>,
}

/// Owns a [`NoisedClipVisionModel`] on an autodiff device and its AdamW state (the CLIP
/// trainers' shared core: clipping, resumable checkpoints).
///
/// ```no_run
/// use burn::tensor::Device;
/// use unclip_clip::{ClipVisionConfig, NoisedClipTrainer, NoisedClipVisionModel};
/// let device = Device::flex().autodiff();
/// let cfg: ClipVisionConfig = serde_json::from_str("{}").unwrap();
/// let trainer = NoisedClipTrainer::new(NoisedClipVisionModel::new(&cfg, &device), 1e-3, 0.1);
/// ```
pub struct NoisedClipTrainer {
    core: TrainCore<NoisedClipVisionModel>,
    pub lr: f64,
    pub steps: usize,
}

impl NoisedClipTrainer {
    /// `model` must live on an autodiff device.
    pub fn new(model: NoisedClipVisionModel, lr: f64, weight_decay: f32) -> Self {
        NoisedClipTrainer {
            core: TrainCore::new(model, lr, weight_decay),
            lr,
            steps: 0,
        }
    }

    /// Records the tower's config in the checkpoints [`Self::save_state`] writes.
    pub fn with_model_config(mut self, config: &ClipVisionConfig) -> Self {
        self.core.model_config = serde_json::to_value(config).unwrap_or_default();
        self
    }

    /// Global gradient-norm clipping.
    pub fn with_max_grad_norm(mut self, max_norm: Option<f32>) -> Self {
        self.core.settings.max_grad_norm = max_norm;
        self
    }

    /// Forward, [`bank_cross_entropy`], backward, AdamW step. Returns the loss and the
    /// fraction of the batch whose own caption has the highest logit.
    pub fn step(&mut self, batch: NoisedClipBatch) -> (f32, f32) {
        let model = self.core.take();
        let logits = model.logits(batch.x_t, &batch.timesteps, batch.text_embeds);
        let b = logits.dims()[0];
        let hits = logits
            .clone()
            .argmax(1)
            .reshape([b])
            .equal(batch.labels.clone())
            .int()
            .sum()
            .into_scalar::<i64>();
        let loss = bank_cross_entropy(logits, batch.labels);
        let value = loss.clone().into_scalar::<f32>();
        self.core.optimise(model, loss, self.lr);
        self.steps += 1;
        (value, hits as f32 / b.max(1) as f32)
    }

    pub fn model(&self) -> &NoisedClipVisionModel {
        self.core.model()
    }

    /// The trained model (still on the autodiff device; `.valid()` gives the inference copy).
    pub fn into_model(mut self) -> NoisedClipVisionModel {
        self.core.take()
    }

    /// Saves the weights (with their parameter ids), AdamW's state, the step, the learning rate
    /// and the run's config as `store`'s checkpoint of the current step.
    pub fn save_state(&self, store: &CheckpointStore) -> Result<PathBuf, LoadError> {
        Ok(self.core.save_state(store, self.steps, self.lr)?)
    }

    /// Continues the run of `store`'s latest checkpoint (`Ok(None)`: none), on `device`
    /// (autodiff). `config`, `lr`, `weight_decay` and `max_grad_norm` must be the run's: any
    /// difference is `TrainCheckpointError::ConfigMismatch` naming it.
    pub fn resume_state(
        store: &CheckpointStore,
        config: &ClipVisionConfig,
        lr: f64,
        weight_decay: f32,
        max_grad_norm: Option<f32>,
        device: &Device,
    ) -> Result<Option<Self>, LoadError> {
        Ok(TrainCore::resume_state(
            store,
            NoisedClipVisionModel::new(config, &device.clone().inner()),
            config,
            (lr, weight_decay, max_grad_norm),
            device,
        )?
        .map(|(core, lr, steps)| NoisedClipTrainer { core, lr, steps }))
    }
}

impl unclip_nn::Trainer for NoisedClipTrainer {
    type Batch = NoisedClipBatch;
    type Error = LoadError;
    fn step(&self) -> u64 {
        self.steps as u64
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn train_step(&mut self, batch: &NoisedClipBatch) -> Result<f32, LoadError> {
        Ok(NoisedClipTrainer::step(self, batch.clone()).0)
    }
    fn save(&self, store: &CheckpointStore) -> Result<PathBuf, LoadError> {
        self.save_state(store)
    }
}
