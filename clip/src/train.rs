//! Contrastive training of CLIP with burn's autodiff and an optimizer: the symmetric
//! cross-entropy of the CLIP paper (Radford et al. 2021, figure 3), as transformers'
//! `CLIPModel.forward(return_loss=True)` (`clip_loss`) computes it.

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Int, Tensor};

use crate::model::{ClipModel, contrastive_loss};

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
    model: Option<ClipModel>,
    optim: ModuleOptimizer,
    pub lr: f64,
    pub steps: usize,
}

impl ClipTrainer {
    /// `model` must live on an autodiff device (`Device::flex().autodiff()`).
    pub fn new(model: ClipModel, lr: f64, weight_decay: f32) -> Self {
        let optim = AdamWConfig::new().with_weight_decay(weight_decay).init();
        ClipTrainer {
            model: Some(model),
            optim,
            lr,
            steps: 0,
        }
    }

    /// Forward, symmetric contrastive loss, backward, optimizer step. Returns the loss.
    pub fn step(&mut self, batch: ClipBatch) -> f32 {
        let model = self
            .model
            .take()
            .expect("model is always present between steps");
        let out = model.forward(
            batch.input_ids,
            batch.attention_mask,
            batch.pixel_values,
            false,
        );
        let loss = contrastive_loss(out.logits_per_text);
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(self.lr, model, grads));
        self.steps += 1;
        value
    }

    pub fn model(&self) -> &ClipModel {
        self.model
            .as_ref()
            .expect("model is always present between steps")
    }

    /// The trained model (still on the autodiff device; `.valid()` gives the inference copy).
    pub fn into_model(self) -> ClipModel {
        self.model.expect("model is always present between steps")
    }
}
