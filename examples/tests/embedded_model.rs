//! The embedded default model (`models/shapes`, trained by `cargo run -p xtask -- train-shapes`)
//! draws what its captions say: a handful of held-out captions, generated with few steps through
//! the public pipeline, are read back by the pixel oracle. A broken stage (an untrained or
//! mis-loaded prior, decoder or upsampler) drops the scores to chance (1/3 shape, 1/6 colour,
//! 1/2 size, 1/9 position), far below the thresholds.

use burn::tensor::Device;
use unclip::{Control, Settings, UnclipBuilder};
use unclip_shapes::{Split, caption, combinations, oracle};

#[test]
#[ignore = "the committed decoder does not draw its captions yet (issue #7, docs/shapes.md): run with --ignored once it does"]
fn embedded_model_draws_held_out_captions() {
    let dir = unclip_examples::default_model_dir();
    assert!(
        dir.join("model_index.json").is_file(),
        "the embedded model {} is missing",
        dir.display()
    );
    let settings = Settings {
        prior_steps: 10,
        decoder_steps: 10,
        super_res_steps: 3,
        super_res_2_steps: 3,
        seed: 3,
        ..Settings::default()
    };
    let pipe = UnclipBuilder::new()
        .device(Device::flex())
        .from_pretrained(&dir)
        .settings(settings)
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
    for (name, n) in ["shape", "colour", "size", "position"].iter().zip(per) {
        assert!(n >= 6, "{name}: only {n}/8 images read back correctly");
    }
    assert!(all >= 4, "all four attributes right on only {all}/8 images");
}
