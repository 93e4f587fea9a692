//! Variations from the DDIM-inverted latent of the input (the paper's variations), on the tiny
//! random variation fixture: the plumbing (crop, resize, [-1, 1], inversion direction) is checked
//! by reconstructing the input at a low strength, determinism at eta = 0, and argument errors.

use unclip::diffusion::SeededNoise;
use unclip::{Control, UnclipBuilder, XtMode};
use unclip_testkit::{fixture_dir, test_device, to_vec};

#[test]
fn inversion_reconstructs_at_low_strength_and_is_deterministic() {
    let dir = fixture_dir("unclip_variation_tiny");
    let pipe = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(&dir)
        .decoder_steps(25)
        .super_res_steps(2)
        .build()
        .unwrap();
    let img = image::open(dir.join("input.png")).unwrap().to_rgb8();
    let x0 = to_vec(pipe.decoder_input(&img).unwrap());
    let mut errors = Vec::new();
    for strength in [0.04f32, 1.0] {
        let mut noise = SeededNoise::new(1);
        let out = pipe
            .variation_from_inversion(&img, strength, 0.0, &mut noise, &mut |_| Control::Continue)
            .unwrap();
        let rec = to_vec(out.image_small.clone());
        assert_eq!(rec.len(), x0.len());
        assert!(rec.iter().all(|v| v.is_finite()));
        let mae = rec.iter().zip(&x0).map(|(a, b)| (a - b).abs()).sum::<f32>() / rec.len() as f32;
        println!("strength {strength}: mean abs reconstruction error {mae:.4}");
        errors.push(mae);
        // eta = 0 is deterministic.
        let mut noise = SeededNoise::new(2);
        let again = pipe
            .variation_from_inversion(&img, strength, 0.0, &mut noise, &mut |_| Control::Continue)
            .unwrap();
        assert_eq!(to_vec(again.image_small), rec);
        let [b, c, h, w] = out.images.dims();
        assert_eq!([b, c], [1, 3]);
        assert!(h > pipe.decoder_input(&img).unwrap().dims()[2] && w == h);
    }
    // One step from t = 0: the input comes back almost exactly.
    assert!(
        errors[0] < 0.02,
        "low-strength reconstruction error {}",
        errors[0]
    );
}

#[test]
fn bad_strength_is_an_error() {
    let dir = fixture_dir("unclip_variation_tiny");
    let pipe = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(&dir)
        .build()
        .unwrap();
    let img = image::open(dir.join("input.png")).unwrap().to_rgb8();
    let mut noise = SeededNoise::new(0);
    for s in [0.0f32, -1.0, 1.5, f32::NAN] {
        let r = pipe.variation_from_inversion(&img, s, 0.0, &mut noise, &mut |_| Control::Continue);
        assert!(
            matches!(
                r,
                Err(unclip::UnclipError::InvalidSetting {
                    name: "strength",
                    ..
                })
            ),
            "{s}"
        );
    }
}

/// Every frame of an inverted text diff is decoded as `reconstruct` decodes: at theta 0 each
/// frame, super-resolution included, is the reconstruction (the super-resolution noise is the
/// same for every frame, not drawn on from one frame to the next).
#[test]
fn inverted_text_diff_at_theta_0_is_the_reconstruction_in_every_frame() {
    let dir = fixture_dir("unclip_variation_tiny");
    let pipe = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(&dir)
        .decoder_steps(5)
        .super_res_steps(2)
        .build()
        .unwrap();
    let img = image::open(dir.join("input.png")).unwrap().to_rgb8();
    let latent = pipe
        .invert(std::slice::from_ref(&img), &mut |_| Control::Continue)
        .unwrap();
    assert_eq!(latent.timesteps.len(), 5);
    let back = to_vec(
        pipe.reconstruct(&latent, &mut |_| Control::Continue)
            .unwrap()
            .images,
    );
    let frames = pipe
        .text_diff(
            img,
            "a photo",
            "a drawing",
            &[0.0, 0.0],
            XtMode::Inverted,
            &mut |_| Control::Continue,
        )
        .unwrap();
    for (i, f) in frames.iter().enumerate() {
        let got = to_vec(f.images.clone());
        let d = got
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-4, "frame {i} differs from the reconstruction by {d}");
    }
}
