//! The prior stage of the end-to-end pipeline run (`e2e.*` of the `unclip_tiny` fixture): the
//! same latents, text states and scheduler noise give the same image embeddings, step by step.
//! Also: reranking of several candidates, and argument errors.

use std::ops::ControlFlow;

use burn::tensor::{Bool, Device, Tensor};
use unclip_diffusion::{ReplayNoise, SeededNoise, UnCLIPScheduler};
use unclip_prior::sample::{PriorSampleConfig, sample};
use unclip_prior::{PriorConditioning, PriorError, PriorTransformer};
use unclip_testkit::{Io, assert_close, fixture_dir, read_json, test_device, to_vec};

const TOL: f32 = 1e-4;

fn mask(io: &Io, name: &str, device: &Device) -> Tensor<2, Bool> {
    io.get(name).int::<2>(device).equal_elem(1)
}

/// `(cond, uncond)` of the e2e run: the prompts' and the empty prompt's text encoder outputs.
fn e2e_conditioning(io: &Io, device: &Device) -> (PriorConditioning, PriorConditioning) {
    let b = io.get("e2e.text_encoder.prompt.text_embeds").shape[0];
    let m = mask(io, "e2e.prior.attention_mask", device); // [uncond; cond]
    let cond = PriorConditioning {
        proj_embedding: io
            .get("e2e.text_encoder.prompt.text_embeds")
            .float::<2>(device),
        encoder_hidden_states: Some(
            io.get("e2e.text_encoder.prompt.last_hidden_state")
                .float::<3>(device),
        ),
        attention_mask: Some(m.clone().narrow(0, b, b)),
    };
    let uncond = PriorConditioning {
        proj_embedding: io
            .get("e2e.text_encoder.uncond.text_embeds")
            .float::<2>(device),
        encoder_hidden_states: Some(
            io.get("e2e.text_encoder.uncond.last_hidden_state")
                .float::<3>(device),
        ),
        attention_mask: Some(m.narrow(0, 0, b)),
    };
    (cond, uncond)
}

