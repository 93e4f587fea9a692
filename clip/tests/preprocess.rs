//! CLIPImageProcessor parity on the variation fixture: the resize (torchvision and PIL flavours)
//! and the final pixel values, read from `unclip_variation_tiny` (`input.png`,
//! `feature_extractor/preprocessor_config.json`, `io.safetensors`); and the image tower on those
//! pixels (`image_encoder.*`).

use unclip_clip::{ClipImageProcessor, ClipVisionModelWithProjection, ResizeBackend, Rgb8};
use unclip_testkit::{Io, assert_close, assert_close_slice, fixture_dir, test_device};

fn input(dir: &std::path::Path, io: &Io) -> Rgb8 {
    let img = image::open(dir.join("input.png")).expect("decode input.png");
    let rgb = Rgb8::from_image(&img);
    // The PNG decodes to the pixels the reference decoded.
    let reference: Vec<f32> = io.get("input_image.rgb").f32();
    let ours: Vec<f32> = rgb.data.iter().map(|&v| v as f32).collect();
    assert_close_slice("input_image.rgb", &ours, &reference, 0.0);
    rgb
}

fn chw(r: &Rgb8) -> Vec<f32> {
    let mut out = vec![0f32; 3 * r.height * r.width];
    for c in 0..3 {
        for y in 0..r.height {
            for x in 0..r.width {
                out[(c * r.height + y) * r.width + x] = r.data[(y * r.width + x) * 3 + c] as f32;
            }
        }
    }
    out
}

#[test]
fn resize_and_pixel_values_match_both_backends() {
    let device = test_device();
    let dir = fixture_dir("unclip_variation_tiny");
    let io = Io::open_dir(&dir);
    let img = input(&dir, &io);
    for (backend, prefix) in [
        (ResizeBackend::Torchvision, "feature_extractor"),
        (ResizeBackend::Pil, "feature_extractor_pil"),
    ] {
        let p =
            ClipImageProcessor::from_file(dir.join("feature_extractor/preprocessor_config.json"))
                .expect("config")
                .with_backend(backend);
        let resized = p.resize(&img);
        let expected = io.get(&format!("{prefix}.resized"));
        assert_eq!(
            vec![3, resized.height, resized.width],
            expected.shape,
            "{prefix}.resized shape"
        );
        // uint8 values: exact.
        assert_close_slice(
            &format!("{prefix}.resized"),
            &chw(&resized),
            &expected.f32(),
            0.0,
        );
        let pixels = p
            .preprocess_rgb(&[img.clone()], &device)
            .expect("preprocess");
        assert_close(
            &format!("{prefix}.pixel_values"),
            pixels,
            io.get(&format!("{prefix}.pixel_values")),
            1e-5,
        );
    }
}

#[test]
fn image_encoder_matches_on_fixture_pixels() {
    let device = test_device();
    let dir = fixture_dir("unclip_variation_tiny");
    let io = Io::open_dir(&dir);
    let model = ClipVisionModelWithProjection::from_pretrained(dir.join("image_encoder"), &device)
        .expect("load");
    let pixels = io.get("feature_extractor.pixel_values").float::<4>(&device);
    let (embeds, _) = model.forward(pixels.clone());
    assert_close(
        "image_encoder.image_embeds",
        embeds,
        io.get("image_encoder.image_embeds"),
        1e-4,
    );
    let out = model.vision_model.forward(pixels, true);
    assert_close(
        "image_encoder.last_hidden_state",
        out.last_hidden_state,
        io.get("image_encoder.last_hidden_state"),
        1e-4,
    );
    for (i, h) in out.hidden_states.into_iter().enumerate() {
        assert_close(
            &format!("image_encoder.hidden_states.{i}"),
            h,
            io.get(&format!("image_encoder.hidden_states.{i}")),
            1e-4,
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let p = ClipImageProcessor::for_size(32);
    let device = test_device();
    assert!(matches!(
        p.preprocess_rgb(&[], &device),
        Err(unclip_clip::ClipError::NoImages)
    ));
    let broken = Rgb8 {
        width: 4,
        height: 4,
        data: vec![0; 5],
    };
    assert!(matches!(
        p.preprocess_rgb(&[broken], &device),
        Err(unclip_clip::ClipError::BadImage { index: 0, .. })
    ));
}
