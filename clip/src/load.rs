//! Loading transformers CLIP checkpoints (`model.safetensors` or `pytorch_model.bin`, read
//! without executing pickle code) into the CLIP modules.
//!
//! # The HF CLIP key table
//! The modules' field names are the transformers key names, so the table is only:
//! - `text_model.*`, `vision_model.*`, `text_projection.weight`, `visual_projection.weight`,
//!   `logit_scale`: loaded as they are;
//! - `*.embeddings.position_ids` (a non-parameter buffer older checkpoints carry): ignored.
//!
//! A `CLIPModel` checkpoint also loads as the text-only or vision-only model: the keys of the
//! other tower (and `logit_scale`) are dropped explicitly for those, nothing else is.

use std::path::Path;

use burn::tensor::Device;
use unclip_nn::{Checkpoint, KeyMap, LoadError};

use crate::config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::model::ClipModel;
use crate::text::ClipTextModelWithProjection;
use crate::vision::ClipVisionModelWithProjection;

/// The HF CLIP layout (see the module docs).
pub const HF_CLIP_KEYS: KeyMap = KeyMap {
    renames: &[],
    ignored: &[r"(^|\.)embeddings\.position_ids$"],
};

const TEXT_KEYS: &[&str] = &["text_model.", "text_projection."];
const VISION_KEYS: &[&str] = &["vision_model.", "visual_projection."];

fn open(dir: &Path) -> Result<Checkpoint, LoadError> {
    Checkpoint::open_dir(dir, "model")?.remap(&HF_CLIP_KEYS)
}

fn keep_only(ckpt: Checkpoint, prefixes: &'static [&'static str]) -> Checkpoint {
    ckpt.drop_keys(|k| !prefixes.iter().any(|p| k.starts_with(p)))
}

impl ClipModel {
    /// Loads a `CLIPModel` folder (`config.json` + `model.safetensors` or `pytorch_model.bin`).
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// let clip = unclip_clip::ClipModel::from_pretrained("clip-vit-base-patch32", &Device::flex()).unwrap();
    /// ```
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let cfg = ClipConfig::from_file(dir.join("config.json"))?;
        Self::from_checkpoint(&cfg, open(dir)?, device)
    }

    /// Applies an opened checkpoint (strictly) to a model of `cfg`.
    pub fn from_checkpoint(
        cfg: &ClipConfig,
        ckpt: Checkpoint,
        device: &Device,
    ) -> Result<Self, LoadError> {
        ckpt.load_into(ClipModel::new(cfg, device))
    }
}

impl ClipTextModelWithProjection {
    /// Loads a `CLIPTextModelWithProjection` folder (or the text half of a `CLIPModel` folder).
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// let te = unclip_clip::ClipTextModelWithProjection::from_pretrained("karlo/text_encoder", &Device::flex()).unwrap();
    /// ```
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let cfg = ClipTextConfig::from_file(dir.join("config.json"))?;
        let mut ckpt = open(dir)?;
        if ckpt.keys().iter().any(|k| k.starts_with("vision_model.")) {
            ckpt = keep_only(ckpt, TEXT_KEYS);
        }
        ckpt.load_into(ClipTextModelWithProjection::new(&cfg, device))
    }
}

impl ClipVisionModelWithProjection {
    /// Loads a `CLIPVisionModelWithProjection` folder (or the vision half of a `CLIPModel` folder).
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// let device = Device::flex();
    /// let ie = unclip_clip::ClipVisionModelWithProjection::from_pretrained("image_encoder", &device)?;
    /// let [c, h, w] = ie.vision_model.input_shape(); // what the checkpoint takes, e.g. [3, 224, 224]
    /// # Ok::<(), unclip_nn::LoadError>(())
    /// ```
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let cfg = ClipVisionConfig::from_file(dir.join("config.json"))?;
        let mut ckpt = open(dir)?;
        if ckpt.keys().iter().any(|k| k.starts_with("text_model.")) {
            ckpt = keep_only(ckpt, VISION_KEYS);
        }
        ckpt.load_into(ClipVisionModelWithProjection::new(&cfg, device))
    }
}
