//! Configs as diffusers writes them in `config.json`, deserialised directly:
//! [`UNet2DConditionConfig`] (the decoder, diffusers `UNet2DConditionModel`) and
//! [`TextProjConfig`] (diffusers `UnCLIPTextProjModel`). The shared string-valued fields (block
//! types, `resnet_time_scale_shift`) are enums here and reused by `unclip-upsampler`'s
//! `UNet2DModel` config.
//!
//! Unknown values of string-valued fields deserialise into an `Other(..)` variant so that
//! [`UNet2DConditionConfig::validate`] can report them as [`DecoderError::UnsupportedConfig`]
//! naming the field (serde's own errors name neither the field nor the supported values).
//! Every field carries diffusers' own default, so partial configs read as diffusers reads them.

use std::path::Path;

use serde::{Deserialize, Serialize};
use unclip_nn::Activation;

use crate::DecoderError;

/// Defines a string-valued config enum with a catch-all `Other(String)` variant.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vm])* $var,)+
            /// A value this implementation does not know (reported by `validate`).
            Other(String),
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($s => $name::$var,)+
                    _ => $name::Other(s),
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }

        impl $name {
            /// The diffusers spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$var => $s,)+
                    $name::Other(s) => s.as_str(),
                }
            }

            /// The supported spellings, for error messages.
            pub fn supported() -> &'static str {
                concat!($($s, " "),+)
            }

            /// `Err(UnsupportedConfig)` naming `field` when this is `Other`.
            pub fn check(&self, field: &str) -> Result<(), DecoderError> {
                match self {
                    $name::Other(s) => Err(DecoderError::unsupported(field, format!("`{s}`"), Self::supported().trim_end())),
                    _ => Ok(()),
                }
            }
        }
    };
}

string_enum!(
    /// `down_block_types` entries.
    DownBlockType {
        /// Resnets, then a resnet with `down=True` (average pooling) as downsampler.
        ResnetDownsampleBlock2D = "ResnetDownsampleBlock2D",
        /// Resnet + GLIDE-style added-KV attention per layer, resnet downsampler.
        SimpleCrossAttnDownBlock2D = "SimpleCrossAttnDownBlock2D",
    }
);

string_enum!(
    /// `up_block_types` entries.
    UpBlockType {
        ResnetUpsampleBlock2D = "ResnetUpsampleBlock2D",
        SimpleCrossAttnUpBlock2D = "SimpleCrossAttnUpBlock2D",
    }
);

string_enum!(
    /// `mid_block_type`.
    MidBlockType {
        /// resnet, (attention, resnet) x num_layers, attention with added KV.
        UNetMidBlock2DSimpleCrossAttn = "UNetMidBlock2DSimpleCrossAttn",
        /// resnet, resnet (no attention: `add_attention = false`).
        UNetMidBlock2D = "UNetMidBlock2D",
    }
);

string_enum!(
    /// `resnet_time_scale_shift` (ResnetBlock2D `time_embedding_norm`).
    TimeScaleShift {
        /// `h = norm2(conv1(..) + proj(temb))`.
        Default = "default",
        /// `h = norm2(conv1(..)) * (1 + scale) + shift`, `[scale, shift] = proj(temb)`.
        ScaleShift = "scale_shift",
    }
);

string_enum!(
    /// `time_embedding_type`.
    TimeEmbeddingType {
        Positional = "positional",
    }
);

string_enum!(
    /// `class_embed_type`.
    ClassEmbedType {
        /// class labels are already time embeddings (`[B, time_embed_dim]`) and are added.
        Identity = "identity",
    }
);

/// A field diffusers accepts as one value or one value per down block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// One value per block (`n` blocks), checking a list's length.
    pub fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>, DecoderError> {
        match self {
            OneOrMany::One(v) => Ok(vec![v.clone(); n]),
            OneOrMany::Many(v) if v.len() == n => Ok(v.clone()),
            OneOrMany::Many(v) => Err(DecoderError::invalid(
                field,
                format!("has {} entries but there are {n} down blocks", v.len()),
            )),
        }
    }
}

/// `sample_size`: an int or `[h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

impl SampleSize {
    /// `[h, w]`.
    pub fn hw(&self) -> [usize; 2] {
        match *self {
            SampleSize::Square(s) => [s, s],
            SampleSize::Rect(r) => r,
        }
    }
}

/// Parses an activation name (`act_fn`, ...), naming the field on failure.
pub fn parse_activation(field: &str, name: &str) -> Result<Activation, DecoderError> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        DecoderError::unsupported(
            field,
            format!("`{name}`"),
            "silu swish gelu gelu_new relu quick_gelu",
        )
    })
}

