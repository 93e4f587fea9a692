//! GLIDE's CLIP guidance of the decoder (`Settings::decoder_clip_guidance_scale`): the noised
//! CLIP guide's gradient against finite differences, and the pipeline's wiring (an error without
//! a noised CLIP, a no-op at scale 0, a different sample with guidance).

use burn::tensor::{Distribution, Tensor};
use unclip::clip::{ClipVisionConfig, NoisedClipVisionModel, l2_normalize};
use unclip::diffusion::GradientGuide;
use unclip::{Control, NoisedClipGuide, UnclipBuilder, UnclipError, UnclipPipeline};
use unclip_testkit::{fixture_dir, test_device, to_vec};

/// A random noised tower for the tiny fixture's 12x12 decoder and 12-wide CLIP space.
fn tower() -> NoisedClipVisionModel {
    tower_of_size(12)
}

/// A random noised tower taking `size x size` images (patch 4).
fn tower_of_size(size: usize) -> NoisedClipVisionModel {
    let cfg: ClipVisionConfig = serde_json::from_value(serde_json::json!({
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "image_size": size, "patch_size": 4, "projection_dim": 12
    }))
    .expect("config");
    let device = test_device();
    device.seed(4);
    NoisedClipVisionModel::new(&cfg, &device)
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
    pipeline_with(scale, with_tower.then(tower))
}

fn pipeline_with(scale: f32, tower: Option<NoisedClipVisionModel>) -> UnclipPipeline {
    let mut b = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(fixture_dir("unclip_tiny"))
        .decoder_steps(3)
        .prior_steps(2)
        .with_super_res(false)
        .decoder_clip_guidance_scale(scale);
    if let Some(t) = tower {
        b = b.noised_image_encoder(t);
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
    // The pipeline says so before sampling, naming the setting and both sizes.
    match pipeline_with(5.0, Some(small))
        .text_to_image(&["a small red circle"], &mut |_| Control::Continue)
    {
        Err(UnclipError::InvalidSetting { name, message }) => {
            assert_eq!(name, "decoder_clip_guidance_scale");
            assert!(
                message.contains("[3, 8, 8]") && message.contains("[3, 12, 12]"),
                "{message}"
            );
        }
        other => panic!("expected InvalidSetting, got {:?}", other.map(|_| ())),
    }
}
