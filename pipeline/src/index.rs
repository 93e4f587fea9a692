//! `model_index.json`: which components a diffusers pipeline folder has.

use std::collections::BTreeMap;
use std::path::Path;

use crate::UnclipError;

/// The parsed `model_index.json`: the pipeline class and `component -> [library, class]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIndex {
    /// `_class_name` (`UnCLIPPipeline`, `UnCLIPImageVariationPipeline`, ...).
    pub class_name: String,
    /// `component -> (library, class)`; `[null, null]` entries are left out.
    pub components: BTreeMap<String, (String, String)>,
}

impl ModelIndex {
    /// Reads `<dir>/model_index.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, UnclipError> {
        let path = dir.join("model_index.json");
        let v: serde_json::Value = unclip_nn::read_json(&path)?;
        let obj = v.as_object().ok_or_else(|| UnclipError::ModelIndex {
            path: path.clone(),
            message: "not a JSON object".into(),
        })?;
        let class_name = obj
            .get("_class_name")
            .and_then(|c| c.as_str())
            .ok_or_else(|| UnclipError::ModelIndex {
                path: path.clone(),
                message: "no `_class_name`".into(),
            })?
            .to_string();
        let mut components = BTreeMap::new();
        for (k, v) in obj {
            if k.starts_with('_') {
                continue;
            }
            match v.as_array().map(|a| a.as_slice()) {
                Some([lib, class]) => {
                    if let (Some(l), Some(c)) = (lib.as_str(), class.as_str()) {
                        components.insert(k.clone(), (l.to_string(), c.to_string()));
                    }
                    // `[null, null]` marks an absent optional component.
                }
                _ => {
                    return Err(UnclipError::ModelIndex {
                        path: path.clone(),
                        message: format!("component `{k}` is not a [library, class] pair"),
                    });
                }
            }
        }
        Ok(ModelIndex {
            class_name,
            components,
        })
    }

    /// Whether the folder lists component `name`.
    pub fn has(&self, name: &str) -> bool {
        self.components.contains_key(name)
    }
}
