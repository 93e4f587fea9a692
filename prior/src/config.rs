//! `PriorTransformerConfig`: the `config.json` of a diffusers `PriorTransformer`
//! (diffusers `models/transformers/prior_transformer.py`, `PriorTransformer.__init__`).
//!
//! The struct deserialises the file as diffusers writes it: bookkeeping keys such as
//! `_class_name` / `_diffusers_version` are ignored, absent keys take diffusers' defaults.
//! Option values diffusers itself rejects, or that this port does not implement, are reported by
//! [`PriorTransformerConfig::validate`] as [`PriorError::UnsupportedConfig`] naming the field.

use serde::{Deserialize, Serialize};

use crate::PriorError;

/// Hyper-parameters of the prior transformer, field for field as in diffusers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorTransformerConfig {
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "d_layers")]
    pub num_layers: usize,
    /// Width of the CLIP embeddings the prior reads (`hidden_states`, token states).
    #[serde(default = "d_embedding_dim")]
    pub embedding_dim: usize,
    /// Number of text tokens (`encoder_hidden_states.shape[1]`).
    #[serde(default = "d_num_embeddings")]
    pub num_embeddings: usize,
    /// Tokens appended after the text tokens: text embedding, time, x_t, prd (4 for Karlo).
    #[serde(default = "d_additional")]
    pub additional_embeddings: usize,
    /// Dropout probability (identity at inference; not applied by this port's training loop).
    #[serde(default)]
    pub dropout: f64,
    /// `silu` (alias `swish`), `gelu` or `relu`.
    #[serde(default = "d_act")]
    pub time_embed_act_fn: String,
    /// `null` or `"layer"`.
    #[serde(default)]
    pub norm_in_type: Option<String>,
    /// `null` or `"layer"`.
    #[serde(default)]
    pub embedding_proj_norm_type: Option<String>,
    /// `"linear"` or `null`.
    #[serde(default = "d_hid_proj")]
    pub encoder_hid_proj_type: Option<String>,
    /// `"prd"` or `null`.
    #[serde(default = "d_added")]
    pub added_emb_type: Option<String>,
    /// Defaults to `num_attention_heads * attention_head_dim`.
    #[serde(default)]
    pub time_embed_dim: Option<usize>,
    /// Width of `proj_embedding`; defaults to `embedding_dim`.
    #[serde(default)]
    pub embedding_proj_dim: Option<usize>,
    /// Width of the output; defaults to `embedding_dim`.
    #[serde(default)]
    pub clip_embed_dim: Option<usize>,
}

fn d_heads() -> usize {
    32
}
fn d_head_dim() -> usize {
    64
}
fn d_layers() -> usize {
    20
}
fn d_embedding_dim() -> usize {
    768
}
fn d_num_embeddings() -> usize {
    77
}
fn d_additional() -> usize {
    4
}
fn d_act() -> String {
    "silu".to_string()
}
fn d_hid_proj() -> Option<String> {
    Some("linear".to_string())
}
fn d_added() -> Option<String> {
    Some("prd".to_string())
}

impl Default for PriorTransformerConfig {
    /// diffusers' defaults (the Karlo v1-alpha prior's sizes).
    fn default() -> Self {
        PriorTransformerConfig {
            num_attention_heads: d_heads(),
            attention_head_dim: d_head_dim(),
            num_layers: d_layers(),
            embedding_dim: d_embedding_dim(),
            num_embeddings: d_num_embeddings(),
            additional_embeddings: d_additional(),
            dropout: 0.0,
            time_embed_act_fn: d_act(),
            norm_in_type: None,
            embedding_proj_norm_type: None,
            encoder_hid_proj_type: d_hid_proj(),
            added_emb_type: d_added(),
            time_embed_dim: None,
            embedding_proj_dim: None,
            clip_embed_dim: None,
        }
    }
}

/// The activation of the time embedding MLP (diffusers `get_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeActivation {
    Silu,
    Gelu,
    Relu,
}

impl TimeActivation {
    pub(crate) fn to_nn(self) -> unclip_nn::Activation {
        match self {
            TimeActivation::Silu => unclip_nn::Activation::Silu,
            TimeActivation::Gelu => unclip_nn::Activation::Gelu,
            TimeActivation::Relu => unclip_nn::Activation::Relu,
        }
    }
}

fn unsupported(field: &'static str, value: impl std::fmt::Debug) -> PriorError {
    PriorError::UnsupportedConfig {
        field,
        value: format!("{value:?}"),
    }
}

/// `None` or `Some("layer")`, else an error naming `field`.
fn layer_or_none(field: &'static str, v: &Option<String>) -> Result<bool, PriorError> {
    match v.as_deref() {
        None => Ok(false),
        Some("layer") => Ok(true),
        Some(other) => Err(unsupported(field, other)),
    }
}

