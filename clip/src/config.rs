//! CLIP configs as transformers writes them in `config.json` (`CLIPConfig`, `CLIPTextConfig`,
//! `CLIPVisionConfig`).
//!
//! Plain serde structs rather than burn's `#[derive(Config)]`: transformers writes only the
//! fields that differ from its defaults in many published configs (e.g. OpenAI's
//! `clip-vit-large-patch14` sub-configs), so every field needs transformers' own default, which
//! serde's per-field `default` gives.

use std::path::Path;

use serde::{Deserialize, Serialize};
use unclip_nn::{Activation, LoadError};

fn d_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_inter() -> usize {
    2048
}
fn d_proj() -> usize {
    512
}
fn d_text_layers() -> usize {
    12
}
fn d_text_heads() -> usize {
    8
}
fn d_max_pos() -> usize {
    77
}
fn d_act() -> Activation {
    Activation::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}
fn d_pad() -> i64 {
    1
}
fn d_bos() -> i64 {
    49406
}
fn d_eos() -> i64 {
    49407
}
fn d_vis_hidden() -> usize {
    768
}
fn d_vis_inter() -> usize {
    3072
}
fn d_vis_layers() -> usize {
    12
}
fn d_vis_heads() -> usize {
    12
}
fn d_channels() -> usize {
    3
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_logit_scale() -> f64 {
    2.6592
}

/// transformers `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_text_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default = "d_text_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_pad")]
    pub pad_token_id: i64,
    #[serde(default = "d_bos")]
    pub bos_token_id: i64,
    #[serde(default = "d_eos")]
    pub eos_token_id: i64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

/// transformers `CLIPVisionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_vis_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_vis_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default = "d_vis_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_vis_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

/// transformers `CLIPConfig`: both towers plus the shared projection size and logit scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    #[serde(default)]
    pub text_config: ClipTextConfig,
    #[serde(default)]
    pub vision_config: ClipVisionConfig,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default = "d_logit_scale")]
    pub logit_scale_init_value: f64,
}

impl ClipTextConfig {
    /// Reads a `CLIPTextConfig` `config.json`; a full `CLIPConfig` file is accepted too (its
    /// `text_config` is taken, with the top-level `projection_dim`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let v: serde_json::Value = unclip_nn::read_json(path.as_ref())?;
        let cfg = if v.get("text_config").is_some() {
            ClipConfig::from_value(path.as_ref(), v)?.text()
        } else {
            from_value(path.as_ref(), v)?
        };
        cfg.validate(path.as_ref())?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<(), LoadError> {
        validate_heads(
            path,
            "text_config",
            self.hidden_size,
            self.num_attention_heads,
        )
    }
}

impl ClipVisionConfig {
    /// Reads a `CLIPVisionConfig` `config.json`; a full `CLIPConfig` file is accepted too.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let v: serde_json::Value = unclip_nn::read_json(path.as_ref())?;
        let cfg = if v.get("vision_config").is_some() {
            ClipConfig::from_value(path.as_ref(), v)?.vision()
        } else {
            from_value(path.as_ref(), v)?
        };
        cfg.validate(path.as_ref())?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<(), LoadError> {
        validate_heads(
            path,
            "vision_config",
            self.hidden_size,
            self.num_attention_heads,
        )?;
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(LoadError::UnsupportedConfig {
                path: path.to_path_buf(),
                message: format!(
                    "vision image_size {} is not a multiple of patch_size {}",
                    self.image_size, self.patch_size
                ),
            });
        }
        Ok(())
    }

    /// Patches per image plus the class token.
    pub fn num_positions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }

    /// The `[C, S, S]` image the tower takes (`num_channels`, `image_size`).
    pub fn input_shape(&self) -> [usize; 3] {
        [self.num_channels, self.image_size, self.image_size]
    }
}

impl ClipConfig {
    /// Reads a `CLIPConfig` `config.json`.
    ///
    /// ```no_run
    /// let cfg = unclip_clip::ClipConfig::from_file("clip/config.json").unwrap();
    /// println!("projection {}", cfg.projection_dim);
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let v: serde_json::Value = unclip_nn::read_json(path.as_ref())?;
        let cfg = Self::from_value(path.as_ref(), v)?;
        cfg.text_config.validate(path.as_ref())?;
        cfg.vision_config.validate(path.as_ref())?;
        Ok(cfg)
    }

    fn from_value(path: &Path, v: serde_json::Value) -> Result<Self, LoadError> {
        let mut cfg: ClipConfig = from_value(path, v.clone())?;
        // transformers copies the top-level projection_dim into the sub-configs.
        if v.get("text_config")
            .and_then(|t| t.get("projection_dim"))
            .is_none()
        {
            cfg.text_config.projection_dim = cfg.projection_dim;
        }
        if v.get("vision_config")
            .and_then(|t| t.get("projection_dim"))
            .is_none()
        {
            cfg.vision_config.projection_dim = cfg.projection_dim;
        }
        Ok(cfg)
    }

    /// The text config with the shared projection size.
    pub fn text(&self) -> ClipTextConfig {
        ClipTextConfig {
            projection_dim: self.projection_dim,
            ..self.text_config.clone()
        }
    }

    /// The vision config with the shared projection size.
    pub fn vision(&self) -> ClipVisionConfig {
        ClipVisionConfig {
            projection_dim: self.projection_dim,
            ..self.vision_config.clone()
        }
    }
}

fn from_value<T: serde::de::DeserializeOwned>(
    path: &Path,
    v: serde_json::Value,
) -> Result<T, LoadError> {
    serde_json::from_value(v).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn validate_heads(path: &Path, which: &str, hidden: usize, heads: usize) -> Result<(), LoadError> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(LoadError::UnsupportedConfig {
            path: path.to_path_buf(),
            message: format!(
                "{which}: hidden_size {hidden} is not divisible by num_attention_heads {heads}"
            ),
        });
    }
    Ok(())
}
