//! The super-resolution UNets load from PyTorch `.bin` files (read without executing pickle code)
//! and reproduce the reference outputs.

use burn::tensor::{Tensor, TensorData};
use unclip_testkit::{Io, assert_close, bin_copy_of, fixture_dir, test_device};
use unclip_upsampler::UNet2DModel;

#[test]
fn super_res_from_pytorch_bin_matches_diffusers() {
    let device = test_device();
    let root = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&root);
    for name in ["super_res_first", "super_res_last"] {
        let unet = UNet2DModel::from_pretrained(
            bin_copy_of(&root.join(name), "diffusion_pytorch_model"),
            &device,
        )
        .expect("load .bin");
        let t = io.get(&format!("{name}.timestep")).f32();
        let t = Tensor::<1>::from_data(TensorData::new(t.clone(), [t.len()]), &device);
        let out = unet
            .forward(io.get(&format!("{name}.sample")).float::<4>(&device), t)
            .unwrap();
        assert_close(
            &format!("{name}.out (.bin)"),
            out,
            io.get(&format!("{name}.out")),
            1e-4,
        );
    }
}
