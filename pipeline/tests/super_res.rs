//! The super-resolution stages: `super_res_last` optional (then `super_res_first` runs every
//! step), and the optional second stage `super_res_2` (a tiny random UNet2DModel saved into a
//! copy of the `unclip_tiny` fixture) — its output size, that it is fed exactly the first stage's
//! output, its noise drawn after the first stage's, progress, cancellation and `super_res: false`.

mod common;

use burn::tensor::Tensor;
use unclip::diffusion::{RecordingNoise, ReplayNoise, SeededNoise, UnCLIPScheduler};
use unclip::upsampler::{
    SuperResRequest, UNet2DModel, no_progress, sample_super_res, to_unit_range,
};
use unclip::{
    Control, Generation, Latents, Progress, Stage, UnclipBuilder, UnclipError, UnclipPipeline,
    XtMode,
};
use unclip_testkit::{fixture_dir, test_device};

use common::{
    add_super_res_2, assert_identical, differ, first_stage_size, fixture_copy, tiny_super_res_2,
};

const SR2_STEPS: usize = 3;

fn builder(dir: &std::path::Path) -> UnclipBuilder {
    UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(dir)
        .prior_steps(2)
        .decoder_steps(2)
        .super_res_steps(2)
        .super_res_2_steps(SR2_STEPS)
        .seed(11)
}

/// The first super-resolution stage's output side (its model's sample_size).
fn first_size(pipe: &UnclipPipeline) -> usize {
    pipe.super_res_first
        .config()
        .sample_size
        .expect("sample_size")
        .hw()[0]
}

fn generate(pipe: &UnclipPipeline) -> (Generation, RecordingNoise<SeededNoise>) {
    let mut noise = RecordingNoise::new(SeededNoise::new(pipe.settings.seed));
    let out = pipe
        .text_to_image_with(
            &["a red circle"],
            &mut noise,
            Latents::default(),
            &mut |_| Control::Continue,
        )
        .expect("generate");
    (out, noise)
}

#[test]
fn without_super_res_last_the_first_model_runs_every_step() {
    let full = fixture_dir("unclip_tiny");
    let dir = fixture_copy("unclip_tiny", &["super_res_last"]);
    let pipe = builder(&dir)
        .build()
        .expect("a folder without super_res_last builds");
    assert!(
        pipe.super_res_last
            .shares_weights_with(&pipe.super_res_first)
    );
    assert!(!pipe.resident_components().contains(&"super_res_last"));
    let (out, _) = generate(&pipe);

    // The same as giving super_res_first for both roles...
    let first = UNet2DModel::from_pretrained(full.join("super_res_first"), &test_device()).unwrap();
    let both = builder(&full)
        .super_res(first.clone(), first.clone())
        .build()
        .unwrap();
    assert_identical(
        "first for both",
        generate(&both).0.images,
        out.images.clone(),
    );
    // ... and as the one-model builder method, which holds the weights once.
    let single = builder(&full).super_res_single(first).build().unwrap();
    assert!(
        single
            .super_res_last
            .shares_weights_with(&single.super_res_first)
    );
    assert_identical("single", generate(&single).0.images, out.images.clone());

    // The full folder's last step uses super_res_last: a different image, same decoder output.
    let (reference, _) = generate(&builder(&full).build().unwrap());
    assert_identical("decoder output", reference.image_small, out.image_small);
    assert!(differ(reference.images, out.images));
}

#[test]
fn second_stage_runs_on_the_first_stages_output_with_noise_drawn_after_it() {
    let device = test_device();
    let plain = builder(&fixture_dir("unclip_tiny")).build().unwrap();
    let first_size = first_size(&plain);
    let dir = fixture_copy("unclip_tiny", &[]);
    add_super_res_2(&dir, &tiny_super_res_2(first_size, &device));
    let pipe = builder(&dir).build().unwrap();
    assert!(pipe.super_res_2.is_some());

    let (out, noise) = generate(&pipe);
    let (reference, reference_noise) = generate(&plain);
    // Output size: the second model's sample_size.
    assert_eq!(out.images.dims(), [1, 3, 2 * first_size, 2 * first_size]);
    let mid = out.image_mid.clone().expect("the first stage's output");
    assert_eq!(mid.dims(), [1, 3, first_size, first_size]);
    assert!(reference.image_mid.is_none());
    // The first stage is untouched by the second: its noise and its output are the plain
    // pipeline's, bit for bit.
    let n = reference_noise.recorded().len();
    assert_eq!(&noise.recorded()[..n], reference_noise.recorded());
    assert_identical("first stage", to_unit_range(mid.clone()), reference.images);
    // The second stage, run by hand on that output with the rest of the noise, is the output.
    let tail = &noise.recorded()[n..];
    assert_eq!(
        tail.len(),
        SR2_STEPS,
        "x_T, then one draw per step but the last"
    );
    let mut replay = ReplayNoise::from_recordings(tail.iter().cloned()).unwrap();
    let model = UNet2DModel::from_pretrained(dir.join("super_res_2"), &device).unwrap();
    let mut scheduler =
        UnCLIPScheduler::from_file(dir.join("super_res_2_scheduler/scheduler_config.json"))
            .unwrap();
    let by_hand = sample_super_res(
        &model,
        &model,
        &mut scheduler,
        SuperResRequest {
            image_small: mid,
            num_inference_steps: SR2_STEPS,
            latents: None,
            output_size: None,
        },
        &mut replay,
        &mut no_progress,
    )
    .unwrap();
    assert_eq!(replay.remaining(), 0);
    assert_identical("second stage", to_unit_range(by_hand), out.images.clone());

    // The builder method gives the same stage.
    let given = builder(&fixture_dir("unclip_tiny"))
        .super_res_2(model, scheduler)
        .build()
        .unwrap();
    assert_identical("builder's stage", generate(&given).0.images, out.images);
}

