//! The embedded default model (`models/shapes`, trained by `cargo run -p xtask -- train-shapes`)
//! draws what its captions say: eight held-out captions, generated through the public pipeline
//! with the folder's settings, are read back by the pixel oracle.
//!
//! Two tests share one generation:
//! - `embedded_model_is_above_chance` runs in CI. Its floors are set where a broken stage lands:
//!   an untrained or mis-loaded prior, decoder or upsampler drops the scores to chance (1/6
//!   colour, 1/2 size, 1/9 position; P(>= 6 of 8 colours by chance) < 1e-3, P(>= 6 of 8 sizes)
//!   = 0.14, P(>= 7 of 8 positions) < 1e-6) or below (noise reads as nothing). The committed
//!   model (session 13: decoder step 17700, DDIM 50, prior guidance 2, decoder guidance 3)
//!   scores shape 5, colour 8, size 8, position 8 of 8, all four 5 (session 7's decoder at step
//!   13200 with ancestral 250: 2 / 8 / 8 / 8 / 2; docs/shapes.md); the floors (colour 6, size 6,
//!   position 7) were raised from 4 / 5 / 6 in session 5. Shape is not asserted: over 40
//!   held-out captions the decoder reads shape right 50% of the time (chance 33%), and a floor
//!   of 5 of 8 would be both at the model's own score and hit by chance 9% of the time.
//! - `embedded_model_meets_the_goal` is issue #7's goal (>= 90% per attribute, >= 75% all four
//!   on held-out combinations, here >= 7 of 8 and >= 6 of 8); ignored until the model meets it.

use burn::tensor::Device;
use unclip::{Control, UnclipBuilder};
use unclip_shapes::{Split, caption, combinations, oracle};

/// Oracle scores of the eight images: per attribute (shape, colour, size, position) and all
/// four, each out of 8.
fn generate_and_score() -> ([usize; 4], usize) {
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
    // Eight held-out combinations, spread over the list.
    let held = combinations(Split::HeldOut);
    let picked: Vec<_> = (0..8).map(|i| held[i * held.len() / 8]).collect();
    let prompts: Vec<String> = picked.iter().map(|a| caption(a, 0)).collect();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let out = pipe
        .text_to_image(&texts, &mut |_| Control::Continue)
        .expect("generation");
    let images = out.to_rgb8().expect("images");
    assert_eq!(images.len(), 8);
    assert_eq!(images[0].dimensions(), (128, 128));
    let mut per = [0usize; 4];
    let mut all = 0;
    for (img, a) in images.iter().zip(&picked) {
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
    println!("per attribute (of 8): {per:?}; all four: {all}");
    (per, all)
}

#[test]
fn embedded_model_is_above_chance() {
    let (per, _) = generate_and_score();
    for (name, floor, n) in [
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
    let (per, all) = generate_and_score();
    for (name, n) in ["shape", "colour", "size", "position"].iter().zip(per) {
        assert!(n >= 7, "{name}: only {n}/8 images read back correctly");
    }
    assert!(all >= 6, "all four attributes right on only {all}/8 images");
}
