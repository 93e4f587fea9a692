//! Contrastive training of CLIP with burn's autodiff and an optimizer: the symmetric
//! cross-entropy of the CLIP paper (Radford et al. 2021, figure 3), as transformers'
//! `CLIPModel.forward(return_loss=True)` (`clip_loss`) computes it.
//!
//! [`ClipTrainer`] and the noised tower's `NoisedClipTrainer` share [`TrainCore`]: the model on
//! an autodiff device, AdamW, the step, the learning rate (base and scheduled), optional global
//! gradient-norm clipping, and resumable checkpoints (`unclip_nn::CheckpointStore`: one
//! directory per save written atomically, holding the weights with their parameter ids,
//! AdamW's moments and step counts, the step and the run's config). Neither trainer draws
//! random numbers of its own (the data of a step is the caller's, a function of the step).

use std::path::PathBuf;

use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};
use unclip_nn::{CheckpointStore, LoadError, TrainCheckpointError, TrainResume, TrainSnapshot};

use crate::model::{ClipModel, contrastive_loss};

/// The optimiser settings of a CLIP-side run, as its checkpoints record them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTrainSettings {
    /// The base learning rate (a schedule scales the rate of each step, not this).
    pub learning_rate: f64,
    pub weight_decay: f32,
    /// Global gradient-norm clipping (`None`: off).
    pub max_grad_norm: Option<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CoreState {
    learning_rate_now: f64,
}

/// The state shared by the CLIP-side trainers: the model (autodiff device), AdamW and the run's
/// settings. The step and the current learning rate are the trainers' public fields.
pub struct TrainCore<M> {
    model: Option<M>,
    optim: ModuleOptimizer,
    pub(crate) settings: ClipTrainSettings,
    /// The model's config, recorded in checkpoints (a resume with another is refused).
    pub(crate) model_config: serde_json::Value,
}

impl<M: Module> TrainCore<M> {
    pub(crate) fn new(model: M, lr: f64, weight_decay: f32) -> Self {
        TrainCore {
            model: Some(model),
            optim: AdamWConfig::new().with_weight_decay(weight_decay).init(),
            settings: ClipTrainSettings {
                learning_rate: lr,
                weight_decay,
                max_grad_norm: None,
            },
            model_config: serde_json::Value::Null,
        }
    }

    pub(crate) fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("model is always present between steps")
    }

    pub(crate) fn take(&mut self) -> M {
        self.model
            .take()
            .expect("model is always present between steps")
    }

    /// Backward, clipping, AdamW step at learning rate `lr` on `loss` of `model` (taken by
    /// [`Self::take`]).
    pub(crate) fn optimise(&mut self, model: M, loss: Tensor<1>, lr: f64) {
        let (model, _norm) = unclip_nn::apply_gradients(
            &mut self.optim,
            lr,
            model,
            loss,
            self.settings.max_grad_norm,
        );
        self.model = Some(model);
    }

    fn run_config(settings: &ClipTrainSettings, model: &serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "train": settings, "model": model })
    }

    /// Saves the core's state at `steps` steps with `lr` the current learning rate (the
    /// trainers' public fields, which callers may set between steps).
    pub(crate) fn save_state(
        &self,
        store: &CheckpointStore,
        steps: usize,
        lr: f64,
    ) -> Result<PathBuf, TrainCheckpointError> {
        TrainSnapshot {
            step: steps as u64,
            model: &self.model().clone(),
            ema: None,
            optim: &self.optim,
            config: Self::run_config(&self.settings, &self.model_config),
            extra: serde_json::to_value(CoreState {
                learning_rate_now: lr,
            })
            .unwrap_or_default(),
        }
        .save(store)
    }

    /// Continues the run of `store`'s latest checkpoint (`Ok(None)`: none): the core, the
    /// learning rate of the next step and the steps taken. `template` is a model of `config`
    /// on the plain device under `device` (autodiff); `config` and the optimiser settings must
    /// be the run's (any difference is `TrainCheckpointError::ConfigMismatch` naming it).
    pub(crate) fn resume_state(
        store: &CheckpointStore,
        template: M,
        config: &impl Serialize,
        (learning_rate, weight_decay, max_grad_norm): (f64, f32, Option<f32>),
        device: &Device,
    ) -> Result<Option<(Self, f64, usize)>, LoadError> {
        let Some(r) = TrainResume::load(store)? else {
            return Ok(None);
        };
        let settings = ClipTrainSettings {
            learning_rate,
            weight_decay,
            max_grad_norm,
        };
        let model_config = serde_json::to_value(config).unwrap_or_default();
        r.check_config(&Self::run_config(&settings, &model_config))?;
        let state: CoreState = r.extra()?;
        let model = r.load_model(template)?.to_device(device).train();
        let mut core = TrainCore::new(model, learning_rate, weight_decay);
        core.settings = settings;
        core.model_config = model_config;
        core.optim = r.load_optimizer(core.optim)?;
        Ok(Some((core, state.learning_rate_now, r.meta.step as usize)))
    }
}

