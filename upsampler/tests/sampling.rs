//! The super-resolution stage of the fixture's end-to-end pipeline call, replaying the
//! pipeline's noise draws: `e2e.image_small` -> `e2e.images`.

use unclip_diffusion::{ReplayNoise, UnCLIPScheduler};
use unclip_testkit::{Io, assert_close, fixture_dir, read_json, test_device};
use unclip_upsampler::{
    SuperResRequest, UNet2DModel, no_progress, sample_super_res, to_nhwc, to_rgb8, to_unit_range,
};

#[test]
fn e2e_super_res_stage_reproduces_images() {
    let device = test_device();
    let dir = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&dir);
    let manifest = read_json(&dir.join("io.json"));
    let first = UNet2DModel::from_pretrained(dir.join("super_res_first"), &device).expect("first");
    let last = UNet2DModel::from_pretrained(dir.join("super_res_last"), &device).expect("last");
    let mut scheduler =
        UnCLIPScheduler::from_file(dir.join("super_res_scheduler")).expect("scheduler");
    let mut noise = ReplayNoise::new();
    let steps = manifest["e2e"]["scheduler_steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for step in steps.iter().filter(|s| s["stage"] == "super_res") {
        for name in step["noise"].as_array().cloned().unwrap_or_default() {
            let h = io.get(name.as_str().expect("noise name"));
            noise.push(h.shape.clone(), h.f32()).expect("recording");
        }
    }
    let request = SuperResRequest {
        image_small: io.get("e2e.image_small").float(&device),
        num_inference_steps: manifest["e2e"]["steps"]["super_res"]
            .as_u64()
            .expect("steps") as usize,
        latents: Some(io.get("e2e.super_res_latents").float(&device)),
        output_size: None,
    };
    let x = sample_super_res(
        &first,
        &last,
        &mut scheduler,
        request,
        &mut noise,
        &mut no_progress,
    )
    .expect("sample");
    assert_eq!(noise.remaining(), 0);
    let images = to_unit_range(x);
    assert_close(
        "e2e.images",
        to_nhwc(images.clone()),
        io.get("e2e.images"),
        1e-4,
    );
    let rgb = to_rgb8(images).expect("rgb");
    assert_eq!(rgb.len(), io.get("e2e.images").shape[0]);
}

#[test]
fn progress_sees_every_step_and_can_cancel() {
    use std::ops::ControlFlow;
    use unclip_decoder::DecoderError;

    let device = test_device();
    let dir = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&dir);
    let first = UNet2DModel::from_pretrained(dir.join("super_res_first"), &device).expect("first");
    let last = UNet2DModel::from_pretrained(dir.join("super_res_last"), &device).expect("last");
    let mut scheduler =
        UnCLIPScheduler::from_file(dir.join("super_res_scheduler")).expect("scheduler");
    let request = SuperResRequest {
        image_small: io.get("e2e.image_small").float(&device),
        num_inference_steps: 3,
        latents: None,
        output_size: None,
    };
    let mut seen = Vec::new();
    sample_super_res(
        &first,
        &last,
        &mut scheduler,
        request.clone(),
        &mut unclip_diffusion::SeededNoise::new(1),
        &mut |s| {
            assert_eq!(s.pred_original.dims(), s.sample.dims());
            seen.push((s.index, s.total));
            ControlFlow::Continue(())
        },
    )
    .expect("sample");
    assert_eq!(seen, vec![(0, 3), (1, 3), (2, 3)]);
    let r = sample_super_res(
        &first,
        &last,
        &mut scheduler,
        request,
        &mut unclip_diffusion::SeededNoise::new(1),
        &mut |s| {
            if s.index == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    assert!(
        matches!(r, Err(DecoderError::Cancelled { step: 2, total: 3 })),
        "{r:?}"
    );
}
