//! transformers `CLIPModel`: both towers, both projections and the learned `logit_scale`.

use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use unclip_nn::Linear;

use crate::config::ClipConfig;
use crate::text::{ClipTextOutput, ClipTextTransformer};
use crate::vision::{ClipVisionOutput, ClipVisionTransformer};

/// The dual encoder. Field names follow the HF checkpoint (`text_model.*`, `vision_model.*`,
/// `text_projection.weight`, `visual_projection.weight`, `logit_scale`).
#[derive(Module, Debug)]
pub struct ClipModel {
    pub text_model: ClipTextTransformer,
    pub vision_model: ClipVisionTransformer,
    /// `[P, D_text]`, no bias.
    pub text_projection: Linear,
    /// `[P, D_vision]`, no bias.
    pub visual_projection: Linear,
    /// Raw (log) logit scale, `[1]` (a 0-dim tensor in the checkpoint).
    pub logit_scale: Param<Tensor<1>>,
}

/// Everything `CLIPModel.forward(..., return_loss=True, output_hidden_states=True)` returns.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    pub text: ClipTextOutput,
    pub vision: ClipVisionOutput,
    /// L2-normalised `[B_txt, P]`.
    pub text_embeds: Tensor<2>,
    /// L2-normalised `[B_img, P]`.
    pub image_embeds: Tensor<2>,
    /// `exp(logit_scale) * image_embeds @ text_embeds^T` `[B_img, B_txt]`.
    pub logits_per_image: Tensor<2>,
    /// Transpose of `logits_per_image`.
    pub logits_per_text: Tensor<2>,
}

impl ClipModel {
    /// A randomly initialised model of the given config (for training).
    pub fn new(cfg: &ClipConfig, device: &Device) -> Self {
        let text = cfg.text();
        let vision = cfg.vision();
        ClipModel {
            text_model: ClipTextTransformer::new(&text, device),
            vision_model: ClipVisionTransformer::new(&vision, device),
            text_projection: Linear::new(text.hidden_size, cfg.projection_dim, false, device),
            visual_projection: Linear::new(vision.hidden_size, cfg.projection_dim, false, device),
            logit_scale: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![cfg.logit_scale_init_value as f32], [1]),
                device,
            )),
        }
    }

    /// `get_text_features`: projected pooled text states, not normalised `[B, P]`.
    pub fn text_features(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<2> {
        let out = self.text_model.forward(input_ids, attention_mask, false);
        self.text_projection.forward(out.pooler_output)
    }

    /// `get_image_features`: projected pooled image states, not normalised `[B, P]`.
    pub fn image_features(&self, pixel_values: Tensor<4>) -> Tensor<2> {
        let out = self.vision_model.forward(pixel_values, false);
        self.visual_projection.forward(out.pooler_output)
    }

    /// The full forward pass with hidden states, normalised embeddings and logits.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        pixel_values: Tensor<4>,
        output_hidden_states: bool,
    ) -> ClipOutput {
        let text = self
            .text_model
            .forward(input_ids, attention_mask, output_hidden_states);
        let vision = self
            .vision_model
            .forward(pixel_values, output_hidden_states);
        let text_embeds = l2_normalize(self.text_projection.forward(text.pooler_output.clone()));
        let image_embeds =
            l2_normalize(self.visual_projection.forward(vision.pooler_output.clone()));
        let logits_per_image = self.logits(image_embeds.clone(), text_embeds.clone());
        let logits_per_text = logits_per_image.clone().transpose();
        ClipOutput {
            text,
            vision,
            text_embeds,
            image_embeds,
            logits_per_image,
            logits_per_text,
        }
    }

    /// `exp(logit_scale) * a @ b^T` for normalised embeddings `a [N, P]`, `b [M, P]` -> `[N, M]`.
    pub fn logits(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        let scale = self.logit_scale.val().exp().unsqueeze::<2>(); // [1, 1]
        a.matmul(b.transpose()) * scale
    }
}

/// Divides each row by its L2 norm. `[N, P] -> [N, P]`.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / norm
}

/// CLIP's symmetric contrastive loss: the mean of the cross-entropies of `logits_per_text`
/// (`[B, B]`, matching pairs on the diagonal) over rows and over columns. Returns a `[1]` tensor.
pub fn contrastive_loss(logits_per_text: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits_per_text.dims();
    let device = logits_per_text.device();
    let eye = Tensor::<2>::eye(n, &device);
    let ce = |logits: Tensor<2>| -> Tensor<1> {
        // -mean_i log_softmax(logits)_ii
        (log_softmax(logits, 1) * eye.clone()).sum().neg() / n as f64
    };
    (ce(logits_per_text.clone()) + ce(logits_per_text.transpose())) / 2.0
}