#[test]
fn prior_stage_matches_the_pipeline() {
    let device = test_device();
    let root = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&root);
    let meta = read_json(&root.join("io.json"));
    let steps = meta["e2e"]["steps"]["prior"]
        .as_u64()
        .expect("io.json e2e.steps.prior") as usize;
    let scale = meta["e2e"]["guidance"]["prior"]
        .as_f64()
        .expect("io.json e2e.guidance.prior") as f32;

    let prior = PriorTransformer::from_pretrained(root.join("prior"), &device).unwrap();
    let mut scheduler =
        UnCLIPScheduler::from_file(root.join("prior_scheduler/scheduler_config.json")).unwrap();
    let (cond, uncond) = e2e_conditioning(&io, &device);

    // The noise the prior's scheduler steps drew, in order.
    let mut noise = ReplayNoise::new();
    for s in meta["e2e"]["scheduler_steps"].as_array().unwrap() {
        if s["stage"] == "prior" {
            for name in s["noise"].as_array().unwrap() {
                let t = io.get(name.as_str().unwrap());
                noise.push(t.shape.clone(), t.f32()).unwrap();
            }
        }
    }
    let latents = io.get("e2e.prior_latents").float::<2>(&device);
    let config = PriorSampleConfig {
        num_inference_steps: steps,
        guidance_scale: scale,
        num_candidates: 1,
    };
    let mut seen = Vec::new();
    let out = sample(
        &prior,
        &mut scheduler,
        &cond,
        Some(&uncond),
        &config,
        Some(latents),
        &mut noise,
        &mut |s| {
            seen.push((s.index, s.timestep, s.latents.clone()));
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(seen.len(), steps);
    for (i, t, lat) in seen {
        let name = format!("e2e.sched.prior.step{i}.prev_sample");
        if io.has(&name) {
            assert_close(&name, lat, io.get(&name), TOL);
        }
        let ts = meta["e2e"]["timesteps"]["prior"][i].as_u64().unwrap() as usize;
        assert_eq!(t, ts);
    }
    assert_eq!(
        noise.remaining(),
        0,
        "every recorded prior noise draw is consumed"
    );
    assert_close(
        "e2e.image_embeddings",
        out.image_embeddings,
        io.get("e2e.image_embeddings"),
        TOL,
    );
    assert_eq!(out.chosen, vec![0; cond.batch()]);
}

#[test]
fn reranking_keeps_the_best_candidate() {
    let device = test_device();
    let root = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&root);
    let prior = PriorTransformer::from_pretrained(root.join("prior"), &device).unwrap();
    let mut scheduler =
        UnCLIPScheduler::from_file(root.join("prior_scheduler/scheduler_config.json")).unwrap();
    let (cond, uncond) = e2e_conditioning(&io, &device);
    let b = cond.batch();
    let n = 3;
    let config = PriorSampleConfig {
        num_inference_steps: 4,
        guidance_scale: 2.0,
        num_candidates: n,
    };
    let mut calls = 0;
    // The uncond conditioning may also be a single row.
    let uncond1 = uncond.rows(0, 1).unwrap();
    let out = sample(
        &prior,
        &mut scheduler,
        &cond,
        Some(&uncond1),
        &config,
        None,
        &mut SeededNoise::new(3),
        &mut |_| {
            calls += 1;
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(calls, 4);
    let e = prior.config().clip_embed_dim();
    assert_eq!(out.candidates.dims(), [b, n, e]);
    assert_eq!(out.scores.dims(), [b, n]);
    assert_eq!(out.image_embeddings.dims(), [b, e]);
    let scores = to_vec(out.scores.clone());
    let cands = to_vec(out.candidates.clone());
    let chosen = to_vec(out.image_embeddings.clone());
    let text = to_vec(cond.proj_embedding.clone());
    for i in 0..b {
        let row = &scores[i * n..(i + 1) * n];
        let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(row[out.chosen[i]], best);
        // The chosen embedding is that candidate, and its score is its dot product with the text.
        let c = &cands[(i * n + out.chosen[i]) * e..(i * n + out.chosen[i] + 1) * e];
        assert_eq!(&chosen[i * e..(i + 1) * e], c);
        let dot: f32 = c
            .iter()
            .zip(&text[i * e..(i + 1) * e])
            .map(|(a, b)| a * b)
            .sum();
        assert!((dot - best).abs() <= 1e-4 * best.abs().max(1.0));
    }
    // Same seed, same result.
    let again = sample(
        &prior,
        &mut scheduler,
        &cond,
        Some(&uncond1),
        &config,
        None,
        &mut SeededNoise::new(3),
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(to_vec(again.candidates), cands);
}

#[test]
fn sampling_argument_errors_are_typed() {
    let device = test_device();
    let root = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&root);
    let prior = PriorTransformer::from_pretrained(root.join("prior"), &device).unwrap();
    let mut scheduler =
        UnCLIPScheduler::from_file(root.join("prior_scheduler/scheduler_config.json")).unwrap();
    let (cond, _) = e2e_conditioning(&io, &device);
    let mut noise = SeededNoise::new(0);
    let cfg = PriorSampleConfig {
        num_inference_steps: 3,
        guidance_scale: 4.0,
        num_candidates: 1,
    };
    // Guidance without an unconditional conditioning.
    let r = sample(
        &prior,
        &mut scheduler,
        &cond,
        None,
        &cfg,
        None,
        &mut noise,
        &mut |_| ControlFlow::Continue(()),
    );
    assert!(matches!(
        r,
        Err(PriorError::InvalidArgument { name: "uncond", .. })
    ));
    // Without guidance no uncond is needed.
    let no_cfg = PriorSampleConfig {
        guidance_scale: 1.0,
        ..cfg.clone()
    };
    assert!(
        sample(
            &prior,
            &mut scheduler,
            &cond,
            None,
            &no_cfg,
            None,
            &mut noise,
            &mut |_| ControlFlow::Continue(())
        )
        .is_ok()
    );
    // Latents of the wrong shape; too few steps (a scheduler error).
    let bad = Tensor::<2>::zeros([cond.batch() + 1, prior.config().embedding_dim], &device);
    let r = sample(
        &prior,
        &mut scheduler,
        &cond,
        None,
        &no_cfg,
        Some(bad),
        &mut noise,
        &mut |_| ControlFlow::Continue(()),
    );
    assert!(matches!(
        r,
        Err(PriorError::Shape {
            input: "latents",
            ..
        })
    ));
    let one = PriorSampleConfig {
        num_inference_steps: 1,
        ..no_cfg
    };
    assert!(matches!(
        sample(
            &prior,
            &mut scheduler,
            &cond,
            None,
            &one,
            None,
            &mut noise,
            &mut |_| ControlFlow::Continue(())
        ),
        Err(PriorError::Diffusion(_))
    ));
}

#[test]
fn the_progress_callback_can_cancel() {
    let device = test_device();
    let root = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&root);
    let prior = PriorTransformer::from_pretrained(root.join("prior"), &device).unwrap();
    let mut scheduler =
        UnCLIPScheduler::from_file(root.join("prior_scheduler/scheduler_config.json")).unwrap();
    let (cond, uncond) = e2e_conditioning(&io, &device);
    let config = PriorSampleConfig {
        num_inference_steps: 4,
        guidance_scale: 2.0,
        num_candidates: 1,
    };
    let mut seen = Vec::new();
    let r = sample(
        &prior,
        &mut scheduler,
        &cond,
        Some(&uncond),
        &config,
        None,
        &mut SeededNoise::new(1),
        &mut |s| {
            assert_eq!(s.pred_original.dims(), s.latents.dims());
            seen.push((s.index, s.total));
            if s.index == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    assert!(
        matches!(r, Err(PriorError::Cancelled { step: 2, total: 4 })),
        "{r:?}"
    );
    assert_eq!(seen, vec![(0, 4), (1, 4)]);
}