impl PriorTransformerConfig {
    /// A tiny configuration for tests and examples (`heads * head_dim` inner width).
    pub fn tiny(
        embedding_dim: usize,
        num_embeddings: usize,
        heads: usize,
        head_dim: usize,
        layers: usize,
    ) -> Self {
        PriorTransformerConfig {
            num_attention_heads: heads,
            attention_head_dim: head_dim,
            num_layers: layers,
            embedding_dim,
            num_embeddings,
            ..Self::default()
        }
    }

    /// `num_attention_heads * attention_head_dim`, the width inside the transformer.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// `time_embed_dim or inner_dim`.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embed_dim.unwrap_or_else(|| self.inner_dim())
    }

    /// `embedding_proj_dim or embedding_dim`.
    pub fn embedding_proj_dim(&self) -> usize {
        self.embedding_proj_dim.unwrap_or(self.embedding_dim)
    }

    /// `clip_embed_dim or embedding_dim`.
    pub fn clip_embed_dim(&self) -> usize {
        self.clip_embed_dim.unwrap_or(self.embedding_dim)
    }

    /// Length of the positional embedding / of the token sequence with text states:
    /// `num_embeddings + additional_embeddings`.
    pub fn seq_len(&self) -> usize {
        self.num_embeddings + self.additional_embeddings
    }

    pub fn time_activation(&self) -> Result<TimeActivation, PriorError> {
        match self.time_embed_act_fn.as_str() {
            "silu" | "swish" => Ok(TimeActivation::Silu),
            "gelu" => Ok(TimeActivation::Gelu),
            "relu" => Ok(TimeActivation::Relu),
            other => Err(unsupported("time_embed_act_fn", other)),
        }
    }

    pub fn has_norm_in(&self) -> Result<bool, PriorError> {
        layer_or_none("norm_in_type", &self.norm_in_type)
    }

    pub fn has_embedding_proj_norm(&self) -> Result<bool, PriorError> {
        layer_or_none("embedding_proj_norm_type", &self.embedding_proj_norm_type)
    }

    pub fn has_encoder_hid_proj(&self) -> Result<bool, PriorError> {
        match self.encoder_hid_proj_type.as_deref() {
            None => Ok(false),
            Some("linear") => Ok(true),
            Some(other) => Err(unsupported("encoder_hid_proj_type", other)),
        }
    }

    pub fn has_prd(&self) -> Result<bool, PriorError> {
        match self.added_emb_type.as_deref() {
            None => Ok(false),
            Some("prd") => Ok(true),
            Some(other) => Err(unsupported("added_emb_type", other)),
        }
    }

    /// Checks every option value and size; the model is only built from a validated config.
    pub fn validate(&self) -> Result<(), PriorError> {
        self.time_activation()?;
        self.has_norm_in()?;
        self.has_embedding_proj_norm()?;
        self.has_encoder_hid_proj()?;
        self.has_prd()?;
        for (field, v) in [
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("embedding_dim", self.embedding_dim),
            ("time_embed_dim", self.time_embed_dim()),
            ("embedding_proj_dim", self.embedding_proj_dim()),
            ("clip_embed_dim", self.clip_embed_dim()),
        ] {
            if v == 0 {
                return Err(unsupported(field, v));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(unsupported("dropout", self.dropout));
        }
        Ok(())
    }

    /// The JSON diffusers writes (with `_class_name`), for saving checkpoints.
    pub fn to_json_value(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut v {
            map.insert(
                "_class_name".into(),
                serde_json::Value::String("PriorTransformer".into()),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_diffusers_json_and_ignores_bookkeeping() {
        let json = r#"{"_class_name":"PriorTransformer","_diffusers_version":"0.42.1",
            "added_emb_type":"prd","additional_embeddings":4,"attention_head_dim":12,
            "clip_embed_dim":null,"dropout":0.0,"embedding_dim":12,"embedding_proj_dim":null,
            "embedding_proj_norm_type":null,"encoder_hid_proj_type":"linear","norm_in_type":null,
            "num_attention_heads":2,"num_embeddings":77,"num_layers":2,"time_embed_act_fn":"silu",
            "time_embed_dim":null}"#;
        let c: PriorTransformerConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.inner_dim(), 24);
        assert_eq!(c.seq_len(), 81);
        assert_eq!(c.clip_embed_dim(), 12);
        let back: PriorTransformerConfig = serde_json::from_value(c.to_json_value()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unsupported_values_are_typed_errors() {
        let c = PriorTransformerConfig {
            added_emb_type: Some("clip".into()),
            ..Default::default()
        };
        match c.validate() {
            Err(PriorError::UnsupportedConfig { field, .. }) => assert_eq!(field, "added_emb_type"),
            other => panic!("{other:?}"),
        }
        let c = PriorTransformerConfig {
            time_embed_act_fn: "mish".into(),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(PriorError::UnsupportedConfig {
                field: "time_embed_act_fn",
                ..
            })
        ));
        let c = PriorTransformerConfig {
            norm_in_type: Some("rms".into()),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(PriorError::UnsupportedConfig {
                field: "norm_in_type",
                ..
            })
        ));
    }
}
