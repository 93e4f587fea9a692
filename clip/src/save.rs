//! Writing CLIP checkpoints in the transformers layout (`config.json` + `model.safetensors`), so
//! a model trained here reloads through [`ClipModel::from_pretrained`],
//! [`ClipTextModelWithProjection::from_pretrained`] and
//! [`ClipVisionModelWithProjection::from_pretrained`] (and through transformers).
//!
//! The modules' field names are the checkpoint keys ([`crate::HF_CLIP_KEYS`] renames nothing),
//! so the tensors are written under their module paths. One difference from transformers:
//! `logit_scale` is written with shape `[1]` (transformers stores a 0-dim tensor and reads both).

use std::path::Path;

use serde::Serialize;
use unclip_nn::LoadError;

use crate::config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::model::ClipModel;
use crate::text::ClipTextModelWithProjection;
use crate::vision::ClipVisionModelWithProjection;

/// Writes `dir/config.json` (the config plus `architectures` / `model_type`) and
/// `dir/model.safetensors`, each atomically.
pub(crate) fn save_folder<M: burn::module::Module + burn::store::ModuleSnapshot>(
    module: &M,
    config: &impl Serialize,
    architecture: &str,
    model_type: &str,
    dir: &Path,
) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir).map_err(|e| LoadError::Write {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let cpath = dir.join("config.json");
    let mut value = serde_json::to_value(config).map_err(|e| LoadError::Write {
        path: cpath.clone(),
        message: e.to_string(),
    })?;
    if let Some(map) = value.as_object_mut() {
        map.insert("architectures".into(), serde_json::json!([architecture]));
        map.insert("model_type".into(), serde_json::json!(model_type));
    }
    unclip_nn::save_safetensors(module, dir.join("model.safetensors"))?;
    unclip_nn::write_json(&cpath, &value)
}

impl ClipModel {
    /// Writes a `CLIPModel` folder that [`ClipModel::from_pretrained`] reads back.
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// use unclip_clip::{ClipConfig, ClipModel};
    /// let cfg: ClipConfig = serde_json::from_str("{}")?;
    /// let clip = ClipModel::new(&cfg, &Device::flex());
    /// clip.save_pretrained(&cfg, "runs/clip")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_pretrained(
        &self,
        config: &ClipConfig,
        dir: impl AsRef<Path>,
    ) -> Result<(), LoadError> {
        save_folder(self, config, "CLIPModel", "clip", dir.as_ref())
    }

    /// Splits the dual encoder into the text and vision models with their projections (what a
    /// diffusers unCLIP folder keeps as `text_encoder/` and `image_encoder/`).
    pub fn into_towers(self) -> (ClipTextModelWithProjection, ClipVisionModelWithProjection) {
        (
            ClipTextModelWithProjection {
                text_model: self.text_model,
                text_projection: self.text_projection,
            },
            ClipVisionModelWithProjection {
                vision_model: self.vision_model,
                visual_projection: self.visual_projection,
            },
        )
    }
}

impl ClipTextModelWithProjection {
    /// Writes a `CLIPTextModelWithProjection` folder (`config.json` + `model.safetensors`).
    pub fn save_pretrained(
        &self,
        config: &ClipTextConfig,
        dir: impl AsRef<Path>,
    ) -> Result<(), LoadError> {
        save_folder(
            self,
            config,
            "CLIPTextModelWithProjection",
            "clip_text_model",
            dir.as_ref(),
        )
    }
}

impl ClipVisionModelWithProjection {
    /// Writes a `CLIPVisionModelWithProjection` folder (`config.json` + `model.safetensors`).
    pub fn save_pretrained(
        &self,
        config: &ClipVisionConfig,
        dir: impl AsRef<Path>,
    ) -> Result<(), LoadError> {
        save_folder(
            self,
            config,
            "CLIPVisionModelWithProjection",
            "clip_vision_model",
            dir.as_ref(),
        )
    }
}
