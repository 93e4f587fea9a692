//! The pipeline's progress callback: called after every step of every stage, in order, with the
//! stage's step count as `total`; `Control::Cancel` stops the call with `Cancelled { stage }` at
//! once (no further steps of any stage).

use unclip::{Control, Progress, Stage, UnclipBuilder, UnclipError, UnclipPipeline};
use unclip_testkit::{fixture_dir, test_device};

const PRIOR: usize = 3;
const DECODER: usize = 4;
const SUPER_RES: usize = 2;

fn pipeline() -> UnclipPipeline {
    UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(fixture_dir("unclip_tiny"))
        .prior_steps(PRIOR)
        .decoder_steps(DECODER)
        .super_res_steps(SUPER_RES)
        .seed(5)
        .build()
        .expect("pipeline")
}

/// The expected `(stage, step, total)` sequence of one text-to-image call.
fn expected() -> Vec<(Stage, usize, usize)> {
    let mut v = Vec::new();
    for (stage, n) in [
        (Stage::Prior, PRIOR),
        (Stage::Decoder, DECODER),
        (Stage::SuperRes, SUPER_RES),
    ] {
        v.extend((1..=n).map(|s| (stage, s, n)));
    }
    v
}

#[test]
fn the_callback_sees_every_step_of_every_stage_in_order() {
    let pipe = pipeline();
    let mut seen: Vec<Progress> = Vec::new();
    let out = pipe
        .text_to_image(&["a red circle"], &mut |p| {
            seen.push(p);
            Control::Continue
        })
        .expect("generate");
    assert_eq!(out.images.dims()[0], 1);
    let got: Vec<_> = seen.iter().map(|p| (p.stage, p.step, p.total)).collect();
    assert_eq!(got, expected());
    // Within a stage the timesteps decrease (the reverse process), ending at 0.
    for stage in [Stage::Prior, Stage::Decoder, Stage::SuperRes] {
        let ts: Vec<usize> = seen
            .iter()
            .filter(|p| p.stage == stage)
            .map(|p| p.timestep)
            .collect();
        assert!(ts.windows(2).all(|w| w[0] > w[1]), "{stage}: {ts:?}");
        assert_eq!(*ts.last().unwrap(), 0, "{stage}: {ts:?}");
    }

    // Without super-resolution there is no super-resolution step.
    let mut pipe = pipe;
    pipe.settings.super_res = false;
    let mut stages = Vec::new();
    pipe.text_to_image(&["a red circle"], &mut |p| {
        stages.push(p.stage);
        Control::Continue
    })
    .expect("generate");
    assert_eq!(stages.len(), PRIOR + DECODER);
    assert!(!stages.contains(&Stage::SuperRes));
}

#[test]
fn cancelling_stops_in_the_stage_it_was_asked_in() {
    let pipe = pipeline();
    // Cancel at the second decoder step: nothing is reported after it.
    let mut seen = Vec::new();
    let r = pipe.text_to_image(&["a red circle"], &mut |p| {
        seen.push((p.stage, p.step));
        if p.stage == Stage::Decoder && p.step == 2 {
            Control::Cancel
        } else {
            Control::Continue
        }
    });
    assert!(
        matches!(
            r,
            Err(UnclipError::Cancelled {
                stage: Stage::Decoder
            })
        ),
        "{:?}",
        r.err()
    );
    assert_eq!(seen.len(), PRIOR + 2);
    assert_eq!(seen.last(), Some(&(Stage::Decoder, 2)));

    // The first prior step and the last super-resolution step.
    let r = pipe.text_to_image(&["a red circle"], &mut |_| Control::Cancel);
    assert!(
        matches!(
            r,
            Err(UnclipError::Cancelled {
                stage: Stage::Prior
            })
        ),
        "{:?}",
        r.err()
    );
    let mut calls = 0;
    let r = pipe.text_to_image(&["a red circle"], &mut |p| {
        calls += 1;
        if p.stage == Stage::SuperRes && p.step == p.total {
            Control::Cancel
        } else {
            Control::Continue
        }
    });
    assert!(
        matches!(
            r,
            Err(UnclipError::Cancelled {
                stage: Stage::SuperRes
            })
        ),
        "{:?}",
        r.err()
    );
    assert_eq!(calls, PRIOR + DECODER + SUPER_RES);
}
