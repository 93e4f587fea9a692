//! Staged memory: a pipeline built with `MemoryMode::Staged` loads each stage's models right
//! before the stage and drops them after it; its outputs are bit for bit the resident
//! pipeline's (text to image, with a second super-resolution stage too, and variations), and
//! `resident_components` shows what is held between calls and during each stage.

mod common;

use std::collections::HashMap;

use unclip::decoder::UNet2DConditionModel;
use unclip::{Control, Generation, MemoryMode, Stage, UnclipBuilder, UnclipPipeline};
use unclip_testkit::{fixture_dir, test_device};

use common::{add_super_res_2, assert_identical, first_stage_size, fixture_copy, tiny_super_res_2};

fn build(dir: &std::path::Path, mode: MemoryMode) -> UnclipPipeline {
    UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(dir)
        .memory(mode)
        .prior_steps(3)
        .decoder_steps(3)
        .super_res_steps(2)
        .super_res_2_steps(2)
        .seed(21)
        .build()
        .expect("pipeline")
}

fn assert_same(what: &str, a: &Generation, b: &Generation) {
    assert_identical(
        &format!("{what}: image_embeddings"),
        a.image_embeddings.clone(),
        b.image_embeddings.clone(),
    );
    assert_identical(
        &format!("{what}: image_small"),
        a.image_small.clone(),
        b.image_small.clone(),
    );
    assert_identical(
        &format!("{what}: images"),
        a.images.clone(),
        b.images.clone(),
    );
    assert_eq!(a.image_mid.is_some(), b.image_mid.is_some());
}

/// Runs text to image, recording which components are in memory at every step of every stage.
fn text_to_image(pipe: &UnclipPipeline) -> (Generation, HashMap<Stage, Vec<Vec<&'static str>>>) {
    let mut held: HashMap<Stage, Vec<Vec<&'static str>>> = HashMap::new();
    let out = pipe
        .text_to_image(&["a red circle", "a blue square"], &mut |p| {
            held.entry(p.stage)
                .or_default()
                .push(pipe.resident_components());
            Control::Continue
        })
        .expect("generate");
    (out, held)
}

#[test]
fn staged_text_to_image_is_bit_equal_and_holds_one_stage_at_a_time() {
    let dir = fixture_copy("unclip_tiny", &[]);
    add_super_res_2(
        &dir,
        &tiny_super_res_2(first_stage_size(&dir), &test_device()),
    );
    let resident = build(&dir, MemoryMode::Resident);
    let staged = build(&dir, MemoryMode::Staged);
    assert_eq!(staged.memory_mode(), MemoryMode::Staged);

    let all = vec![
        "text_encoder",
        "prior",
        "text_proj",
        "decoder",
        "super_res_first",
        "super_res_last",
        "super_res_2",
    ];
    assert_eq!(resident.resident_components(), all);
    assert!(staged.resident_components().is_empty());

    let (a, held_resident) = text_to_image(&resident);
    let (b, held_staged) = text_to_image(&staged);
    assert_same("text to image", &a, &b);

    // Resident: everything, always. Staged: the running stage's models only.
    for steps in held_resident.values() {
        assert!(steps.iter().all(|h| *h == all));
    }
    let expect = [
        (Stage::Prior, vec!["prior"]),
        (Stage::Decoder, vec!["text_proj", "decoder"]),
        (Stage::SuperRes, vec!["super_res_first", "super_res_last"]),
        (Stage::SuperRes2, vec!["super_res_2"]),
    ];
    assert_eq!(held_staged.len(), expect.len());
    for (stage, names) in expect {
        let steps = &held_staged[&stage];
        assert!(!steps.is_empty());
        assert!(steps.iter().all(|h| *h == names), "{stage}: {steps:?}");
    }
    // Nothing stays loaded after the call, and a second call gives the same images.
    assert!(staged.resident_components().is_empty());
    let (c, _) = text_to_image(&staged);
    assert_same("second staged call", &b, &c);
}

#[test]
fn staged_variation_is_bit_equal() {
    let dir = fixture_dir("unclip_variation_tiny");
    let resident = build(&dir, MemoryMode::Resident);
    let staged = build(&dir, MemoryMode::Staged);
    assert!(staged.resident_components().is_empty());
    let img = image::open(dir.join("input.png")).unwrap().to_rgb8();
    let go = |p: &UnclipPipeline| {
        let mut held = Vec::new();
        let out = p
            .variations(std::slice::from_ref(&img), 2, &mut |s| {
                held.push((s.stage, p.resident_components()));
                Control::Continue
            })
            .unwrap();
        (out, held)
    };
    let (a, _) = go(&resident);
    let (b, held) = go(&staged);
    assert_same("variations", &a, &b);
    // The image and text encoders are dropped before the decoder runs.
    assert!(
        held.iter()
            .filter(|(s, _)| *s == Stage::Decoder)
            .all(|(_, h)| *h == ["text_proj", "decoder"])
    );
    assert!(staged.resident_components().is_empty());
    // The image encoder alone, loaded and dropped.
    let e1 = resident.encode_images(std::slice::from_ref(&img)).unwrap();
    let e2 = staged.encode_images(std::slice::from_ref(&img)).unwrap();
    assert_identical("image embeddings", e1, e2);
    assert!(staged.resident_components().is_empty());
}

#[test]
fn components_given_to_the_builder_stay_resident_when_staged() {
    let dir = fixture_dir("unclip_tiny");
    let decoder =
        UNet2DConditionModel::from_pretrained(dir.join("decoder"), &test_device()).unwrap();
    let pipe = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(&dir)
        .memory(MemoryMode::Staged)
        .decoder(decoder)
        .prior_steps(2)
        .decoder_steps(2)
        .super_res_steps(2)
        .build()
        .unwrap();
    assert_eq!(pipe.resident_components(), ["decoder"]);
    assert!(pipe.decoder.is_resident() && !pipe.prior.as_ref().unwrap().is_resident());
    let mut during_prior = Vec::new();
    pipe.text_to_image(&["a red circle"], &mut |p| {
        if p.stage == Stage::Prior {
            during_prior.push(pipe.resident_components());
        }
        Control::Continue
    })
    .unwrap();
    assert!(during_prior.iter().all(|h| *h == ["prior", "decoder"]));
    assert_eq!(pipe.resident_components(), ["decoder"]);
    // Config without loading; the model when asked.
    let prior = pipe.prior.as_ref().unwrap();
    assert!(prior.staged_dir().is_some());
    assert_eq!(prior.model().unwrap().config(), prior.config());
}

#[test]
fn staged_build_checks_every_folder_up_front() {
    let dir = fixture_copy("unclip_tiny", &[]);
    // A decoder folder with its config but no weights file.
    std::fs::remove_file(dir.join("decoder")).unwrap();
    std::fs::create_dir(dir.join("decoder")).unwrap();
    std::fs::copy(
        fixture_dir("unclip_tiny").join("decoder/config.json"),
        dir.join("decoder/config.json"),
    )
    .unwrap();
    let err = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(&dir)
        .memory(MemoryMode::Staged)
        .build()
        .err()
        .expect("no decoder weights");
    assert!(
        matches!(
            err,
            unclip::UnclipError::Load(unclip::nn::LoadError::NoCheckpoint { ref dir, .. })
                if dir.ends_with("decoder")
        ),
        "{err}"
    );
}
