//! Parity of the super-resolution UNets and the antialiased bicubic upsampling against the
//! diffusers 0.42 / PyTorch outputs stored in `$UNCLIP_FIXTURES/unclip_tiny` (configs, weights,
//! inputs and outputs all read from the fixture folder).

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use unclip_decoder::DecoderError;
use unclip_nn::LoadError;
use unclip_testkit::{Io, assert_close, fixture_dir, test_device};
use unclip_upsampler::{UNet2DModel, resize_bicubic_antialias};

const TOL: f32 = 1e-4;

fn root() -> PathBuf {
    fixture_dir("unclip_tiny")
}

fn unet_parity(name: &str) {
    let device = test_device();
    let dir = root();
    let io = Io::open_dir(&dir);
    let unet = UNet2DModel::from_pretrained(dir.join(name), &device).expect("load");
    let sample = io.get(&format!("{name}.sample")).float::<4>(&device);
    let t = io.get(&format!("{name}.timestep")).f32();
    let n = t.len();
    let t = Tensor::<1>::from_data(TensorData::new(t, [n]), &device);
    let out = unet.forward(sample, t).expect("forward");
    assert_close(
        &format!("{name}.out"),
        out,
        io.get(&format!("{name}.out")),
        TOL,
    );
}

#[test]
fn super_res_first_parity() {
    unet_parity("super_res_first");
}

#[test]
fn super_res_last_parity() {
    unet_parity("super_res_last");
}

/// `e2e.image_upscaled = F.interpolate(e2e.image_small, size=[S, S], mode="bicubic",
/// align_corners=False, antialias=True)`.
#[test]
fn bicubic_antialias_upsample_parity() {
    let device = test_device();
    let io = Io::open_dir(&root());
    if !io.has("e2e.image_upscaled") {
        panic!("{} has no e2e.image_upscaled", io.path.display());
    }
    let small = io.get("e2e.image_small").float::<4>(&device);
    let reference = io.get("e2e.image_upscaled");
    let [oh, ow] = [reference.shape[2], reference.shape[3]];
    let up = resize_bicubic_antialias(small, [oh, ow]);
    assert_close("e2e.image_upscaled", up, reference, TOL);
}

/// The e2e super-resolution calls (first model for every step but the last), reconstructing
/// each step's UNet input from the stored latents and the upscaled image.
#[test]
fn e2e_super_res_steps() {
    let device = test_device();
    let dir = root();
    let io = Io::open_dir(&dir);
    if !io.has("e2e.super_res.step0.out") {
        println!("no e2e super-res tensors");
        return;
    }
    let first =
        UNet2DModel::from_pretrained(dir.join("super_res_first"), &device).expect("load first");
    let last =
        UNet2DModel::from_pretrained(dir.join("super_res_last"), &device).expect("load last");
    let upscaled = io.get("e2e.image_upscaled").float::<4>(&device);
    let mut latents = io.get("e2e.super_res_latents").float::<4>(&device);
    let mut i = 0;
    while io.has(&format!("e2e.super_res.step{i}.out")) {
        let p = format!("e2e.super_res.step{i}");
        let which = io.get(&format!("{p}.model")).i64()[0];
        let unet = if which == 0 { &first } else { &last };
        let t = io.get(&format!("{p}.timestep")).f32();
        let t = Tensor::<1>::from_data(TensorData::new(t, [1]), &device);
        let x = Tensor::cat(vec![latents.clone(), upscaled.clone()], 1);
        let out = unet.forward(x, t).expect("forward");
        assert_close(&format!("{p}.out"), out, io.get(&format!("{p}.out")), TOL);
        // The next step's latents are the scheduler's output of this step.
        let next = format!("e2e.sched.super_res.step{i}.prev_sample");
        if !io.has(&next) {
            break;
        }
        latents = io.get(&next).float::<4>(&device);
        i += 1;
    }
}

#[test]
fn super_res_misshaped_tensor_is_named() {
    // A folder whose config asks for a wider conv_out than the checkpoint holds.
    let src = root().join("super_res_first");
    let dst =
        std::env::temp_dir().join(format!("unclip_upsampler_misshaped_{}", std::process::id()));
    std::fs::create_dir_all(&dst).expect("temp dir");
    let text = std::fs::read_to_string(src.join("config.json")).expect("config");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let out = v["out_channels"].as_u64().unwrap_or(3);
    v["out_channels"] = serde_json::json!(out + 1);
    std::fs::write(dst.join("config.json"), v.to_string()).expect("write config");
    std::fs::copy(
        src.join("diffusion_pytorch_model.safetensors"),
        dst.join("diffusion_pytorch_model.safetensors"),
    )
    .expect("copy weights");
    let err = UNet2DModel::from_pretrained(&dst, &test_device()).expect_err("must fail");
    match &err {
        DecoderError::Load(LoadError::ShapeMismatch { key, .. }) => {
            assert!(key.starts_with("conv_out."), "{err}")
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    let _ = std::fs::remove_dir_all(dst);
}
