//! GLIDE's CLIP guidance of the decoder (Nichol et al. 2021, section 3.2): the gradient of a
//! noised CLIP's caption logit with respect to the decoder's `x_t`, as a
//! [`unclip_diffusion::GradientGuide`] for [`unclip_decoder::sample_decoder_guided`].

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use unclip_clip::{NoisedClipVisionModel, l2_normalize};
use unclip_diffusion::{DiffusionError, GradientGuide};

/// `grad_{x_t} [exp(logit_scale) * cos(noised_clip(x_t, t), caption)]` per row.
///
/// ```no_run
/// # fn demo(tower: &unclip_clip::NoisedClipVisionModel, text_embeds: burn::tensor::Tensor<2>,
/// #         x_t: burn::tensor::Tensor<4>) -> Result<(), unclip_diffusion::DiffusionError> {
/// use unclip_diffusion::GradientGuide;
/// let guide = unclip::NoisedClipGuide::new(tower, text_embeds); // text_embeds [B, P]
/// let grad = guide.gradient(x_t, 500)?; // [B, 3, S, S]
/// # Ok(()) }
/// ```
pub struct NoisedClipGuide {
    /// On the autodiff device, its parameters not tracked.
    model: NoisedClipVisionModel,
    /// `[B, P]`, unit rows, on the autodiff device.
    targets: Tensor<2>,
    device: Device,
}

impl NoisedClipGuide {
    /// `text_embeds [B, P]`: the captions' CLIP text embeddings, one per decoded image (on the
    /// device the decoder samples on).
    pub fn new(tower: &NoisedClipVisionModel, text_embeds: Tensor<2>) -> Self {
        let device = text_embeds.device().autodiff();
        NoisedClipGuide {
            model: tower.clone().to_device(&device).no_grad(),
            targets: l2_normalize(text_embeds).to_device(&device).autodiff(),
            device,
        }
    }

    /// The `[C, S, S]` sample the tower takes (see
    /// [`unclip_clip::ClipVisionTransformer::input_shape`]).
    pub fn input_shape(&self) -> [usize; 3] {
        self.model.vision_model.input_shape()
    }
}

impl GradientGuide for NoisedClipGuide {
    fn gradient(&self, x_t: Tensor<4>, t: usize) -> Result<Tensor<4>, DiffusionError> {
        let plain = x_t.device();
        let [b, c, h, w] = x_t.dims();
        let want = self.input_shape();
        if [c, h, w] != want {
            let [c, h, w] = want;
            return Err(DiffusionError::ShapeMismatch {
                what: "x_t",
                found: x_t.dims().to_vec(),
                expected: format!("[B, {c}, {h}, {w}] (the noised CLIP's input)"),
            });
        }
        if self.targets.dims()[0] != b {
            return Err(DiffusionError::ShapeMismatch {
                what: "x_t",
                found: x_t.dims().to_vec(),
                expected: format!("{} rows, one per caption", self.targets.dims()[0]),
            });
        }
        let x = x_t.to_device(&self.device).autodiff().require_grad(); // [B, C, S, S]
        let img = l2_normalize(self.model.forward(x.clone(), &vec![t; b])); // [B, P]
        let scale = self.model.logit_scale.val().exp(); // [1]
        // Rows are independent, so the gradient of the sum is each row's own gradient.
        let logits = (img * self.targets.clone()).sum() * scale; // [1]
        let grads = logits.backward();
        let g = x.grad(&grads).ok_or(DiffusionError::InvalidArgument {
            what: "x_t",
            message: "the noised CLIP gave no gradient for x_t".into(),
        })?;
        Ok(g.to_device(&plain))
    }
}
