//! Key tables mapping diffusers checkpoints of Karlo's layout onto this crate's modules.
//!
//! The modules name their fields after diffusers' attribute names (`down_blocks.{i}.resnets.{j}`,
//! `attentions.{j}.add_k_proj`, `downsamplers.0`, `time_embedding.linear_1`, ...) and keep torch's
//! layouts (`Linear` `[out, in]`, `Conv2d` `[out, in, kh, kw]`, norms `weight` / `bias`), so the
//! tables only list the places where the names differ. Loading is strict
//! (`unclip_nn::Checkpoint::load_into`): after the renames, a missing, unused or mis-shaped tensor
//! is an error naming it.

use unclip_nn::KeyMap;

/// `kakaobrain/karlo-v1-alpha` `decoder/` (diffusers `UNet2DConditionModel`), and every
/// `UNet2DConditionModel` / `UNet2DModel` built from the blocks of this crate:
///
/// | checkpoint key | module path | why |
/// |---|---|---|
/// | `….attentions.{j}.to_out.0.{weight,bias}` | `….attentions.{j}.to_out.{weight,bias}` | diffusers' `to_out` is `ModuleList([Linear, Dropout])`; the dropout has no parameters |
///
/// Every other key (`conv_in`, `time_embedding.linear_{1,2}`, `down_blocks.*`, `mid_block.*`,
/// `up_blocks.*`, `conv_norm_out`, `conv_out`) is the module path itself.
pub const DECODER_KEYMAP: KeyMap = KeyMap {
    renames: &[(r"\.to_out\.0\.", ".to_out.")],
    ignored: &[],
};

/// `kakaobrain/karlo-v1-alpha` `text_proj/` (diffusers `UnCLIPTextProjModel`): the keys are the
/// module paths (`learned_classifier_free_guidance_embeddings`, `embedding_proj`,
/// `clip_image_embeddings_project_to_time_embeddings`, `clip_extra_context_tokens_proj`,
/// `encoder_hidden_states_proj`, `text_encoder_hidden_states_norm`); the table is the identity.
pub const TEXT_PROJ_KEYMAP: KeyMap = KeyMap {
    renames: &[],
    ignored: &[],
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use burn::store::ModuleSnapshot;
    use burn::tensor::Device;
    use unclip_nn::Checkpoint;

    use super::*;
    use crate::{TextProjConfig, UNet2DConditionConfig, UNet2DConditionModel, UnCLIPTextProjModel};

    fn module_keys<M: ModuleSnapshot>(m: &M) -> BTreeSet<String> {
        m.collect(None, None, false)
            .into_iter()
            .map(|t| t.name.clone())
            .collect()
    }

    /// Every checkpoint key maps onto a module parameter of the same shape, and every parameter
    /// has a key.
    fn check_bijection<M: ModuleSnapshot>(dir: &std::path::Path, map: &KeyMap, model: &M) {
        let ckpt = Checkpoint::open_dir(dir, "diffusion_pytorch_model")
            .expect("checkpoint")
            .remap(map)
            .expect("remap");
        let ck: BTreeSet<String> = ckpt.keys().into_iter().map(str::to_string).collect();
        let mk = module_keys(model);
        let unmapped: Vec<_> = ck.difference(&mk).collect();
        let missing: Vec<_> = mk.difference(&ck).collect();
        assert!(
            unmapped.is_empty(),
            "checkpoint keys without a module parameter: {unmapped:?}"
        );
        assert!(
            missing.is_empty(),
            "module parameters without a checkpoint key: {missing:?}"
        );
        for t in model.collect(None, None, false) {
            assert_eq!(
                ckpt.shape(&t.name),
                Some(t.shape.to_vec()),
                "shape of {}",
                t.name
            );
        }
    }

    #[test]
    fn decoder_keymap_covers_fixture_checkpoint() {
        let dir = unclip_testkit::fixture_dir("unclip_tiny").join("decoder");
        let device = Device::flex();
        let cfg = UNet2DConditionConfig::from_file(dir.join("config.json")).expect("config");
        let model = UNet2DConditionModel::new(&cfg, &device).expect("model");
        check_bijection(&dir, &DECODER_KEYMAP, &model);
    }

    #[test]
    fn text_proj_keymap_covers_fixture_checkpoint() {
        let dir = unclip_testkit::fixture_dir("unclip_tiny").join("text_proj");
        let device = Device::flex();
        let cfg = TextProjConfig::from_file(dir.join("config.json")).expect("config");
        let model = UnCLIPTextProjModel::new(&cfg, &device);
        check_bijection(&dir, &TEXT_PROJ_KEYMAP, &model);
    }
}