#[test]
fn second_stage_reports_progress_cancels_and_follows_the_super_res_setting() {
    let device = test_device();
    let dir = fixture_copy("unclip_tiny", &[]);
    add_super_res_2(&dir, &tiny_super_res_2(first_stage_size(&dir), &device));
    let mut pipe = builder(&dir).build().unwrap();

    let mut seen = Vec::new();
    pipe.text_to_image(&["a red circle"], &mut |p| {
        seen.push(Progress { preview: None, ..p });
        Control::Continue
    })
    .unwrap();
    let sr2: Vec<_> = seen
        .iter()
        .filter(|p| p.stage == Stage::SuperRes2)
        .collect();
    assert_eq!(
        sr2.iter().map(|p| (p.step, p.total)).collect::<Vec<_>>(),
        (1..=SR2_STEPS).map(|s| (s, SR2_STEPS)).collect::<Vec<_>>()
    );
    assert_eq!(sr2.last().unwrap().timestep, 0);
    // It is the last stage, after the first super-resolution stage.
    let first_sr2 = seen
        .iter()
        .position(|p| p.stage == Stage::SuperRes2)
        .unwrap();
    assert_eq!(seen[first_sr2 - 1].stage, Stage::SuperRes);
    assert_eq!(first_sr2 + SR2_STEPS, seen.len());

    let r = pipe.text_to_image(&["a red circle"], &mut |p| {
        if p.stage == Stage::SuperRes2 && p.step == 2 {
            Control::Cancel
        } else {
            Control::Continue
        }
    });
    assert!(
        matches!(
            r,
            Err(UnclipError::Cancelled {
                stage: Stage::SuperRes2
            })
        ),
        "{:?}",
        r.err()
    );

    // super_res: false runs neither stage.
    pipe.settings.super_res = false;
    let mut stages = Vec::new();
    let out = pipe
        .text_to_image(&["a red circle"], &mut |p| {
            stages.push(p.stage);
            Control::Continue
        })
        .unwrap();
    assert!(!stages.contains(&Stage::SuperRes) && !stages.contains(&Stage::SuperRes2));
    assert_eq!(out.images.dims()[2..], out.image_small.dims()[2..]);
    assert!(out.image_mid.is_none());
}

#[test]
fn second_stage_runs_in_variations_and_interpolations() {
    let device = test_device();
    let plain = builder(&fixture_dir("unclip_variation_tiny"))
        .build()
        .unwrap();
    let size = first_size(&plain);
    let dir = fixture_copy("unclip_variation_tiny", &[]);
    add_super_res_2(&dir, &tiny_super_res_2(size, &device));
    let pipe = builder(&dir).build().unwrap();
    let img = image::open(fixture_dir("unclip_variation_tiny").join("input.png"))
        .unwrap()
        .to_rgb8();
    let check = |out: &Generation, reference: &Generation| {
        assert_eq!(out.images.dims(), [1, 3, 2 * size, 2 * size]);
        let mid = out.image_mid.clone().expect("first stage output");
        assert_identical("first stage", to_unit_range(mid), reference.images.clone());
    };
    let go = |p: &UnclipPipeline| {
        p.variations(std::slice::from_ref(&img), 1, &mut |_| Control::Continue)
            .unwrap()
    };
    check(&go(&pipe), &go(&plain));
    let inv = |p: &UnclipPipeline| {
        p.variation_from_inversion(&img, 0.5, 0.0, &mut SeededNoise::new(4), &mut |_| {
            Control::Continue
        })
        .unwrap()
    };
    check(&inv(&pipe), &inv(&plain));
    let a = pipe.encode_images(std::slice::from_ref(&img)).unwrap();
    let b: Tensor<2> = a.clone().neg();
    let frames = |p: &UnclipPipeline| {
        p.interpolate(
            a.clone(),
            b.clone(),
            2,
            XtMode::Fixed {
                seed: p.settings.seed,
            },
            &mut |_| Control::Continue,
        )
        .unwrap()
    };
    for (f, r) in frames(&pipe).iter().zip(&frames(&plain)) {
        check(f, r);
    }
}

#[test]
fn super_res_2_without_its_scheduler_is_a_named_error() {
    let device = test_device();
    let dir = fixture_copy("unclip_tiny", &[]);
    add_super_res_2(&dir, &tiny_super_res_2(first_stage_size(&dir), &device));
    std::fs::remove_dir_all(dir.join("super_res_2_scheduler")).unwrap();
    let err = builder(&dir).build().err().expect("must fail");
    assert!(
        matches!(
            err,
            UnclipError::MissingComponent {
                name: "super_res_2_scheduler",
                ..
            }
        ),
        "{err}"
    );
}
