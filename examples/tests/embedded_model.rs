//! The embedded default model (`models/shapes`, trained by `cargo run -p xtask -- train-shapes`)
//! draws what its captions say: held-out captions, generated through the public pipeline
//! with the folder's settings, are read back by the pixel oracle.
//!
//! Two tests:
//! - `embedded_model_is_above_chance` runs in CI on eight held-out captions. Its floors are set
//!   where a broken stage lands: an untrained or mis-loaded prior, decoder or upsampler drops the
//!   scores to chance (1/3 shape, 1/6 colour, 1/2 size, 1/9 position; P(>= 5 of 8 shapes by
//!   chance) = 0.088, P(>= 6 of 8 colours) < 1e-3, P(>= 6 of 8 sizes) = 0.14, P(>= 7 of 8
//!   positions) < 1e-6) or below (noise reads as nothing). The committed model (decoder step
//!   26400, DDIM 50, prior guidance 2, decoder guidance 3) scores shape 7, colour 7,
//!   size 8, position 8 of 8, all four 6 (the decoder at step 17700: 5 / 8 / 8 / 8 / 5;
//!   at 13200 with ancestral 250: 2 / 8 / 8 / 8 / 2; docs/shapes.md). The floors for
//!   colour, size and position were raised from 4 / 5 / 6 as the model improved; the shape floor
//!   (5) was added once the model's own score left it a margin of two.
//! - `embedded_model_meets_the_goal` is issue #7's goal (>= 90% per attribute, >= 75% all four on
//!   held-out combinations), on every held-out combination once (40 captions, ~4 min on flex);
//!   ignored until the model meets it. (Eight captions are too few to judge the goal: the
//!   committed model clears 7 of 8 and 6 of 8 on the CI test's eight, and on the 40 it reads
//!   shape 23, colour 39, size 40, position 40, all four 22: 192 s with the CI test beside it.)

use burn::tensor::Device;
use unclip::{Control, UnclipBuilder};
use unclip_shapes::{Attributes, Split, caption, combinations, oracle};

/// Oracle scores of `count` held-out canonical captions spread over the held-out list (generated
/// eight at a time): per attribute (shape, colour, size, position) and all four, each out of
/// `count`.
fn generate_and_score(count: usize) -> ([usize; 4], usize) {
    let dir = unclip_examples::default_model_dir();
    assert!(
        dir.join("model_index.json").is_file(),
        "the embedded model {} is missing",
        dir.display()
    );
    // The folder's recommended settings (unclip_settings.json: DDIM with 50 decoder steps,
    // decoder guidance 3, prior guidance 2), fewer super-resolution steps.
    let pipe = UnclipBuilder::new()
        .device(Device::flex())
        .from_pretrained(&dir)
        .super_res_steps(3)
        .super_res_2_steps(3)
        .seed(3)
        .build()
        .expect("the embedded model loads");
    let held = combinations(Split::HeldOut);
    assert!(
        count <= held.len(),
        "{count} of {} held-out combinations",
        held.len()
    );
    let picked: Vec<_> = (0..count).map(|i| held[i * held.len() / count]).collect();
    let mut per = [0usize; 4];
    let mut all = 0;
    for chunk in picked.chunks(8) {
        let (p, a) = score_batch(&pipe, chunk);
        for k in 0..4 {
            per[k] += p[k];
        }
        all += a;
    }
    println!("per attribute (of {count}): {per:?}; all four: {all}");
    (per, all)
}

/// Generates the canonical captions of `picked` in one call and scores them.
fn score_batch(pipe: &unclip::UnclipPipeline, picked: &[Attributes]) -> ([usize; 4], usize) {
    let prompts: Vec<String> = picked.iter().map(|a| caption(a, 0)).collect();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let out = pipe
        .text_to_image(&texts, &mut |_| Control::Continue)
        .expect("generation");
    let images = out.to_rgb8().expect("images");
    assert_eq!(images.len(), picked.len());
    assert_eq!(images[0].dimensions(), (128, 128));
    let mut per = [0usize; 4];
    let mut all = 0;
    for (img, a) in images.iter().zip(picked) {
        let s = oracle::score(img, a);
        println!("{:?}: {s:?}", caption(a, 0));
        for (k, ok) in [s.shape, s.colour, s.size, s.position]
            .into_iter()
            .enumerate()
        {
            per[k] += ok as usize;
        }
        all += s.all() as usize;
    }
    (per, all)
}

#[test]
fn embedded_model_is_above_chance() {
    let (per, _) = generate_and_score(8);
    for (name, floor, n) in [
        ("shape", 5, per[0]),
        ("colour", 6, per[1]),
        ("size", 6, per[2]),
        ("position", 7, per[3]),
    ] {
        assert!(
            n >= floor,
            "{name}: only {n}/8 images read back correctly (floor {floor})"
        );
    }
}

#[test]
#[ignore = "issue #7's goal; the committed model is not there yet (docs/shapes.md)"]
fn embedded_model_meets_the_goal() {
    // Every held-out combination once (40): >= 90% per attribute, >= 75% all four.
    let n = combinations(Split::HeldOut).len();
    let (per, all) = generate_and_score(n);
    for (name, k) in ["shape", "colour", "size", "position"].iter().zip(per) {
        assert!(
            k * 10 >= n * 9,
            "{name}: only {k}/{n} images read back correctly (goal 90%)"
        );
    }
    assert!(
        all * 4 >= n * 3,
        "all four attributes right on only {all}/{n} images (goal 75%)"
    );
}
