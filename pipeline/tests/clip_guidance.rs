//! GLIDE's CLIP guidance of the decoder (`Settings::decoder_clip_guidance_scale`): the noised
//! CLIP guide's gradient against finite differences, and the pipeline's wiring (an error without
//! a noised CLIP, a no-op at scale 0, a different sample with guidance).

use burn::tensor::{Distribution, Tensor};
use unclip::clip::{ClipVisionConfig, NoisedClipVisionModel, l2_normalize};
use unclip::diffusion::GradientGuide;
use unclip::{Control, MemoryMode, NoisedClipGuide, UnclipBuilder, UnclipError, UnclipPipeline};
use unclip_testkit::{fixture_dir, test_device, to_vec};

/// A random noised tower for the tiny fixture's 12x12 decoder and 12-wide CLIP space.
fn tower() -> NoisedClipVisionModel {
    tower_of_size(12)
}

/// A noised tower's config for `size x size` images (patch 4, the fixture's 12-wide CLIP space).
fn config_of_size(size: usize) -> ClipVisionConfig {
    serde_json::from_value(serde_json::json!({
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "image_size": size, "patch_size": 4, "projection_dim": 12
    }))
    .expect("config")
}

/// A random noised tower taking `size x size` images.
fn tower_of_size(size: usize) -> NoisedClipVisionModel {
    let device = test_device();
    device.seed(4);
    NoisedClipVisionModel::new(&config_of_size(size), &device)
}

/// The guided objective: `sum_rows exp(logit_scale) cos(tower(x, t), text)`.
fn objective(m: &NoisedClipVisionModel, x: Tensor<4>, t: usize, text: Tensor<2>) -> f64 {
    let b = x.dims()[0];
    let img = l2_normalize(m.forward(x, &vec![t; b]));
    let s = m.logit_scale.val().exp().into_scalar::<f32>() as f64;
    (img * l2_normalize(text)).sum().into_scalar::<f32>() as f64 * s
}

#[test]
fn noised_clip_guide_gradient_matches_finite_differences() {
    let device = test_device();
    let m = tower();
    let text = Tensor::<2>::random([2, 12], Distribution::Normal(0.0, 1.0), &device);
    let x = Tensor::<4>::random([2, 3, 12, 12], Distribution::Normal(0.0, 1.0), &device);
    let guide = NoisedClipGuide::new(&m, text.clone());
    let t = 300;
    let g = guide.gradient(x.clone(), t).expect("gradient");
    assert_eq!(g.dims(), x.dims());
    for seed in 0..3u64 {
        device.seed(100 + seed);
        let d = Tensor::<4>::random(x.dims(), Distribution::Normal(0.0, 1.0), &device);
        let analytic: f64 = to_vec(g.clone() * d.clone())
            .iter()
            .map(|&v| v as f64)
            .sum();
        let eps = 1e-2;
        let plus = objective(&m, x.clone() + d.clone().mul_scalar(eps), t, text.clone());
        let minus = objective(&m, x.clone() - d.mul_scalar(eps), t, text.clone());
        let numeric = (plus - minus) / (2.0 * eps);
        let rel = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-3);
        assert!(
            rel < 2e-2,
            "direction {seed}: autodiff {analytic}, finite difference {numeric}"
        );
    }
    // One row per caption.
    let err = guide
        .gradient(x.narrow(0, 0, 1), t)
        .expect_err("rows must match the captions");
    assert!(err.to_string().contains("2 rows"), "{err}");
}

fn pipeline(scale: f32, with_tower: bool) -> UnclipPipeline {
    let mut b = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(fixture_dir("unclip_tiny"))
        .decoder_steps(3)
        .prior_steps(2)
        .with_super_res(false)
        .decoder_clip_guidance_scale(scale);
    if with_tower {
        b = b.noised_image_encoder(tower());
    }
    b.build().expect("pipeline")
}

