//! The super-resolution UNet's training gradients against finite differences: for every
//! parameter tensor of a `UNet2DModel` with the shapes upsamplers' block structure (BigGAN-style
//! resnet down/upsampling, no attention, the low-resolution image concatenated), autodiff's
//! directional derivative of a fixed projection of the output equals the central difference.

use burn::tensor::{Device, Tensor};
use unclip_diffusion::{NoiseSource, SeededNoise};
use unclip_testkit::grad::check_parameters;
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
    let mut worst = 0f64;
    for c in &checks {
        let r = c.relative_error(1e-2);
        worst = worst.max(r);
        if r > 3e-3 {
            println!(
                "{:3} {:?}: autodiff {:+.5e}, finite difference {:+.5e}, relative error {r:.2e}",
                c.index, c.shape, c.analytic, c.numeric
            );
        }
    }
    println!(
        "{} parameter tensors, worst relative error {worst:.2e}",
        checks.len()
    );
    assert!(
        checks.len() > 40,
        "only {} parameter tensors visited",
        checks.len()
    );
    assert!(
        checks.iter().filter(|c| c.analytic.abs() > 1e-2).count() > checks.len() / 2,
        "most gradients are zero: the loss does not reach the parameters"
    );
    assert!(
        worst < 0.1,
        "a gradient disagrees with its finite difference: {worst:.3}"
    );
}
