//! A model folder's recommended settings (`unclip_settings.json`): read over Karlo's defaults,
//! used as the builder's base, under `.settings(..)` and the single-setting setters; a bad file
//! is a typed error naming it.

mod common;

use unclip::{SETTINGS_FILE, Settings, UnclipBuilder, UnclipError};
use unclip_testkit::{temp_dir, test_device};

#[test]
fn from_model_dir_reads_a_subset_over_the_defaults() {
    // No file: Karlo's defaults.
    let dir = temp_dir("settings-none");
    assert_eq!(
        Settings::from_model_dir(&dir).expect("defaults"),
        Settings::default()
    );
    // A subset: those fields change, the rest keep the defaults.
    let dir = temp_dir("settings-subset");
    std::fs::write(
        dir.join(SETTINGS_FILE),
        r#"{"decoder_steps": 123, "decoder_guidance_scale": 2.5, "decoder_sampler": {"ddim": {"eta": 0.25}}, "decoder_candidates": 4}"#,
    )
    .expect("write");
    let s = Settings::from_model_dir(&dir).expect("settings");
    assert_eq!(s.decoder_steps, 123);
    assert_eq!(s.decoder_guidance_scale, 2.5);
    assert_eq!(s.decoder_sampler, unclip::Sampler::Ddim { eta: 0.25 });
    assert_eq!(s.decoder_candidates, 4);
    assert_eq!(
        Settings {
            decoder_steps: Settings::default().decoder_steps,
            decoder_guidance_scale: Settings::default().decoder_guidance_scale,
            decoder_sampler: Settings::default().decoder_sampler,
            decoder_candidates: Settings::default().decoder_candidates,
            ..s
        },
        Settings::default()
    );
    // An unknown key and broken JSON are errors that name the file.
    for (tag, text) in [
        ("unknown", r#"{"decoder_stepz": 5}"#),
        ("broken", r#"{"decoder_steps": "#),
        ("type", r#"{"decoder_steps": "many"}"#),
        ("sampler", r#"{"decoder_sampler": "euler"}"#),
    ] {
        let dir = temp_dir(&format!("settings-{tag}"));
        std::fs::write(dir.join(SETTINGS_FILE), text).expect("write");
        let err = Settings::from_model_dir(&dir).expect_err(tag);
        assert!(matches!(err, UnclipError::Load(_)), "{tag}: {err:?}");
        assert!(err.to_string().contains(SETTINGS_FILE), "{tag}: {err}");
    }
}

#[test]
fn builder_uses_the_folder_settings_under_explicit_ones() {
    let dir = common::fixture_copy("unclip_tiny", &[]);
    std::fs::write(
        dir.join(SETTINGS_FILE),
        r#"{"decoder_steps": 11, "prior_guidance_scale": 1.5}"#,
    )
    .expect("write");
    let build = |b: UnclipBuilder| {
        b.device(test_device())
            .from_pretrained(&dir)
            .build()
            .expect("pipeline")
            .settings
    };
    // The folder's recommendation over the defaults.
    let s = build(UnclipBuilder::new());
    assert_eq!((s.decoder_steps, s.prior_guidance_scale), (11, 1.5));
    assert_eq!(s.super_res_steps, Settings::default().super_res_steps);
    // A setter changes one field of it, whatever the call order.
    let s = build(UnclipBuilder::new().decoder_steps(4));
    assert_eq!((s.decoder_steps, s.prior_guidance_scale), (4, 1.5));
    // `.settings(..)` replaces it; setters still apply on top.
    let s = build(UnclipBuilder::new().seed(9).settings(Settings::default()));
    assert_eq!(
        s,
        Settings {
            seed: 9,
            ..Settings::default()
        }
    );
    // A bad file fails the build with the file named.
    std::fs::write(dir.join(SETTINGS_FILE), r#"{"decoder_steps": -3}"#).expect("write");
    let err = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(&dir)
        .build()
        .err()
        .expect("bad settings file");
    assert!(err.to_string().contains(SETTINGS_FILE), "{err}");
}