#[test]
fn pipeline_clip_guidance_needs_a_noised_clip_and_changes_the_sample() {
    let prompt = ["a small red circle"];
    match pipeline(5.0, false).text_to_image(&prompt, &mut |_| Control::Continue) {
        Err(UnclipError::InvalidSetting { name, message }) => {
            assert_eq!(name, "decoder_clip_guidance_scale");
            assert!(message.contains("noised_image_encoder"), "{message}");
        }
        other => panic!("expected InvalidSetting, got {:?}", other.map(|_| ())),
    }
    let run = |scale: f32, tower: bool| {
        to_vec(
            pipeline(scale, tower)
                .text_to_image(&prompt, &mut |_| Control::Continue)
                .expect("generation")
                .image_small,
        )
    };
    let plain = run(0.0, false);
    assert_eq!(run(0.0, true), plain, "scale 0 is the unguided pipeline");
    let guided = run(50.0, true);
    let diff = guided
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff > 1e-3, "CLIP guidance changed nothing ({diff})");
}

#[test]
fn a_noised_clip_of_another_size_is_a_typed_error() {
    let small = tower_of_size(8);
    assert_eq!(small.vision_model.input_shape(), [3, 8, 8]);
    // The guide itself refuses a sample of another size, naming both shapes.
    let device = test_device();
    let guide = NoisedClipGuide::new(&small, Tensor::<2>::zeros([1, 12], &device));
    let err = guide
        .gradient(Tensor::<4>::zeros([1, 3, 12, 12], &device), 10)
        .expect_err("a 12x12 sample for an 8x8 tower");
    let msg = err.to_string();
    assert!(
        msg.contains("[1, 3, 12, 12]") && msg.contains("[B, 3, 8, 8]"),
        "{msg}"
    );
    // The pipeline refuses it when it is built, naming the component and both sizes.
    let built = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(fixture_dir("unclip_tiny"))
        .noised_image_encoder(small)
        .build();
    match built {
        Err(UnclipError::InvalidSetting { name, message }) => {
            assert_eq!(name, "noised_image_encoder");
            assert!(
                message.contains("[3, 8, 8]") && message.contains("[3, 12, 12]"),
                "{message}"
            );
        }
        other => panic!("expected InvalidSetting, got {:?}", other.map(|_| ())),
    }
}

/// `src` copied into `dst` (files and folders, recursively).
fn copy_tree(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).expect("create dir");
    for entry in std::fs::read_dir(src).expect("read dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

#[test]
fn a_staged_noised_clip_of_another_size_is_refused_from_its_config() {
    // The tiny fixture folder with a `noised_image_encoder/` of 8x8 images listed in its index.
    let dir = unclip_testkit::temp_dir("noised-size");
    copy_tree(&fixture_dir("unclip_tiny"), &dir);
    tower_of_size(8)
        .save_pretrained(&config_of_size(8), dir.join("noised_image_encoder"))
        .expect("save");
    let index_path = dir.join("model_index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).expect("index")).expect("json");
    index["noised_image_encoder"] = serde_json::json!(["unclip", "NoisedCLIPVisionModel"]);
    std::fs::write(&index_path, index.to_string()).expect("write index");
    let build = |mode| {
        UnclipBuilder::new()
            .device(test_device())
            .from_pretrained(&dir)
            .memory(mode)
            .build()
    };
    for mode in [MemoryMode::Staged, MemoryMode::Resident] {
        match build(mode) {
            Err(UnclipError::InvalidSetting { name, message }) => {
                assert_eq!(name, "noised_image_encoder", "{mode:?}");
                assert!(message.contains("[3, 8, 8]"), "{mode:?}: {message}");
            }
            other => panic!(
                "{mode:?}: expected InvalidSetting, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // The same folder with a tower of the decoder's size builds.
    tower()
        .save_pretrained(&config_of_size(12), dir.join("noised_image_encoder"))
        .expect("save");
    build(MemoryMode::Staged).expect("a 12x12 tower fits the 12x12 decoder");
    let _ = std::fs::remove_dir_all(&dir);
}
