//! The decoder's training gradients against finite differences: for every parameter tensor of
//! Karlo's text projection and UNet (the shapes decoder's block structure, three levels, so every
//! block type, the avg-pool resnet downsampling, the nearest-upsampling resnets, the
//! self+cross attention and the scale-shift time conditioning are on the path), autodiff's
//! directional derivative of a fixed projection of the UNet output equals the central
//! difference along the same direction.

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use unclip_decoder::{
    TextProjConfig, UNet2DConditionConfig, UNet2DConditionModel, UnCLIPTextProjModel,
};
use unclip_diffusion::NoiseSource;
use unclip_testkit::grad::{assert_agree, check_parameters};

const E: usize = 8; // CLIP embedding width
const L: usize = 4; // text tokens
const S: usize = 8; // image side
const B: usize = 2;

#[derive(Module, Debug)]
struct Decoder {
    text_proj: UnCLIPTextProjModel,
    unet: UNet2DConditionModel,
}

fn unet_config() -> UNet2DConditionConfig {
    serde_json::from_value(serde_json::json!({
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [8, 16, 16],
        "class_embed_type": "identity",
        "cross_attention_dim": 16,
        "down_block_types": [
            "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"
        ],
        "in_channels": 3,
        "layers_per_block": 1,
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "norm_num_groups": 4,
        "out_channels": 6,
        "resnet_time_scale_shift": "scale_shift",
        "sample_size": S,
        "up_block_types": [
            "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"
        ]
    }))
    .expect("config")
}

fn randn<const D: usize>(seed: u64, shape: [usize; D], scale: f64, device: &Device) -> Tensor<D> {
    unclip_diffusion::SeededNoise::new(seed)
        .randn(shape, device)
        .expect("noise")
        .mul_scalar(scale)
}

#[test]
fn decoder_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    Device::flex().seed(11);
    let model = Decoder {
        text_proj: UnCLIPTextProjModel::new(
            &TextProjConfig {
                clip_extra_context_tokens: 2,
                clip_embeddings_dim: E,
                time_embed_dim: 32,
                cross_attention_dim: 16,
            },
            &device,
        ),
        unet: UNet2DConditionModel::new(&unet_config(), &device).expect("unet"),
    };
    let x = randn(1, [B, 3, S, S], 1.0, &device);
    let image_embeddings = randn(2, [B, E], 1.0, &device);
    let prompt_embeds = randn(3, [B, E], 1.0, &device);
    let hidden = randn(4, [B, L, E], 1.0, &device);
    let mask = Tensor::<2, Bool>::from_data(
        TensorData::new(
            vec![true, true, true, false, true, true, false, false],
            [B, L],
        ),
        &device,
    );
    let t = Tensor::<1>::from_floats([30.0, 700.0], &device);
    let weights = randn(5, [B, 6, S, S], 1.0, &device);
    let loss = |m: &Decoder| -> Tensor<1> {
        let cond = m
            .text_proj
            .forward(
                image_embeddings.clone(),
                prompt_embeds.clone(),
                hidden.clone(),
                false,
            )
            .expect("text_proj");
        let mask = m.text_proj.extend_attention_mask(mask.clone());
        let out = m
            .unet
            .forward(
                x.clone(),
                t.clone(),
                cond.encoder_hidden_states,
                Some(cond.additive_clip_time_embeddings),
                Some(mask),
            )
            .expect("unet");
        (out * weights.clone()).sum()
    };
    // eps 1e-2 along a unit-norm direction: at 3e-2 and 1e-1 the worst errors grow with eps
    // (truncation), at 3e-3 they grow as eps shrinks (f32 round-off); at 1e-2 every tensor
    // agreed within 3.3e-2 (measured). A wrong backward is off by O(1).
    let checks = check_parameters(&model, loss, 1e-2, 3);
    assert_agree(&checks, 200, 0.1);
}
