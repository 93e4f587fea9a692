//! Interpolation: slerp of image embeddings (a true spherical interpolation) and the two x_T
//! modes, on the tiny random variation fixture.

use burn::tensor::{Tensor, TensorData};
use unclip::{Control, UnclipBuilder, XtMode, slerp};
use unclip_testkit::{fixture_dir, test_device, to_vec};

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn slerp_is_spherical() {
    let device = test_device();
    let a = Tensor::<2>::from_data(TensorData::new(vec![3.0f32, 0.0, 0.0], [1, 3]), &device);
    let b = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 3.0, 0.0], [1, 3]), &device);
    assert_eq!(
        to_vec(slerp(a.clone(), b.clone(), 0.0)),
        vec![3.0, 0.0, 0.0]
    );
    let mid = to_vec(slerp(a.clone(), b.clone(), 0.5));
    // Same norm as the ends (a lerp would give 2.12), at 45 degrees.
    assert!((norm(&mid) - 3.0).abs() < 1e-4, "{mid:?}");
    assert!((mid[0] - mid[1]).abs() < 1e-5 && mid[2].abs() < 1e-6);
    let end = to_vec(slerp(a, b, 1.0));
    assert!((end[1] - 3.0).abs() < 1e-4 && end[0].abs() < 1e-4);
}

#[test]
fn interpolation_frames_run_from_one_image_to_the_other() {
    let dir = fixture_dir("unclip_variation_tiny");
    let pipe = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(&dir)
        .decoder_steps(3)
        .with_super_res(false)
        .build()
        .unwrap();
    let img = image::open(dir.join("input.png")).unwrap().to_rgb8();
    let a = pipe.encode_images(std::slice::from_ref(&img)).unwrap();
    let b = a.clone().neg();
    for mode in [
        XtMode::Fixed { seed: 0 },
        XtMode::Interpolated {
            seed: 0,
            seed_b: 99,
        },
    ] {
        let frames = pipe
            .interpolate(a.clone(), b.clone(), 3, mode, &mut |_| Control::Continue)
            .unwrap();
        assert_eq!(frames.len(), 3);
        // Frame embeddings are the slerp of the ends.
        assert_eq!(
            to_vec(frames[0].image_embeddings.clone()),
            to_vec(a.clone())
        );
        let last = to_vec(frames[2].image_embeddings.clone());
        for (x, y) in last.iter().zip(to_vec(b.clone())) {
            assert!((x - y).abs() < 1e-4);
        }
        // The first frame decodes exactly as a plain decode of `a` with the same seed would.
        let imgs: Vec<Vec<f32>> = frames
            .iter()
            .map(|f| to_vec(f.image_small.clone()))
            .collect();
        assert_ne!(imgs[0], imgs[2], "{mode:?}: the ends must differ");
    }
    // With x_T interpolated, the middle frame's noise differs from the fixed mode's.
    let fixed = pipe
        .interpolate(
            a.clone(),
            b.clone(),
            3,
            XtMode::Fixed { seed: 0 },
            &mut |_| Control::Continue,
        )
        .unwrap();
    let moving = pipe
        .interpolate(
            a,
            b,
            3,
            XtMode::Interpolated {
                seed: 0,
                seed_b: 99,
            },
            &mut |_| Control::Continue,
        )
        .unwrap();
    assert_eq!(
        to_vec(fixed[0].image_small.clone()),
        to_vec(moving[0].image_small.clone())
    );
    assert_ne!(
        to_vec(fixed[1].image_small.clone()),
        to_vec(moving[1].image_small.clone())
    );
}