/// Fails naming `field` unless `value` is `None`.
pub(crate) fn require_null<T: std::fmt::Debug>(
    field: &str,
    value: &Option<T>,
) -> Result<(), DecoderError> {
    match value {
        None => Ok(()),
        Some(v) => Err(DecoderError::unsupported(field, format!("{v:?}"), "null")),
    }
}

fn d_4() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_blocks_out() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> OneOrMany<usize> {
    OneOrMany::One(2)
}
fn d_1() -> usize {
    1
}
fn d_1f() -> f64 {
    1.0
}
fn d_silu() -> String {
    "silu".to_string()
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_eps5() -> f64 {
    1e-5
}
fn d_xattn() -> OneOrMany<usize> {
    OneOrMany::One(1280)
}
fn d_head_dim() -> OneOrMany<usize> {
    OneOrMany::One(8)
}
fn d_shift() -> TimeScaleShift {
    TimeScaleShift::Default
}
fn d_mid() -> Option<MidBlockType> {
    Some(MidBlockType::Other("UNetMidBlock2DCrossAttn".to_string()))
}
fn d_positional() -> TimeEmbeddingType {
    TimeEmbeddingType::Positional
}
fn d_3() -> usize {
    3
}
fn d_false_many() -> OneOrMany<bool> {
    OneOrMany::One(false)
}

/// diffusers `UNet2DConditionModel` config (the fields the decoder uses; unknown fields are
/// ignored, fields that would change the architecture in unsupported ways are checked by
/// [`validate`](Self::validate)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "d_4")]
    pub in_channels: usize,
    #[serde(default = "d_4")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<DownBlockType>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<MidBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    #[serde(default = "d_false_many")]
    pub only_cross_attention: OneOrMany<bool>,
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    #[serde(default = "d_blocks_out")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: OneOrMany<usize>,
    #[serde(default = "d_1")]
    pub downsample_padding: usize,
    #[serde(default = "d_1f")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "d_eps5")]
    pub norm_eps: f64,
    #[serde(default = "d_xattn")]
    pub cross_attention_dim: OneOrMany<usize>,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: OneOrMany<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<serde_json::Value>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub class_embed_type: Option<ClassEmbedType>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default = "d_shift")]
    pub resnet_time_scale_shift: TimeScaleShift,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "d_1f")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "d_positional")]
    pub time_embedding_type: TimeEmbeddingType,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "d_3")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_3")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub dual_cross_attention: bool,
}

/// The per-block values of a validated [`UNet2DConditionConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLayout {
    pub layers_per_block: Vec<usize>,
    pub attention_head_dim: Vec<usize>,
    pub cross_attention_dim: Vec<usize>,
    pub only_cross_attention: Vec<bool>,
    pub mid_only_cross_attention: bool,
    pub norm_num_groups: usize,
    pub act: Activation,
    pub time_embed_act: Option<Activation>,
    pub timestep_post_act: Option<Activation>,
    pub time_embed_dim: usize,
}

