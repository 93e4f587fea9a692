//! CLIP's text tower (transformers `CLIPTextTransformer`, `CLIPTextModelWithProjection`).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use unclip_nn::{LayerNorm, Linear, MASK_MIN};

use crate::config::ClipTextConfig;
use crate::encoder::ClipEncoder;

/// Token + learned position embeddings.
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    /// `[vocab, D]`
    pub token_embedding: Embedding,
    /// `[max_positions, D]`
    pub position_embedding: Embedding,
}

/// Outputs of the text tower.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `final_layer_norm` output `[B, L, D]`.
    pub last_hidden_state: Tensor<3>,
    /// `last_hidden_state` at the pooling position (EOS) `[B, D]`.
    pub pooler_output: Tensor<2>,
    /// Embeddings output then each layer's output (empty unless requested).
    pub hidden_states: Vec<Tensor<3>>,
}

/// The text transformer: embeddings, causal pre-LN encoder, final LayerNorm.
#[derive(Module, Debug)]
pub struct ClipTextTransformer {
    pub embeddings: ClipTextEmbeddings,
    pub encoder: ClipEncoder,
    pub final_layer_norm: LayerNorm,
    /// `eos_token_id` of the config: 2 (legacy configs) pools at `argmax(input_ids)`, anything else
    /// at the first position holding `eos_token_id`, as transformers does.
    #[module(skip)]
    pub eos_token_id: i64,
}

impl ClipTextTransformer {
    pub fn new(cfg: &ClipTextConfig, device: &Device) -> Self {
        ClipTextTransformer {
            embeddings: ClipTextEmbeddings {
                token_embedding: EmbeddingConfig::new(cfg.vocab_size, cfg.hidden_size).init(device),
                position_embedding: EmbeddingConfig::new(
                    cfg.max_position_embeddings,
                    cfg.hidden_size,
                )
                .init(device),
            },
            encoder: ClipEncoder::new(
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.num_attention_heads,
                cfg.hidden_act,
                cfg.layer_norm_eps,
                device,
            ),
            final_layer_norm: LayerNorm::new(cfg.hidden_size, cfg.layer_norm_eps, device),
            eos_token_id: cfg.eos_token_id,
        }
    }

    /// `input_ids [B, L]`, optional `attention_mask [B, L]` (1 = token, 0 = padding).
    /// The causal mask is always applied; the padding mask only when given (the unCLIP pipelines
    /// call the text encoder without it).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        output_hidden_states: bool,
    ) -> ClipTextOutput {
        let device = input_ids.device();
        let [b, l] = input_ids.dims();
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device).unsqueeze::<2>(); // [1, L]
        let x = self.embeddings.token_embedding.forward(input_ids.clone())
            + self.embeddings.position_embedding.forward(positions); // [B, L, D]

        // Additive bias [B|1, 1, L, L]: causal (key > query masked) plus padding (masked keys).
        let causal: Tensor<2, Bool> = Tensor::<2, Bool>::tril_mask([l, l], 0, &device); // true above diagonal
        let mut bias = Tensor::<2>::zeros([l, l], &device)
            .mask_fill(causal, MASK_MIN)
            .reshape([1, 1, l, l]);
        if let Some(mask) = attention_mask {
            let pad = mask.equal_elem(0).reshape([b, 1, 1, l]); // [B, 1, 1, L]
            let pad_bias = Tensor::<4>::zeros([b, 1, 1, l], &device).mask_fill(pad, MASK_MIN);
            // Adding two MASK_MIN values gives -inf, which softmax treats as 0 weight too.
            bias = bias + pad_bias;
        }
        let (h, hidden_states) = self.encoder.forward(x, Some(bias), output_hidden_states);
        let last = self.final_layer_norm.forward(h); // [B, L, D]
        let pooled = pool(last.clone(), &input_ids, self.eos_token_id);
        ClipTextOutput {
            last_hidden_state: last,
            pooler_output: pooled,
            hidden_states,
        }
    }
}

/// The EOS positions used for pooling, one per row (see [`ClipTextTransformer::eos_token_id`]).
pub fn eos_positions(input_ids: &Tensor<2, Int>, eos_token_id: i64) -> Vec<usize> {
    let [b, l] = input_ids.dims();
    let data = input_ids.clone().into_data().convert::<i64>();
    let ids = data
        .as_slice::<i64>()
        .map(|s| s.to_vec())
        .unwrap_or_default();
    (0..b)
        .map(|r| {
            let row = &ids[r * l..(r + 1) * l];
            if eos_token_id == 2 {
                // argmax, first occurrence of the maximum (torch.argmax semantics)
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                best
            } else {
                row.iter().position(|&v| v == eos_token_id).unwrap_or(l - 1)
            }
        })
        .collect()
}

fn pool(last: Tensor<3>, input_ids: &Tensor<2, Int>, eos_token_id: i64) -> Tensor<2> {
    let device = last.device();
    let [b, _, d] = last.dims();
    let pos: Vec<i64> = eos_positions(input_ids, eos_token_id)
        .into_iter()
        .map(|p| p as i64)
        .collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(pos, [b]), &device)
        .reshape([b, 1, 1])
        .expand([b, 1, d]);
    last.gather(1, idx).reshape([b, d])
}

/// transformers `CLIPTextModelWithProjection`: the text tower and `text_projection` (no bias).
#[derive(Module, Debug)]
pub struct ClipTextModelWithProjection {
    pub text_model: ClipTextTransformer,
    /// `[P, D]`
    pub text_projection: Linear,
}

impl ClipTextModelWithProjection {
    pub fn new(cfg: &ClipTextConfig, device: &Device) -> Self {
        ClipTextModelWithProjection {
            text_model: ClipTextTransformer::new(cfg, device),
            text_projection: Linear::new(cfg.hidden_size, cfg.projection_dim, false, device),
        }
    }

    /// Returns `(text_embeds [B, P]` (not normalised, as `text_embeds` of
    /// `CLIPTextModelWithProjection`), the tower outputs).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> (Tensor<2>, ClipTextOutput) {
        let out = self.text_model.forward(input_ids, attention_mask, false);
        (self.text_projection.forward(out.pooler_output.clone()), out)
    }
}
