//! The prior loads from a PyTorch `diffusion_pytorch_model.bin` (read without executing pickle
//! code) and reproduces the reference output.

use burn::tensor::{Tensor, TensorData};
use unclip_prior::{PriorConditioning, PriorTransformer};
use unclip_testkit::{Io, assert_close, bin_copy_of, fixture_dir, test_device};

#[test]
fn prior_from_pytorch_bin_matches_diffusers() {
    let device = test_device();
    let root = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&root);
    let dir = bin_copy_of(&root.join("prior"), "diffusion_pytorch_model");
    let prior = PriorTransformer::from_pretrained(&dir, &device).expect("load .bin");
    let cond = PriorConditioning {
        proj_embedding: io.get("prior.proj_embedding").float::<2>(&device),
        encoder_hidden_states: Some(io.get("prior.encoder_hidden_states").float::<3>(&device)),
        attention_mask: Some(
            io.get("prior.attention_mask")
                .int::<2>(&device)
                .equal_elem(1),
        ),
    };
    let t = io.get("prior.timestep").f32();
    let t = Tensor::<1>::from_data(TensorData::new(t.clone(), [t.len()]), &device);
    let out = prior
        .forward(io.get("prior.hidden_states").float::<2>(&device), t, &cond)
        .unwrap();
    assert_close(
        "prior.predicted_image_embedding (.bin)",
        out,
        io.get("prior.predicted_image_embedding"),
        1e-4,
    );
}