impl UNet2DConditionConfig {
    /// Reads `config.json` (path errors and config errors name the file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DecoderError> {
        let path = path.as_ref();
        let cfg: Self = unclip_nn::read_json(path)?;
        cfg.layout().map_err(|e| e.with_path(path))?;
        Ok(cfg)
    }

    /// Checks every field this implementation depends on; see [`layout`](Self::layout).
    pub fn validate(&self) -> Result<(), DecoderError> {
        self.layout().map(|_| ())
    }

    /// Validates the config and resolves per-block values.
    pub fn layout(&self) -> Result<UNetLayout, DecoderError> {
        let n = self.down_block_types.len();
        if n == 0 {
            return Err(DecoderError::invalid("down_block_types", "is empty"));
        }
        for (i, b) in self.down_block_types.iter().enumerate() {
            b.check(&format!("down_block_types[{i}]"))?;
        }
        for (i, b) in self.up_block_types.iter().enumerate() {
            b.check(&format!("up_block_types[{i}]"))?;
        }
        match &self.mid_block_type {
            Some(MidBlockType::UNetMidBlock2DSimpleCrossAttn) | None => {}
            Some(other) => {
                return Err(DecoderError::unsupported(
                    "mid_block_type",
                    format!("`{}`", other.as_str()),
                    "UNetMidBlock2DSimpleCrossAttn null",
                ));
            }
        }
        if self.up_block_types.len() != n {
            return Err(DecoderError::invalid(
                "up_block_types",
                format!(
                    "has {} entries, down_block_types has {n}",
                    self.up_block_types.len()
                ),
            ));
        }
        if self.block_out_channels.len() != n {
            return Err(DecoderError::invalid(
                "block_out_channels",
                format!(
                    "has {} entries, down_block_types has {n}",
                    self.block_out_channels.len()
                ),
            ));
        }
        self.resnet_time_scale_shift
            .check("resnet_time_scale_shift")?;
        self.time_embedding_type.check("time_embedding_type")?;
        if let Some(c) = &self.class_embed_type {
            c.check("class_embed_type")?;
        }
        require_null("num_attention_heads", &self.num_attention_heads)?;
        require_null("cross_attention_norm", &self.cross_attention_norm)?;
        require_null("num_class_embeds", &self.num_class_embeds)?;
        require_null("addition_embed_type", &self.addition_embed_type)?;
        require_null("encoder_hid_dim", &self.encoder_hid_dim)?;
        require_null("encoder_hid_dim_type", &self.encoder_hid_dim_type)?;
        require_null("time_cond_proj_dim", &self.time_cond_proj_dim)?;
        if self.class_embeddings_concat {
            return Err(DecoderError::unsupported(
                "class_embeddings_concat",
                "true",
                "false",
            ));
        }
        if self.conv_in_kernel.is_multiple_of(2) {
            return Err(DecoderError::unsupported(
                "conv_in_kernel",
                self.conv_in_kernel,
                "odd sizes",
            ));
        }
        if self.conv_out_kernel.is_multiple_of(2) {
            return Err(DecoderError::unsupported(
                "conv_out_kernel",
                self.conv_out_kernel,
                "odd sizes",
            ));
        }
        let norm_num_groups = match self.norm_num_groups {
            Some(g) if g > 0 => g,
            other => {
                return Err(DecoderError::unsupported(
                    "norm_num_groups",
                    format!("{other:?}"),
                    "a positive integer",
                ));
            }
        };
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % norm_num_groups != 0 {
                return Err(DecoderError::invalid(
                    format!("block_out_channels[{i}]"),
                    format!("{c} is not divisible by norm_num_groups {norm_num_groups}"),
                ));
            }
        }
        let act = parse_activation("act_fn", &self.act_fn)?;
        let time_embed_act = self
            .time_embedding_act_fn
            .as_deref()
            .map(|a| parse_activation("time_embedding_act_fn", a))
            .transpose()?;
        let timestep_post_act = self
            .timestep_post_act
            .as_deref()
            .map(|a| parse_activation("timestep_post_act", a))
            .transpose()?;
        let attention_head_dim = self.attention_head_dim.per_block(n, "attention_head_dim")?;
        for (i, (&hd, &c)) in attention_head_dim
            .iter()
            .zip(&self.block_out_channels)
            .enumerate()
        {
            if hd == 0 || c % hd != 0 {
                return Err(DecoderError::invalid(
                    format!("attention_head_dim[{i}]"),
                    format!("{hd} does not divide block_out_channels[{i}] = {c}"),
                ));
            }
        }
        let only_cross_attention = self
            .only_cross_attention
            .per_block(n, "only_cross_attention")?;
        let mid_only_cross_attention =
            self.mid_block_only_cross_attention
                .unwrap_or(match &self.only_cross_attention {
                    OneOrMany::One(b) => *b,
                    OneOrMany::Many(_) => false,
                });
        Ok(UNetLayout {
            layers_per_block: self.layers_per_block.per_block(n, "layers_per_block")?,
            attention_head_dim,
            cross_attention_dim: self
                .cross_attention_dim
                .per_block(n, "cross_attention_dim")?,
            only_cross_attention,
            mid_only_cross_attention,
            norm_num_groups,
            act,
            time_embed_act,
            timestep_post_act,
            time_embed_dim: self
                .time_embedding_dim
                .unwrap_or(self.block_out_channels[0] * 4),
        })
    }
}

fn d_extra_tokens() -> usize {
    4
}
fn d_clip_dim() -> usize {
    768
}

/// diffusers `UnCLIPTextProjModel` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextProjConfig {
    /// K: extra context tokens made from the image embedding.
    #[serde(default = "d_extra_tokens")]
    pub clip_extra_context_tokens: usize,
    /// E: CLIP embedding width (image and text embeddings, text hidden states).
    #[serde(default = "d_clip_dim")]
    pub clip_embeddings_dim: usize,
    /// The decoder's time embedding width.
    pub time_embed_dim: usize,
    /// The decoder's context width.
    pub cross_attention_dim: usize,
}

impl TextProjConfig {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DecoderError> {
        Ok(unclip_nn::read_json(path)?)
    }
}
