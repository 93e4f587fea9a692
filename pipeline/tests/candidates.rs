//! Decoder candidates reranked by CLIP (`Settings::decoder_candidates`): the pipeline decodes
//! `k` samples per image and keeps, for each image, the one whose CLIP image embedding is closest
//! to the embedding it was conditioned on. Checked against decoding every candidate alone and
//! scoring it by hand, on the tiny random variation fixture (deterministic DDIM, so a candidate is
//! a function of its starting latent).

use burn::tensor::Tensor;
use unclip::diffusion::{SeededNoise, randn};
use unclip::upsampler::{to_rgb8, to_unit_range};
use unclip::{Control, Latents, Sampler, UnclipBuilder, UnclipError, UnclipPipeline};
use unclip_testkit::{fixture_dir, test_device, to_vec};

fn pipeline(k: usize) -> UnclipPipeline {
    UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(fixture_dir("unclip_variation_tiny"))
        .decoder_steps(4)
        .decoder_sampler(Sampler::Ddim { eta: 0.0 })
        .with_super_res(false)
        .decoder_candidates(k)
        .build()
        .expect("pipeline")
}

/// Cosine similarity of two `[1, E]` embeddings.
fn cosine(a: Tensor<2>, b: Tensor<2>) -> f32 {
    let (a, b) = (to_vec(a), to_vec(b));
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(&a) * n(&b))
}

#[test]
fn decoder_candidates_keep_the_sample_closest_to_the_embedding() {
    let dir = fixture_dir("unclip_variation_tiny");
    let img = image::open(dir.join("input.png"))
        .expect("input.png")
        .to_rgb8();
    let images = [img.clone(), image::imageops::flip_vertical(&img)];
    let (b, k) = (images.len(), 3);
    let pipe = pipeline(k);
    let [_, c, h, w] = pipe.decoder_input(&img).expect("decoder input").dims();
    // Candidate j of image i starts from row j * B + i.
    let latents =
        randn::<4, _>(&mut SeededNoise::new(7), [k * b, c, h, w], &pipe.device).expect("latents");
    let out = pipe
        .variations_with(
            &images,
            1,
            &mut SeededNoise::new(9),
            Latents {
                decoder: Some(latents.clone()),
                ..Latents::default()
            },
            &mut |_| Control::Continue,
        )
        .expect("variations with candidates");
    assert_eq!(out.image_small.dims(), [b, c, h, w]);

    // By hand: each candidate decoded alone, scored against its image's own CLIP embedding.
    let one = pipeline(1);
    let target = one.encode_images(&images).expect("embeddings"); // [B, E]
    let e = target.dims()[1];
    let mut best_index = Vec::new();
    for i in 0..b {
        let mut scored: Vec<(f32, Vec<f32>, usize)> = (0..k)
            .map(|j| {
                let row = j * b + i;
                let g = one
                    .variations_with(
                        &images[i..i + 1],
                        1,
                        &mut SeededNoise::new(9),
                        Latents {
                            decoder: Some(latents.clone().slice([row..row + 1])),
                            ..Latents::default()
                        },
                        &mut |_| Control::Continue,
                    )
                    .expect("one candidate");
                let emb = one
                    .encode_images(&to_rgb8(to_unit_range(g.image_small.clone())).expect("rgb"))
                    .expect("candidate embedding");
                let cos = cosine(emb, target.clone().slice([i..i + 1, 0..e]));
                (cos, to_vec(g.image_small), j)
            })
            .collect();
        scored.sort_by(|x, y| y.0.total_cmp(&x.0));
        println!(
            "image {i}: candidate cosines {:?}, best candidate {}",
            scored.iter().map(|s| s.0).collect::<Vec<_>>(),
            scored[0].2
        );
        best_index.push(scored[0].2);
        // The choice is not a tie, so the test can tell the candidates apart.
        assert!(
            scored[0].0 - scored[1].0 > 1e-4,
            "candidates too close to rank: {:?}",
            scored.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        let got = to_vec(out.image_small.clone().slice([i..i + 1]));
        let best = &scored[0].1;
        let diff = got
            .iter()
            .zip(best)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "image {i}: kept sample differs from the best candidate by {diff}"
        );
        // And it is not one of the others.
        for (_, other, _) in &scored[1..] {
            let d = got
                .iter()
                .zip(other)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(d > 1e-3, "image {i}: kept a worse candidate");
        }
    }
    // The seed is chosen so that the winners are not all the same candidate (a pipeline that
    // always kept candidate j would fail).
    assert!(
        best_index.iter().any(|&j| j != best_index[0]),
        "every image's best is candidate {}: pick another seed",
        best_index[0]
    );
}

#[test]
fn best_candidates_returns_every_score_in_row_order() {
    let pipe = pipeline(2);
    let dir = fixture_dir("unclip_variation_tiny");
    let img = image::open(dir.join("input.png"))
        .expect("input.png")
        .to_rgb8();
    let target = pipe.encode_images(&[img.clone()]).expect("embedding"); // [1, E]
    // Candidate 0: the input itself (cosine ~1); candidate 1: its negative image.
    let x = pipe.decoder_input(&img).expect("decoder input"); // [1, 3, h, w] in [-1, 1]
    let samples = Tensor::cat(vec![x.clone().neg(), x.clone()], 0);
    let (kept, scores) = pipe.best_candidates(samples, &target, 2).expect("rerank");
    assert_eq!(scores.len(), 2);
    assert!(scores[1] > scores[0], "scores {scores:?}");
    assert!(
        scores[1] > 0.9,
        "the input scored against itself: {scores:?}"
    );
    assert_eq!(to_vec(kept), to_vec(x));
    // A batch that is not k candidates of the embeddings is a typed error.
    let err = pipe
        .best_candidates(pipe.decoder_input(&img).expect("x"), &target, 2)
        .expect_err("1 sample is not 2 candidates");
    assert!(
        matches!(
            err,
            UnclipError::InvalidSetting {
                name: "decoder_candidates",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn candidates_without_an_image_encoder_are_an_error() {
    let pipe = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(fixture_dir("unclip_tiny"))
        .decoder_steps(2)
        .super_res_steps(2)
        .decoder_candidates(2)
        .build()
        .expect("pipeline");
    assert!(
        pipe.image_encoder.is_none(),
        "the text-to-image fixture has no image encoder"
    );
    let err = pipe
        .text_to_image(&["a red circle"], &mut |_| Control::Continue)
        .expect_err("no image encoder to rerank with");
    match err {
        UnclipError::InvalidSetting { name, message } => {
            assert_eq!(name, "decoder_candidates");
            assert!(message.contains("image encoder"), "{message}");
        }
        e => panic!("unexpected error {e:?}"),
    }
}
