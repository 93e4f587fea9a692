//! The super-resolution UNet's training gradients against finite differences: for every
//! parameter tensor of a `UNet2DModel` with the shapes upsamplers' block structure (BigGAN-style
//! resnet down/upsampling, no attention, the low-resolution image concatenated), autodiff's
//! directional derivative of a fixed projection of the output equals the central difference.

use burn::tensor::{Device, Tensor};
use unclip_diffusion::{NoiseSource, SeededNoise};
use unclip_testkit::grad::{assert_agree, check_parameters};
use unclip_upsampler::{UNet2DConfig, UNet2DModel};

const S: usize = 8;
const B: usize = 2;

fn randn<const D: usize>(seed: u64, shape: [usize; D], device: &Device) -> Tensor<D> {
    SeededNoise::new(seed).randn(shape, device).expect("noise")
}

#[test]
fn super_res_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    Device::flex().seed(12);
    let config: UNet2DConfig = serde_json::from_value(serde_json::json!({
        "act_fn": "silu",
        "add_attention": false,
        "block_out_channels": [8, 16],
        "down_block_types": ["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"],
        "up_block_types": ["ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"],
        "mid_block_type": "UNetMidBlock2D",
        "in_channels": 6,
        "out_channels": 3,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": S
    }))
    .expect("config");
    let model = UNet2DModel::new(&config, &device).expect("unet");
    let x = randn(1, [B, 6, S, S], &device);
    let t = Tensor::<1>::from_floats([20.0, 600.0], &device);
    let weights = randn(2, [B, 3, S, S], &device);
    let loss = |m: &UNet2DModel| -> Tensor<1> {
        (m.forward(x.clone(), t.clone()).expect("forward") * weights.clone()).sum()
    };
    // eps 1e-2 along a unit-norm direction, as in the decoder's check (its errors there:
    // truncation above, f32 round-off below).
    let checks = check_parameters(&model, loss, 1e-2, 5);
    assert_agree(&checks, 40, 0.1);
}
