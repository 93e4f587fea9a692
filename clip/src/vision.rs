//! CLIP's vision tower (transformers `CLIPVisionTransformer`, `CLIPVisionModelWithProjection`).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Device, Distribution, Int, Tensor};
use unclip_nn::{LayerNorm, Linear};

use crate::config::ClipVisionConfig;
use crate::encoder::ClipEncoder;

/// Patch convolution (no bias), class token and learned position embeddings.
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings {
    /// `[D]`
    pub class_embedding: Param<Tensor<1>>,
    /// `[D, C, P, P]`, stride P, no bias.
    pub patch_embedding: Conv2d,
    /// `[1 + (S/P)^2, D]`
    pub position_embedding: Embedding,
}

/// Outputs of the vision tower.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// Encoder output before `post_layernorm` `[B, 1+N, D]`.
    pub last_hidden_state: Tensor<3>,
    /// `post_layernorm(last_hidden_state[:, 0])` `[B, D]`.
    pub pooler_output: Tensor<2>,
    /// Embeddings after `pre_layrnorm`, then each layer's output (empty unless requested).
    pub hidden_states: Vec<Tensor<3>>,
}

/// The vision transformer.
#[derive(Module, Debug)]
pub struct ClipVisionTransformer {
    pub embeddings: ClipVisionEmbeddings,
    /// (sic: the checkpoint key is `pre_layrnorm`)
    pub pre_layrnorm: LayerNorm,
    pub encoder: ClipEncoder,
    pub post_layernorm: LayerNorm,
}

impl ClipVisionTransformer {
    pub fn new(cfg: &ClipVisionConfig, device: &Device) -> Self {
        let d = cfg.hidden_size;
        ClipVisionTransformer {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Param::from_tensor(Tensor::random(
                    [d],
                    Distribution::Normal(0.0, 0.02),
                    device,
                )),
                patch_embedding: Conv2dConfig::new(
                    [cfg.num_channels, d],
                    [cfg.patch_size, cfg.patch_size],
                )
                .with_stride([cfg.patch_size, cfg.patch_size])
                .with_bias(false)
                .init(device),
                position_embedding: EmbeddingConfig::new(cfg.num_positions(), d).init(device),
            },
            pre_layrnorm: LayerNorm::new(d, cfg.layer_norm_eps, device),
            encoder: ClipEncoder::new(
                cfg.num_hidden_layers,
                d,
                cfg.intermediate_size,
                cfg.num_attention_heads,
                cfg.hidden_act,
                cfg.layer_norm_eps,
                device,
            ),
            post_layernorm: LayerNorm::new(d, cfg.layer_norm_eps, device),
        }
    }

    /// The `[C, S, S]` image this tower's weights take (channels from the patch embedding, the
    /// side from its patch size and position count: `S = P * sqrt(positions - 1)`).
    ///
    /// ```
    /// use unclip_clip::{ClipVisionConfig, ClipVisionTransformer};
    /// let cfg: ClipVisionConfig = serde_json::from_str(
    ///     r#"{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
    ///         "num_attention_heads": 2, "image_size": 12, "patch_size": 4}"#,
    /// ).unwrap();
    /// let tower = ClipVisionTransformer::new(&cfg, &burn::tensor::Device::flex());
    /// assert_eq!(tower.input_shape(), [3, 12, 12]);
    /// ```
    pub fn input_shape(&self) -> [usize; 3] {
        let [_, c, p, _] = self.embeddings.patch_embedding.weight.dims();
        let n = self.embeddings.position_embedding.weight.dims()[0].saturating_sub(1);
        let side = (n as f64).sqrt().round() as usize * p;
        [c, side, side]
    }

    /// `pixel_values [B, C, S, S]` (normalised) -> outputs.
    pub fn forward(&self, pixel_values: Tensor<4>, output_hidden_states: bool) -> ClipVisionOutput {
        self.forward_with_token_bias(pixel_values, None, output_hidden_states)
    }

    /// [`Self::forward`] with `bias [B, D]` added to every token after the position embeddings
    /// (the noised CLIP's timestep embedding, [`crate::NoisedClipVisionModel`]).
    pub fn forward_with_token_bias(
        &self,
        pixel_values: Tensor<4>,
        bias: Option<Tensor<2>>,
        output_hidden_states: bool,
    ) -> ClipVisionOutput {
        let device = pixel_values.device();
        let patches = self.embeddings.patch_embedding.forward(pixel_values); // [B, D, h, w]
        let [b, d, h, w] = patches.dims();
        let patches = patches.reshape([b, d, h * w]).swap_dims(1, 2); // [B, N, D]
        let cls = self
            .embeddings
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .expand([b, 1, d]);
        let n = h * w + 1;
        let positions = Tensor::<1, Int>::arange(0..n as i64, &device).unsqueeze::<2>(); // [1, N+1]
        let x = Tensor::cat(vec![cls, patches], 1)
            + self.embeddings.position_embedding.forward(positions); // [B, N+1, D]
        let x = match bias {
            Some(bias) => x + bias.unsqueeze_dim::<3>(1),
            None => x,
        };
        let x = self.pre_layrnorm.forward(x);
        let (last, hidden_states) = self.encoder.forward(x, None, output_hidden_states);
        let cls_out = last.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        let pooled = self.post_layernorm.forward(cls_out);
        ClipVisionOutput {
            last_hidden_state: last,
            pooler_output: pooled,
            hidden_states,
        }
    }
}

/// transformers `CLIPVisionModelWithProjection`: the vision tower and `visual_projection`.
#[derive(Module, Debug)]
pub struct ClipVisionModelWithProjection {
    pub vision_model: ClipVisionTransformer,
    /// `[P, D]`
    pub visual_projection: Linear,
}

impl ClipVisionModelWithProjection {
    pub fn new(cfg: &ClipVisionConfig, device: &Device) -> Self {
        ClipVisionModelWithProjection {
            vision_model: ClipVisionTransformer::new(cfg, device),
            visual_projection: Linear::new(cfg.hidden_size, cfg.projection_dim, false, device),
        }
    }

    /// Returns `(image_embeds [B, P]` (not normalised), the tower outputs).
    pub fn forward(&self, pixel_values: Tensor<4>) -> (Tensor<2>, ClipVisionOutput) {
        let out = self.vision_model.forward(pixel_values, false);
        (
            self.visual_projection.forward(out.pooler_output.clone()),
            out,
        )
    }
}
