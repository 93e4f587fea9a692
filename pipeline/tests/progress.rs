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

/// What the tests keep of a [`Progress`] (which borrows its preview for the call only).
struct Seen {
    stage: Stage,
    step: usize,
    total: usize,
    timestep: usize,
}

#[test]
fn the_callback_sees_every_step_of_every_stage_in_order() {
    let pipe = pipeline();
    // (stage, step, total, timestep) of every call, and the previews' shapes; the decoder's last
    // preview is kept.
    let mut seen: Vec<Seen> = Vec::new();
    let mut previews: Vec<(Stage, Option<Vec<usize>>)> = Vec::new();
    let mut last_decoder_preview = None;
    let out = pipe
        .text_to_image(&["a red circle"], &mut |p: Progress<'_>| {
            seen.push(Seen {
                stage: p.stage,
                step: p.step,
                total: p.total,
                timestep: p.timestep,
            });
            previews.push((p.stage, p.preview.map(|t| t.dims().to_vec())));
            if p.stage == Stage::Decoder && p.step == p.total {
                last_decoder_preview = p.preview.cloned();
            }
            Control::Continue
        })
        .expect("generate");
    // Previews: none for the prior (an embedding), [B, 3, h, w] for the image stages.
    for (stage, dims) in &previews {
        match stage {
            Stage::Prior => assert_eq!(dims, &None),
            Stage::Decoder => assert_eq!(dims.as_ref().map(|d| (d[0], d[1])), Some((1, 3))),
            _ => {
                let d = dims.as_ref().expect("super-resolution preview");
                assert_eq!(d[..], out.images.dims()[..]);
            }
        }
    }
    // The last decoder step's x_0 prediction is the decoder's output: the last step's sample is
    // `c * x_0` with c = (1 - a_0) / (1 - a_0) computed from two f32 paths (beta_0 and
    // 1 - alpha_bar_0 ~ 4e-5, which f32 holds to ~1e-3 relative), so they agree to ~1e-3.
    let last = last_decoder_preview
        .expect("decoder preview")
        .clamp(-1.0, 1.0);
    let diff = (last - out.image_small.clone())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(
        diff < 2e-3,
        "last decoder preview differs from image_small by {diff}"
    );
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
