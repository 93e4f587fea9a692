//! diffusers `pipelines/deprecated/unclip/text_proj.py` `UnCLIPTextProjModel`: turns the CLIP
//! image embedding, the CLIP text embedding and the CLIP text hidden states into the decoder's
//! conditioning (context tokens and the additive time embedding, passed as `class_labels`).

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, Tensor};
use unclip_nn::{Checkpoint, LayerNorm, Linear};

use crate::DecoderError;
use crate::config::TextProjConfig;
use crate::load::TEXT_PROJ_KEYMAP;

/// The decoder conditioning made by [`UnCLIPTextProjModel::forward`].
#[derive(Debug, Clone)]
pub struct TextProjOutput {
    /// `[B, K + T, Dc]`: K extra context tokens from the image embedding, then the projected,
    /// layer-normed text hidden states.
    pub encoder_hidden_states: Tensor<3>,
    /// `[B, Dt]`: projected image embedding + projected text embedding (the decoder's
    /// `class_labels`).
    pub additive_clip_time_embeddings: Tensor<2>,
}

/// diffusers `UnCLIPTextProjModel`.
#[derive(Module, Debug)]
pub struct UnCLIPTextProjModel {
    /// `[E]`: the image embedding used for the unconditional rows under classifier-free guidance.
    pub learned_classifier_free_guidance_embeddings: Param<Tensor<1>>,
    /// `[Dt, E]`: text embedding -> time embedding.
    pub embedding_proj: Linear,
    /// `[Dt, E]`: image embedding -> time embedding.
    pub clip_image_embeddings_project_to_time_embeddings: Linear,
    /// `[K * Dc, E]`: image embedding -> K context tokens.
    pub clip_extra_context_tokens_proj: Linear,
    /// `[Dc, E]`
    pub encoder_hidden_states_proj: Linear,
    /// LayerNorm(Dc), eps 1e-5.
    pub text_encoder_hidden_states_norm: LayerNorm,
    #[module(skip)]
    pub clip_extra_context_tokens: usize,
}

impl UnCLIPTextProjModel {
    pub fn new(cfg: &TextProjConfig, device: &Device) -> Self {
        let e = cfg.clip_embeddings_dim;
        UnCLIPTextProjModel {
            learned_classifier_free_guidance_embeddings: Param::from_tensor(Tensor::zeros(
                [e],
                device,
            )),
            embedding_proj: Linear::new(e, cfg.time_embed_dim, true, device),
            clip_image_embeddings_project_to_time_embeddings: Linear::new(
                e,
                cfg.time_embed_dim,
                true,
                device,
            ),
            clip_extra_context_tokens_proj: Linear::new(
                e,
                cfg.clip_extra_context_tokens * cfg.cross_attention_dim,
                true,
                device,
            ),
            encoder_hidden_states_proj: Linear::new(e, cfg.cross_attention_dim, true, device),
            text_encoder_hidden_states_norm: LayerNorm::new(cfg.cross_attention_dim, 1e-5, device),
            clip_extra_context_tokens: cfg.clip_extra_context_tokens,
        }
    }

    /// Loads `dir/config.json` + `dir/diffusion_pytorch_model.{safetensors,bin}` strictly.
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// let device = Device::default();
    /// let text_proj = unclip_decoder::UnCLIPTextProjModel::from_pretrained("karlo-v1-alpha/text_proj", &device)?;
    /// # Ok::<(), unclip_decoder::DecoderError>(())
    /// ```
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, DecoderError> {
        let dir = dir.as_ref();
        let cfg = TextProjConfig::from_file(dir.join("config.json"))?;
        let model = Self::new(&cfg, device);
        let ckpt =
            Checkpoint::open_dir(dir, "diffusion_pytorch_model")?.remap(&TEXT_PROJ_KEYMAP)?;
        Ok(ckpt.load_into(model)?)
    }

