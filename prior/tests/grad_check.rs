//! The prior's training gradients against finite differences: for every parameter tensor of a
//! tiny `PriorTransformer` (Karlo's structure: projections, causal transformer with a padding
//! mask, the prd token), autodiff's directional derivative of a fixed projection of the output
//! equals the central difference along the same direction.

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use unclip_diffusion::{NoiseSource, SeededNoise};
use unclip_prior::{PriorConditioning, PriorTransformer, PriorTransformerConfig};
use unclip_testkit::grad::{assert_agree, check_parameters};

const B: usize = 2;

fn randn<const D: usize>(seed: u64, shape: [usize; D], device: &Device) -> Tensor<D> {
    SeededNoise::new(seed).randn(shape, device).expect("noise")
}

#[test]
fn prior_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    Device::flex().seed(13);
    // embedding 8, 6 text tokens, 2 heads x 4, 2 layers
    let cfg = PriorTransformerConfig::tiny(8, 6, 2, 4, 2);
    let plain = Device::flex();
    let mut model = PriorTransformer::new_random(&cfg, &plain).expect("prior");
    // diffusers starts the positional embedding at zero; random values put it on the checked
    // path with non-trivial values. Edited on the plain device, then moved to the autodiff one
    // the way the trainer does it (`train()` re-activates every parameter).
    model.positional_embedding = model.positional_embedding.map(|p| {
        let noise = randn(7, p.dims(), &p.device()).mul_scalar(0.1);
        p + noise
    });
    let model = model.to_device(&device).train();
    let (e, t) = (cfg.embedding_dim, cfg.num_embeddings);
    let mut mask = vec![true; B * t];
    mask[t - 1] = false;
    mask[t - 2] = false;
    let cond = PriorConditioning {
        proj_embedding: randn(1, [B, e], &device),
        encoder_hidden_states: Some(randn(2, [B, t, e], &device)),
        attention_mask: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(mask, [B, t]),
            &device,
        )),
    };
    let x = randn(3, [B, e], &device);
    let steps = Tensor::<1>::from_floats([40.0, 800.0], &device);
    let weights = randn(4, [B, e], &device);
    let loss = |m: &PriorTransformer| -> Tensor<1> {
        (m.forward(x.clone(), steps.clone(), &cond).expect("forward") * weights.clone()).sum()
    };
    // eps 1e-2 along a unit-norm direction, as in the decoder's check.
    let checks = check_parameters(&model, loss, 1e-2, 9);
    assert_agree(&checks, 20, 0.1);
}
