//! Loading and saving the prior in the diffusers folder layout of the Karlo v1-alpha checkpoint
//! (`prior/config.json` + `prior/diffusion_pytorch_model.safetensors` or `.bin`).
//!
//! The module's field names are the checkpoint's keys except in three places, which
//! [`KARLO_PRIOR_KEYS`] rewrites (and [`save_key`] writes back, so a saved checkpoint has exactly
//! diffusers' key set):
//!
//! | checkpoint key                              | module path                             | why                                    |
//! |---------------------------------------------|-----------------------------------------|----------------------------------------|
//! | `transformer_blocks.N.attn1.to_out.0.*`     | `transformer_blocks.N.attn1.to_out.*`   | torch `ModuleList([Linear, Dropout])`  |
//! | `transformer_blocks.N.ff.net.0.proj.*`      | `transformer_blocks.N.ff.proj_in.*`     | `net[0]` is a `GELU` wrapper module     |
//! | `transformer_blocks.N.ff.net.2.*`           | `transformer_blocks.N.ff.proj_out.*`    | `net[1]` is a dropout                   |
//!
//! `causal_attention_mask` is a non-persistent buffer in diffusers (never saved); it is listed as
//! ignored in case an exporter wrote it anyway. Loading is strict (see `unclip_nn::Checkpoint`).

use std::path::Path;

use burn::tensor::Device;
use unclip_nn::{Checkpoint, KeyMap};

use crate::{PriorError, PriorTransformer, PriorTransformerConfig};

/// Stem of the weights file (`.safetensors`, `.bin`).
pub const WEIGHTS_STEM: &str = "diffusion_pytorch_model";
/// Name of the config file.
pub const CONFIG_FILE: &str = "config.json";

/// Checkpoint key -> module path for diffusers `PriorTransformer` checkpoints (Karlo layout).
pub const KARLO_PRIOR_KEYS: KeyMap = KeyMap {
    renames: &[
        (r"\.attn1\.to_out\.0\.", ".attn1.to_out."),
        (r"\.ff\.net\.0\.proj\.", ".ff.proj_in."),
        (r"\.ff\.net\.2\.", ".ff.proj_out."),
    ],
    ignored: &[r"^causal_attention_mask$"],
};

/// Module path -> checkpoint key (the inverse of [`KARLO_PRIOR_KEYS`]).
pub fn save_key(module_path: &str) -> String {
    module_path
        .replace(".attn1.to_out.", ".attn1.to_out.0.")
        .replace(".ff.proj_in.", ".ff.net.0.proj.")
        .replace(".ff.proj_out.", ".ff.net.2.")
}

impl PriorTransformer {
    /// Loads a diffusers `PriorTransformer` folder: `config.json` and
    /// `diffusion_pytorch_model.safetensors` (or `.bin`). Half-precision weights are cast to f32.
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// use unclip_prior::PriorTransformer;
    ///
    /// # fn main() -> Result<(), unclip_prior::PriorError> {
    /// let device = Device::default();
    /// let prior = PriorTransformer::from_pretrained("karlo-v1-alpha/prior", &device)?;
    /// println!("{} layers, width {}", prior.config().num_layers, prior.config().inner_dim());
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, PriorError> {
        let dir = dir.as_ref();
        let config: PriorTransformerConfig = unclip_nn::read_json(dir.join(CONFIG_FILE))?;
        config.validate()?;
        let ckpt = Checkpoint::open_dir(dir, WEIGHTS_STEM)?;
        Self::from_checkpoint(&config, ckpt, device)
    }

    /// Builds a prior of `config` and loads `ckpt` (diffusers keys) into it strictly.
    pub fn from_checkpoint(
        config: &PriorTransformerConfig,
        ckpt: Checkpoint,
        device: &Device,
    ) -> Result<Self, PriorError> {
        let model = PriorTransformer::new(config, device)?;
        Ok(ckpt.remap(&KARLO_PRIOR_KEYS)?.load_into(model)?)
    }

    /// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` (f32, diffusers keys),
    /// each atomically (temporary file + rename), so [`Self::from_pretrained`] (and diffusers)
    /// reads the folder back.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<(), PriorError> {
        let dir = dir.as_ref();
        unclip_nn::save_safetensors_with(
            self,
            dir.join(format!("{WEIGHTS_STEM}.safetensors")),
            save_key,
        )?;
        unclip_nn::write_json(dir.join(CONFIG_FILE), &self.config().to_json_value())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_key_inverts_the_rename_table() {
        for (ckpt, module) in [
            (
                "transformer_blocks.3.attn1.to_out.0.weight",
                "transformer_blocks.3.attn1.to_out.weight",
            ),
            (
                "transformer_blocks.0.ff.net.0.proj.bias",
                "transformer_blocks.0.ff.proj_in.bias",
            ),
            (
                "transformer_blocks.12.ff.net.2.weight",
                "transformer_blocks.12.ff.proj_out.weight",
            ),
            ("proj_in.weight", "proj_in.weight"),
            (
                "transformer_blocks.1.attn1.to_q.weight",
                "transformer_blocks.1.attn1.to_q.weight",
            ),
        ] {
            assert_eq!(save_key(module), ckpt);
            let mut k = ckpt.to_string();
            for (p, r) in KARLO_PRIOR_KEYS.renames {
                k = regex_lite_replace(&k, p, r);
            }
            assert_eq!(k, module);
        }
    }

    /// The three rename patterns are literal apart from escaped dots: replace literally.
    fn regex_lite_replace(s: &str, pattern: &str, rep: &str) -> String {
        s.replace(&pattern.replace('\\', ""), rep)
    }
}