    /// E.
    pub fn clip_embeddings_dim(&self) -> usize {
        self.embedding_proj.d_in()
    }

    /// Dc.
    pub fn cross_attention_dim(&self) -> usize {
        self.encoder_hidden_states_proj.d_out()
    }

    /// - `image_embeddings [Bi, E]`; with `do_classifier_free_guidance` the learned unconditional
    ///   embedding is prepended for each row (`[2 Bi, E]`: unconditional rows first)
    /// - `prompt_embeds [B, E]`, `text_encoder_hidden_states [B, T, E]` with B the (CFG-doubled)
    ///   batch, unconditional rows first
    pub fn forward(
        &self,
        image_embeddings: Tensor<2>,
        prompt_embeds: Tensor<2>,
        text_encoder_hidden_states: Tensor<3>,
        do_classifier_free_guidance: bool,
    ) -> Result<TextProjOutput, DecoderError> {
        let e = self.clip_embeddings_dim();
        let [bi, ei] = image_embeddings.dims();
        if ei != e {
            return Err(DecoderError::shape(
                "image_embeddings",
                format!("[B, {e}]"),
                &image_embeddings.dims(),
            ));
        }
        let image_embeddings = if do_classifier_free_guidance {
            let uncond = self
                .learned_classifier_free_guidance_embeddings
                .val()
                .unsqueeze::<2>()
                .expand([bi, e]);
            Tensor::cat(vec![uncond, image_embeddings], 0) // [2 Bi, E]
        } else {
            image_embeddings
        };
        let b = image_embeddings.dims()[0];
        if prompt_embeds.dims() != [b, e] {
            return Err(DecoderError::shape(
                "prompt_embeds",
                format!(
                    "[{b}, {e}] (rows of image_embeddings{})",
                    if do_classifier_free_guidance {
                        " after CFG doubling"
                    } else {
                        ""
                    }
                ),
                &prompt_embeds.dims(),
            ));
        }
        let [tb, _t, te] = text_encoder_hidden_states.dims();
        if tb != b || te != e {
            return Err(DecoderError::shape(
                "text_encoder_hidden_states",
                format!("[{b}, T, {e}]"),
                &text_encoder_hidden_states.dims(),
            ));
        }
        let additive = self
            .clip_image_embeddings_project_to_time_embeddings
            .forward(image_embeddings.clone())
            + self.embedding_proj.forward(prompt_embeds); // [B, Dt]
        let k = self.clip_extra_context_tokens;
        let dc = self.cross_attention_dim();
        // [B, K*Dc] -> [B, Dc, K] -> [B, K, Dc]: token j, channel c = proj[c * K + j] (diffusers'
        // reshape(batch, -1, K).permute(0, 2, 1)).
        let extra = self
            .clip_extra_context_tokens_proj
            .forward(image_embeddings)
            .reshape([b, dc, k])
            .swap_dims(1, 2);
        let text = self.text_encoder_hidden_states_norm.forward(
            self.encoder_hidden_states_proj
                .forward(text_encoder_hidden_states),
        ); // [B, T, Dc]
        Ok(TextProjOutput {
            encoder_hidden_states: Tensor::cat(vec![extra, text], 1),
            additive_clip_time_embeddings: additive,
        })
    }

    /// The decoder's attention mask for [`TextProjOutput::encoder_hidden_states`]: the text mask
    /// `[B, T]` with K `true` columns prepended (`F.pad(mask, (K, 0), value=True)`) -> `[B, K + T]`.
    pub fn extend_attention_mask(&self, text_mask: Tensor<2, Bool>) -> Tensor<2, Bool> {
        let [b, _] = text_mask.dims();
        let k = self.clip_extra_context_tokens;
        if k == 0 {
            return text_mask;
        }
        let ones = Tensor::<2, Bool>::full([b, k], true, &text_mask.device());
        Tensor::cat(vec![ones, text_mask], 1)
    }
}
