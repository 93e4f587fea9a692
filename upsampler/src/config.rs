//! diffusers `UNet2DModel` config (`config.json` of Karlo's `super_res_first/` and
//! `super_res_last/`), deserialised directly. Unknown string values are kept and reported by
//! [`UNet2DConfig::validate`] as `DecoderError::UnsupportedConfig` naming the field.

use std::path::Path;

use serde::{Deserialize, Serialize};
use unclip_decoder::DecoderError;
use unclip_decoder::config::{
    ClassEmbedType, DownBlockType, MidBlockType, SampleSize, TimeEmbeddingType, TimeScaleShift,
    UpBlockType, parse_activation,
};
use unclip_nn::Activation;

fn d_3() -> usize {
    3
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<DownBlockType> {
    [
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    ]
    .iter()
    .map(|s| DownBlockType::from(s.to_string()))
    .collect()
}
fn d_up() -> Vec<UpBlockType> {
    [
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
    ]
    .iter()
    .map(|s| UpBlockType::from(s.to_string()))
    .collect()
}
fn d_mid() -> Option<MidBlockType> {
    Some(MidBlockType::UNetMidBlock2D)
}
fn d_blocks() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn d_2() -> usize {
    2
}
fn d_1() -> usize {
    1
}
fn d_1f() -> f64 {
    1.0
}
fn d_silu() -> String {
    "silu".into()
}
fn d_head() -> Option<usize> {
    Some(8)
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_eps() -> f64 {
    1e-5
}
fn d_shift() -> TimeScaleShift {
    TimeScaleShift::Default
}
fn d_positional() -> TimeEmbeddingType {
    TimeEmbeddingType::Positional
}
fn d_conv() -> String {
    "conv".into()
}

/// diffusers `UNet2DModel` config with diffusers' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DConfig {
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "d_3")]
    pub in_channels: usize,
    #[serde(default = "d_3")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_positional")]
    pub time_embedding_type: TimeEmbeddingType,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<DownBlockType>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<MidBlockType>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<UpBlockType>,
    #[serde(default = "d_blocks")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_2")]
    pub layers_per_block: usize,
    #[serde(default = "d_1f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_1")]
    pub downsample_padding: usize,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_head")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_shift")]
    pub resnet_time_scale_shift: TimeScaleShift,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<ClassEmbedType>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
}

impl UNet2DConfig {
    /// Reads and validates `config.json` (errors name the file and the field).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DecoderError> {
        let path = path.as_ref();
        let cfg: Self = unclip_nn::read_json(path)?;
        cfg.validate().map_err(|e| e.with_path(path))?;
        Ok(cfg)
    }

    /// The activation of the resnets (`act_fn`).
    pub fn activation(&self) -> Result<Activation, DecoderError> {
        parse_activation("act_fn", &self.act_fn)
    }

    /// The group count (`norm_num_groups`, required).
    pub fn groups(&self) -> Result<usize, DecoderError> {
        match self.norm_num_groups {
            Some(g) if g > 0 => Ok(g),
            other => Err(DecoderError::UnsupportedConfig {
                path: None,
                field: "norm_num_groups".into(),
                value: format!("{other:?}"),
                supported: "a positive integer".into(),
            }),
        }
    }

    /// `time_embedding_dim` or `4 * block_out_channels[0]`.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels.first().copied().unwrap_or(0) * 4)
    }

    /// Checks every field the super-resolution UNet depends on.
    pub fn validate(&self) -> Result<(), DecoderError> {
        let unsupported =
            |field: &str, value: String, supported: &str| DecoderError::UnsupportedConfig {
                path: None,
                field: field.into(),
                value,
                supported: supported.into(),
            };
        let invalid = |field: &str, message: String| DecoderError::InvalidConfig {
            path: None,
            field: field.into(),
            message,
        };
        let n = self.down_block_types.len();
        if n == 0 {
            return Err(invalid("down_block_types", "is empty".into()));
        }
        for (i, b) in self.down_block_types.iter().enumerate() {
            if *b != DownBlockType::ResnetDownsampleBlock2D {
                return Err(unsupported(
                    &format!("down_block_types[{i}]"),
                    format!("`{}`", b.as_str()),
                    "ResnetDownsampleBlock2D",
                ));
            }
        }
        for (i, b) in self.up_block_types.iter().enumerate() {
            if *b != UpBlockType::ResnetUpsampleBlock2D {
                return Err(unsupported(
                    &format!("up_block_types[{i}]"),
                    format!("`{}`", b.as_str()),
                    "ResnetUpsampleBlock2D",
                ));
            }
        }
        if self.up_block_types.len() != n {
            return Err(invalid(
                "up_block_types",
                format!(
                    "has {} entries, down_block_types has {n}",
                    self.up_block_types.len()
                ),
            ));
        }
        if self.block_out_channels.len() != n {
            return Err(invalid(
                "block_out_channels",
                format!(
                    "has {} entries, down_block_types has {n}",
                    self.block_out_channels.len()
                ),
            ));
        }
        match &self.mid_block_type {
            None | Some(MidBlockType::UNetMidBlock2D) => {}
            Some(other) => {
                return Err(unsupported(
                    "mid_block_type",
                    format!("`{}`", other.as_str()),
                    "UNetMidBlock2D null",
                ));
            }
        }
        if self.mid_block_type.is_some() && self.add_attention {
            return Err(unsupported("add_attention", "true".into(), "false"));
        }
        self.resnet_time_scale_shift
            .check("resnet_time_scale_shift")?;
        self.time_embedding_type.check("time_embedding_type")?;
        if let Some(c) = &self.class_embed_type {
            return Err(unsupported(
                "class_embed_type",
                format!("`{}`", c.as_str()),
                "null",
            ));
        }
        if let Some(c) = self.num_class_embeds {
            return Err(unsupported("num_class_embeds", c.to_string(), "null"));
        }
        let g = self.groups()?;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % g != 0 {
                return Err(invalid(
                    &format!("block_out_channels[{i}]"),
                    format!("{c} is not divisible by norm_num_groups {g}"),
                ));
            }
        }
        self.activation()?;
        Ok(())
    }
}