/// One training batch: `input_ids [B, L]`, `attention_mask [B, L]`, `pixel_values [B, 3, S, S]`;
/// row i of the texts describes image i.
#[derive(Debug, Clone)]
pub struct ClipBatch {
    pub input_ids: Tensor<2, Int>,
    pub attention_mask: Option<Tensor<2, Int>>,
    pub pixel_values: Tensor<4>,
}

/// Owns a model on an autodiff device and its optimizer (AdamW).
///
/// ```no_run
/// use burn::tensor::Device;
/// use unclip_clip::{ClipConfig, ClipModel, ClipTrainer};
/// let device = Device::flex().autodiff();
/// let cfg: ClipConfig = serde_json::from_str("{}").unwrap();
/// let mut trainer = ClipTrainer::new(ClipModel::new(&cfg, &device), 1e-3, 0.0);
/// ```
pub struct ClipTrainer {
    core: TrainCore<ClipModel>,
    pub lr: f64,
    pub steps: usize,
}

impl ClipTrainer {
    /// `model` must live on an autodiff device (`Device::flex().autodiff()`).
    pub fn new(model: ClipModel, lr: f64, weight_decay: f32) -> Self {
        ClipTrainer {
            core: TrainCore::new(model, lr, weight_decay),
            lr,
            steps: 0,
        }
    }

    /// Records the model's config in the checkpoints [`Self::save_state`] writes.
    pub fn with_model_config(mut self, config: &crate::ClipConfig) -> Self {
        self.core.model_config = serde_json::to_value(config).unwrap_or_default();
        self
    }

    /// Global gradient-norm clipping.
    pub fn with_max_grad_norm(mut self, max_norm: Option<f32>) -> Self {
        self.core.settings.max_grad_norm = max_norm;
        self
    }

    /// Forward, symmetric contrastive loss, backward, optimizer step. Returns the loss.
    pub fn step(&mut self, batch: ClipBatch) -> f32 {
        let model = self.core.take();
        let out = model.forward(
            batch.input_ids,
            batch.attention_mask,
            batch.pixel_values,
            false,
        );
        let loss = contrastive_loss(out.logits_per_text);
        let value = loss.clone().into_scalar::<f32>();
        self.core.optimise(model, loss, self.lr);
        self.steps += 1;
        value
    }

    pub fn model(&self) -> &ClipModel {
        self.core.model()
    }

    /// The trained model (still on the autodiff device; `.valid()` gives the inference copy).
    pub fn into_model(mut self) -> ClipModel {
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
        config: &crate::ClipConfig,
        lr: f64,
        weight_decay: f32,
        max_grad_norm: Option<f32>,
        device: &Device,
    ) -> Result<Option<Self>, LoadError> {
        Ok(TrainCore::resume_state(
            store,
            ClipModel::new(config, &device.clone().inner()),
            config,
            (lr, weight_decay, max_grad_norm),
            device,
        )?
        .map(|(core, lr, steps)| ClipTrainer { core, lr, steps }))
    }
}

impl unclip_nn::Trainer for ClipTrainer {
    type Batch = ClipBatch;
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
    fn train_step(&mut self, batch: &ClipBatch) -> Result<f32, LoadError> {
        Ok(ClipTrainer::step(self, batch.clone()))
    }
    fn save(&self, store: &CheckpointStore) -> Result<PathBuf, LoadError> {
        self.save_state(store)
    }
}
