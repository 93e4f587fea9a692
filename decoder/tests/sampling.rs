//! The decoder stage of the fixture's end-to-end pipeline call, replaying the pipeline's noise
//! draws: text_proj -> decoder with classifier-free guidance -> `e2e.image_small`.

use burn::tensor::{Bool, Device, Tensor};
use unclip_decoder::{
    DecoderError, DecoderRequest, InitImage, LowNoiseExpert, TextConditioning,
    UNet2DConditionModel, UnCLIPTextProjModel, no_progress, sample_decoder,
    sample_decoder_with_expert,
};
use unclip_diffusion::{ReplayNoise, Sampler, UnCLIPScheduler};
use unclip_testkit::{HostTensor, Io, assert_close, fixture_dir, read_json, test_device};

fn mask(h: &HostTensor, device: &Device) -> Tensor<2, Bool> {
    h.int::<2>(device).equal_elem(1)
}

/// The fixture's decoder, text projection and decoder scheduler.
struct Models {
    io: Io,
    dir: std::path::PathBuf,
    unet: UNet2DConditionModel,
    text_proj: UnCLIPTextProjModel,
    scheduler: UnCLIPScheduler,
}

fn models(device: &Device) -> Models {
    let dir = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&dir);
    let unet = UNet2DConditionModel::from_pretrained(dir.join("decoder"), device).expect("decoder");
    let text_proj =
        UnCLIPTextProjModel::from_pretrained(dir.join("text_proj"), device).expect("text_proj");
    let scheduler = UnCLIPScheduler::from_file(dir.join("decoder_scheduler")).expect("scheduler");
    Models {
        io,
        dir,
        unet,
        text_proj,
        scheduler,
    }
}

/// The pipeline call's text conditioning, split into (conditional, unconditional) rows (the
/// recorded tensors are `[uncond; cond]`).
fn text_rows(io: &Io, device: &Device) -> (TextConditioning, TextConditioning) {
    let prompt = io.get("e2e.text_proj.prompt_embeds").float::<2>(device);
    let hidden = io
        .get("e2e.text_proj.text_encoder_hidden_states")
        .float::<3>(device);
    let text_mask = mask(io.get("e2e.prior.attention_mask"), device);
    let b = prompt.dims()[0] / 2;
    let rows = |start: usize| TextConditioning {
        prompt_embeds: prompt.clone().narrow(0, start, b),
        hidden_states: hidden.clone().narrow(0, start, b),
        mask: text_mask.clone().narrow(0, start, b),
    };
    (rows(b), rows(0))
}

/// A decoder call on the fixture's image embeddings and captions without guidance, drawing its
/// own latents.
fn unguided_request(io: &Io, device: &Device, steps: usize) -> DecoderRequest {
    let (text, _) = text_rows(io, device);
    DecoderRequest {
        image_embeddings: io.get("e2e.text_proj.image_embeddings").float(device),
        text,
        uncond_text: None,
        guidance_scale: 1.0,
        num_inference_steps: steps,
        latents: None,
        sampler: Sampler::Ancestral,
        init_image: None,
    }
}

/// An unguided call on the fixture's image embeddings, captions and recorded `x_T`.
fn latents_request(io: &Io, device: &Device, steps: usize, sampler: Sampler) -> DecoderRequest {
    DecoderRequest {
        latents: Some(io.get("e2e.decoder_latents").float(device)),
        sampler,
        ..unguided_request(io, device, steps)
    }
}

fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// Noise tensors the pipeline drew during `stage`, in order (io.json `e2e.scheduler_steps`).
fn stage_noise(io: &Io, manifest: &serde_json::Value, stage: &str) -> ReplayNoise {
    let mut replay = ReplayNoise::new();
    let steps = manifest["e2e"]["scheduler_steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for step in steps.iter().filter(|s| s["stage"] == stage) {
        for name in step["noise"].as_array().cloned().unwrap_or_default() {
            let name = name.as_str().expect("noise name");
            let h = io.get(name);
            replay.push(h.shape.clone(), h.f32()).expect("recording");
        }
    }
    replay
}

#[test]
fn e2e_decoder_stage_reproduces_image_small() {
    let device = test_device();
    let Models {
        io,
        dir,
        unet,
        text_proj,
        mut scheduler,
    } = models(&device);
    let manifest = read_json(&dir.join("io.json"));

    let (text, uncond) = text_rows(&io, &device);
    let steps = manifest["e2e"]["steps"]["decoder"].as_u64().expect("steps") as usize;
    let guidance = manifest["e2e"]["guidance"]["decoder"]
        .as_f64()
        .expect("guidance") as f32;
    let mut noise = stage_noise(&io, &manifest, "decoder");
    let request = DecoderRequest {
        image_embeddings: io.get("e2e.text_proj.image_embeddings").float(&device),
        text,
        uncond_text: Some(uncond),
        guidance_scale: guidance,
        num_inference_steps: steps,
        latents: Some(io.get("e2e.decoder_latents").float(&device)),
        sampler: Sampler::Ancestral,
        init_image: None,
    };
    let image_small = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        request,
        &mut noise,
        &mut no_progress,
    )
    .expect("sample");
    assert_eq!(
        noise.remaining(),
        0,
        "every recorded decoder noise tensor is consumed"
    );
    assert_close(
        "e2e.image_small",
        image_small,
        io.get("e2e.image_small"),
        1e-4,
    );
}

#[test]
fn sampling_without_guidance_draws_its_own_latents() {
    let device = test_device();
    let Models {
        io,
        unet,
        text_proj,
        mut scheduler,
        ..
    } = models(&device);
    let request = unguided_request(&io, &device, 2);
    let mut noise = unclip_diffusion::SeededNoise::new(7);
    let x = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        request,
        &mut noise,
        &mut no_progress,
    )
    .expect("sample");
    let s = unet.config.sample_size.expect("sample_size").hw();
    let b = io.get("e2e.text_proj.image_embeddings").shape[0];
    assert_eq!(x.dims(), [b, unet.in_channels(), s[0], s[1]]);
    let max = x.abs().max().into_scalar::<f32>();
    assert!(max <= 1.0, "clamped to [-1, 1], got {max}");
}

#[test]
fn progress_sees_every_step_and_can_cancel() {
    use std::ops::ControlFlow;
    use unclip_decoder::DecoderError;

    let device = test_device();
    let Models {
        io,
        unet,
        text_proj,
        mut scheduler,
        ..
    } = models(&device);
    let request = unguided_request(&io, &device, 3);
    // Every step, in order, with the x0 preview.
    let mut seen = Vec::new();
    let x = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        request.clone(),
        &mut unclip_diffusion::SeededNoise::new(7),
        &mut |s| {
            assert_eq!(s.pred_original.dims(), s.sample.dims());
            seen.push((s.index, s.total, s.timestep));
            ControlFlow::Continue(())
        },
    )
    .expect("sample");
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().enumerate().all(|(i, s)| s.0 == i && s.1 == 3));
    assert!(
        seen.windows(2).all(|w| w[0].2 > w[1].2),
        "timesteps decrease: {seen:?}"
    );
    // The same call without a callback gives the same image.
    let y = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        request.clone(),
        &mut unclip_diffusion::SeededNoise::new(7),
        &mut no_progress,
    )
    .expect("sample");
    assert_eq!(
        x.into_data().try_to_vec::<f32>().unwrap(),
        y.into_data().try_to_vec::<f32>().unwrap()
    );
    // Cancelling after the first step.
    let mut calls = 0;
    let r = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        request,
        &mut unclip_diffusion::SeededNoise::new(7),
        &mut |_| {
            calls += 1;
            ControlFlow::Break(())
        },
    );
    assert!(
        matches!(r, Err(DecoderError::Cancelled { step: 1, total: 3 })),
        "{r:?}"
    );
    assert_eq!(calls, 1);
}

/// The ancestral loop written out on the fixture's decoder: `request`'s conditioning without
/// classifier-free guidance, from the recorded `x_T`, `steps` steps of `scheduler` drawing
/// `SeededNoise(11)`, with `edit(out [B, 2C, H, W], t)` applied to every UNet output before the
/// step. Returns the clamped `x_0` and the `(t, prev)` pairs it ran.
fn manual_loop(
    m: &Models,
    scheduler: &mut UnCLIPScheduler,
    request: &DecoderRequest,
    steps: usize,
    edit: impl Fn(Tensor<4>, usize) -> Tensor<4>,
) -> (Tensor<4>, Vec<(usize, Option<usize>)>) {
    use unclip_decoder::GuidedDecoder;
    let device = request.image_embeddings.device();
    let model = GuidedDecoder::new(
        &m.unet,
        &m.text_proj,
        request.image_embeddings.clone(),
        request.text.clone(),
        None,
        1.0,
    )
    .expect("model");
    scheduler.set_timesteps(steps).expect("timesteps");
    let pairs = scheduler.timestep_pairs();
    let mut noise = unclip_diffusion::SeededNoise::new(11);
    let mut x = m.io.get("e2e.decoder_latents").float::<4>(&device) * scheduler.init_noise_sigma();
    for &(t, prev) in &pairs {
        let out = edit(model.output(x.clone(), t).expect("output"), t); // [B, 2C, H, W]
        x = scheduler
            .step(out, t, x, prev, &mut noise)
            .expect("step")
            .prev_sample;
    }
    (x.clamp(-1.0, 1.0), pairs)
}

/// A learned-variance decoder sampled with a `fixed_small_log` scheduler takes the posterior
/// variance. Under `learned_range`, variance values of -1 select exactly that variance
/// (`frac = 0` -> `min_log`), so the reference is an ancestral loop over the learned-range
/// scheduler with the UNet's variance channels replaced by -1, drawing the same noise.
#[test]
fn fixed_small_log_scheduler_ignores_the_variance_channels() {
    use unclip_diffusion::{SeededNoise, VarianceType};
    let device = test_device();
    let m = models(&device);
    let mut learned = m.scheduler.clone();
    assert_eq!(learned.config().variance_type, VarianceType::LearnedRange);
    let c = m.unet.in_channels();
    assert_eq!(
        m.unet.config.out_channels,
        2 * c,
        "a learned-variance decoder"
    );
    let mut fixed_config = learned.config().clone();
    fixed_config.variance_type = VarianceType::FixedSmallLog;
    let mut fixed = UnCLIPScheduler::new(fixed_config);

    let steps = 4;
    let request = latents_request(&m.io, &device, steps, Sampler::Ancestral);
    let got = sample_decoder(
        &m.unet,
        &m.text_proj,
        &mut fixed,
        request.clone(),
        &mut SeededNoise::new(11),
        &mut no_progress,
    )
    .expect("fixed_small_log sampling");

    let (expected, _) = manual_loop(&m, &mut learned, &request, steps, |out, _| {
        let eps = out.narrow(1, 0, c);
        Tensor::cat(vec![eps.clone(), eps.zeros_like() - 1.0], 1)
    });
    let diff = max_abs_diff(got.clone(), expected.clone());
    assert!(diff < 1e-5, "max abs difference {diff}");

    // ... and the learned variance does change the result on this checkpoint.
    let learned_result = sample_decoder(
        &m.unet,
        &m.text_proj,
        &mut learned,
        request,
        &mut SeededNoise::new(11),
        &mut no_progress,
    )
    .expect("learned_range sampling");
    let spread = max_abs_diff(learned_result, expected);
    assert!(
        spread > 1e-3,
        "learned variance made no difference ({spread})"
    );
}

/// `Sampler::Ddim { eta: 0 }` runs deterministic DDIM: no noise is drawn (an empty replay would
/// fail on the first draw), and the result is the DDIM update written out here from the
/// schedule's `alphas_cumprod` (x_0 from the eps prediction, clipped as the scheduler config
/// says, eps re-derived from the clipped x_0; `x_prev = sqrt(a_prev) x_0 + sqrt(1 - a_prev) eps`,
/// `a_prev = 1` after the last step).
#[test]
fn ddim_sampler_is_deterministic_ddim() {
    use unclip_decoder::GuidedDecoder;
    use unclip_diffusion::{PredictionType, SeededNoise};
    let device = test_device();
    let Models {
        io,
        unet,
        text_proj,
        mut scheduler,
        ..
    } = models(&device);
    assert_eq!(scheduler.config().prediction_type, PredictionType::Epsilon);
    let c = unet.in_channels();
    let steps = 4;
    let request = latents_request(&io, &device, steps, Sampler::Ddim { eta: 0.0 });
    let (image_embeddings, text) = (request.image_embeddings.clone(), request.text.clone());
    let latents = io.get("e2e.decoder_latents").float::<4>(&device);
    let got = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        request.clone(),
        &mut ReplayNoise::new(),
        &mut no_progress,
    )
    .expect("ddim sampling draws no noise");

    let model =
        GuidedDecoder::new(&unet, &text_proj, image_embeddings, text, None, 1.0).expect("model");
    let ac = scheduler.schedule().alphas_cumprod().to_vec();
    let (clip, range) = (
        scheduler.config().clip_sample,
        scheduler.config().clip_sample_range,
    );
    let ts = scheduler.timesteps().to_vec();
    let mut x = latents * scheduler.init_noise_sigma();
    for (i, &t) in ts.iter().enumerate() {
        let eps = model.output(x.clone(), t).expect("output").narrow(1, 0, c);
        let a = ac[t];
        let a_prev = ts.get(i + 1).map(|&p| ac[p]).unwrap_or(1.0);
        let mut x0 = (x.clone() - eps.clone() * (1.0 - a).sqrt()) / a.sqrt();
        let mut eps = eps;
        if clip {
            x0 = x0.clamp(-range, range);
            eps = (x - x0.clone() * a.sqrt()) / (1.0 - a).sqrt();
        }
        x = x0 * a_prev.sqrt() + eps * (1.0 - a_prev).sqrt();
    }
    let expected = x.clamp(-1.0, 1.0);
    let diff = max_abs_diff(got.clone(), expected.clone());
    assert!(diff < 1e-5, "max abs difference {diff}");

    // The ancestral sampler from the same x_T is a different image.
    let ancestral = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        DecoderRequest {
            sampler: Sampler::Ancestral,
            ..request
        },
        &mut SeededNoise::new(3),
        &mut no_progress,
    )
    .expect("ancestral sampling");
    let spread = max_abs_diff(ancestral, got);
    assert!(spread > 1e-3, "the sampler made no difference ({spread})");
}

/// A low-noise expert runs exactly the steps at `t < below`: with `below` 0 the result is the
/// main decoder's, with `below` above every timestep the expert's alone, and in between the
/// steps down to the switch are the main decoder's (same noise) and the first expert step is
/// not. An expert with other input channels is a typed error.
#[test]
fn low_noise_expert_takes_the_steps_below_its_switch() {
    let device = test_device();
    let Models {
        io,
        unet,
        text_proj,
        mut scheduler,
        ..
    } = models(&device);
    // The expert: the same architecture with other (random) weights.
    device.seed(11);
    let other = UNet2DConditionModel::new(&unet.config, &device).expect("expert unet");
    let steps = 6;
    // Every step's sample and timestep.
    let run = |main: &UNet2DConditionModel,
               expert: Option<LowNoiseExpert<'_>>,
               scheduler: &mut UnCLIPScheduler|
     -> (Vec<usize>, Vec<Vec<f32>>, Vec<f32>) {
        let mut ts = Vec::new();
        let mut xs = Vec::new();
        let out = sample_decoder_with_expert(
            main,
            &text_proj,
            expert,
            scheduler,
            latents_request(&io, &device, steps, Sampler::Ancestral),
            &mut unclip_diffusion::SeededNoise::new(4),
            &mut |info: &unclip_decoder::StepInfo<'_>| {
                ts.push(info.timestep);
                xs.push(unclip_testkit::to_vec(info.sample.clone()));
                std::ops::ControlFlow::Continue(())
            },
        )
        .expect("sample");
        (ts, xs, unclip_testkit::to_vec(out))
    };
    let expert = |below: usize| {
        Some(LowNoiseExpert {
            unet: &other,
            text_proj: &text_proj,
            below,
        })
    };
    let (ts, main_steps, main_out) = run(&unet, None, &mut scheduler);
    let (_, _, other_out) = run(&other, None, &mut scheduler);
    assert_ne!(main_out, other_out, "the two decoders differ");
    assert_eq!(run(&unet, expert(0), &mut scheduler).2, main_out);
    assert_eq!(run(&unet, expert(ts[0] + 1), &mut scheduler).2, other_out);
    // Switch half way: the steps at t >= below are the main decoder's.
    let below = ts[steps / 2];
    let (_, mixed, mixed_out) = run(&unet, expert(below), &mut scheduler);
    let first_expert = ts.iter().position(|&t| t < below).expect("a step below");
    assert_eq!(mixed[..first_expert], main_steps[..first_expert]);
    assert_ne!(mixed[first_expert], main_steps[first_expert]);
    assert_ne!(mixed_out, main_out);
    assert_ne!(mixed_out, other_out);

    let mut cfg = unet.config.clone();
    cfg.in_channels = unet.in_channels() + 1;
    let wrong = UNet2DConditionModel::new(&cfg, &device).expect("unet");
    let r = sample_decoder_with_expert(
        &unet,
        &text_proj,
        Some(LowNoiseExpert {
            unet: &wrong,
            text_proj: &text_proj,
            below: 500,
        }),
        &mut scheduler,
        latents_request(&io, &device, steps, Sampler::Ancestral),
        &mut unclip_diffusion::SeededNoise::new(4),
        &mut no_progress,
    );
    assert!(
        matches!(r, Err(DecoderError::InvalidArgument { ref name, .. }) if name == "expert"),
        "{r:?}"
    );
}

/// Image-to-image starts: at strength 1 the call is the from-`x_T` call whose `x_T` is the image
/// noised to the first timestep with the first noise draw (same noise afterwards, same result);
/// at the smallest strength only the last step runs and the result stays near the image, far
/// from a sample drawn from noise; bad strengths, a wrong image shape and latents given with an
/// init image are typed errors.
#[test]
fn init_image_starts_the_reverse_process_part_of_the_way() {
    use unclip_diffusion::{NoiseSource, SeededNoise};
    let device = test_device();
    let Models {
        io,
        unet,
        text_proj,
        mut scheduler,
        ..
    } = models(&device);
    let steps = 8;
    let base = unguided_request(&io, &device, steps);
    let [b, _] = base.image_embeddings.dims();
    let [h, w] = unet.config.sample_size.expect("sample_size").hw();
    let c = unet.in_channels();
    // A smooth image in [-1, 1]: a diagonal ramp.
    let ramp: Vec<f32> = (0..b * c * h * w)
        .map(|i| {
            let (y, x) = ((i / w) % h, i % w);
            (x + y) as f32 / (h + w - 2) as f32 * 1.6 - 0.8
        })
        .collect();
    let image = Tensor::<4>::from_data(burn::tensor::TensorData::new(ramp, [b, c, h, w]), &device);
    // The base request started from `image` at `strength`.
    let start = |image: Tensor<4>, strength: f32| DecoderRequest {
        init_image: Some(InitImage { image, strength }),
        ..base.clone()
    };
    let run = |scheduler: &mut UnCLIPScheduler, request: DecoderRequest, seed: u64| {
        sample_decoder(
            &unet,
            &text_proj,
            scheduler,
            request,
            &mut SeededNoise::new(seed),
            &mut no_progress,
        )
    };

    // Strength 1: every step, from the image noised to the first timestep.
    let full = run(&mut scheduler, start(image.clone(), 1.0), 5).expect("strength 1");
    scheduler.set_timesteps(steps).expect("timesteps");
    let t0 = scheduler.timestep_pairs()[0].0;
    let mut noise = SeededNoise::new(5);
    let eps = noise.randn([b, c, h, w], &device).expect("noise");
    let x_t0 = scheduler
        .add_noise(image.clone(), eps, &vec![t0; b])
        .expect("add_noise");
    let manual = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        DecoderRequest {
            latents: Some(x_t0),
            ..base.clone()
        },
        &mut noise,
        &mut no_progress,
    )
    .expect("from x_t0");
    let diff = max_abs_diff(full, manual);
    assert!(
        diff < 1e-5,
        "strength 1 differs from the manual start by {diff}"
    );

    // The smallest strength: one step, from the image barely noised.
    let mut seen = Vec::new();
    let one = sample_decoder(
        &unet,
        &text_proj,
        &mut scheduler,
        start(image.clone(), 1e-3),
        &mut SeededNoise::new(6),
        &mut |info: &unclip_decoder::StepInfo<'_>| {
            seen.push((info.index, info.total, info.timestep));
            std::ops::ControlFlow::Continue(())
        },
    )
    .expect("strength 1e-3");
    let last = scheduler.timestep_pairs().last().expect("a step").0;
    assert_eq!(seen, vec![(0, 1, last)]);
    let near = max_abs_diff(one, image.clone());
    let from_noise = max_abs_diff(
        run(&mut scheduler, base.clone(), 6).expect("from noise"),
        image.clone(),
    );
    assert!(
        near < 0.1 && from_noise > 0.5,
        "one step from the image: {near} from it; a sample from noise: {from_noise}"
    );

    // Errors.
    for strength in [0.0, -0.5, 1.5, f32::NAN] {
        let err = run(&mut scheduler, start(image.clone(), strength), 1).expect_err("bad strength");
        assert!(
            matches!(&err, DecoderError::InvalidArgument { name, .. } if name == "init_image.strength"),
            "strength {strength}: {err}"
        );
    }
    let err =
        run(&mut scheduler, start(image.clone().narrow(1, 0, 1), 0.5), 1).expect_err("one channel");
    assert!(err.to_string().contains("init_image.image"), "{err}");
    let err = run(
        &mut scheduler,
        DecoderRequest {
            init_image: Some(InitImage {
                image: image.clone(),
                strength: 0.5,
            }),
            latents: Some(image),
            ..base
        },
        1,
    )
    .expect_err("latents and init image");
    assert!(
        matches!(&err, DecoderError::InvalidArgument { name, .. } if name == "init_image"),
        "{err}"
    );
}

/// A guide that returns the same gradient at every step and records the timesteps it saw.
struct FixedGuide {
    grad: Tensor<4>,
    seen: std::sync::Mutex<Vec<usize>>,
}

impl unclip_diffusion::GradientGuide for FixedGuide {
    fn gradient(
        &self,
        x_t: Tensor<4>,
        t: usize,
    ) -> Result<Tensor<4>, unclip_diffusion::DiffusionError> {
        assert_eq!(x_t.dims(), self.grad.dims(), "the guide sees x_t");
        self.seen.lock().expect("lock").push(t);
        Ok(self.grad.clone())
    }
}

/// Gradient guidance (GLIDE's CLIP guidance, classifier guidance) shifts the eps prediction by
/// `-sqrt(1 - a_t) * scale * grad` at every step before the scheduler's step, keeps the
/// learned-variance channels, and is a no-op at scale 0. The expected loop is written out here
/// with the fixture decoder's epsilon parametrisation.
#[test]
fn gradient_guidance_shifts_the_eps_prediction_at_every_step() {
    use unclip_decoder::{DecoderGuide, sample_decoder_guided};
    use unclip_diffusion::{PredictionType, SeededNoise};
    let device = test_device();
    let m = models(&device);
    let (unet, text_proj, mut scheduler) = (&m.unet, &m.text_proj, m.scheduler.clone());
    assert_eq!(scheduler.config().prediction_type, PredictionType::Epsilon);
    let c = unet.in_channels();
    let steps = 4;
    let request = latents_request(&m.io, &device, steps, Sampler::Ancestral);
    let latents_shape = request.latents.as_ref().expect("x_T").dims();
    let grad = unclip_diffusion::randn::<4, _>(&mut SeededNoise::new(5), latents_shape, &device)
        .expect("grad");
    let guide = FixedGuide {
        grad: grad.clone(),
        seen: Default::default(),
    };
    let scale = 0.7;
    let got = sample_decoder_guided(
        unet,
        text_proj,
        None,
        Some(DecoderGuide {
            guide: &guide,
            scale,
        }),
        &mut scheduler.clone(),
        request.clone(),
        &mut SeededNoise::new(11),
        &mut no_progress,
    )
    .expect("guided sampling");

    let alphas = scheduler.schedule().alphas_cumprod().to_vec();
    let (expected, pairs) = manual_loop(&m, &mut scheduler, &request, steps, |out, t| {
        let a_t = alphas[t];
        let eps = out.clone().narrow(1, 0, c) - grad.clone().mul_scalar((1.0 - a_t).sqrt() * scale);
        Tensor::cat(vec![eps, out.narrow(1, c, c)], 1)
    });
    let diff = max_abs_diff(got.clone(), expected);
    assert!(diff < 1e-5, "max abs difference {diff}");
    let seen = guide.seen.lock().expect("lock").clone();
    let want: Vec<usize> = pairs.iter().map(|p| p.0).collect();
    assert_eq!(seen, want, "the guide is asked once per step");

    // The guidance changed the samples, and scale 0 is the unguided sampler.
    let plain = sample_decoder(
        unet,
        text_proj,
        &mut scheduler.clone(),
        request.clone(),
        &mut SeededNoise::new(11),
        &mut no_progress,
    )
    .expect("plain");
    assert!(
        max_abs_diff(got, plain.clone()) > 1e-3,
        "guidance changed nothing"
    );
    let zero = sample_decoder_guided(
        unet,
        text_proj,
        None,
        Some(DecoderGuide {
            guide: &guide,
            scale: 0.0,
        }),
        &mut scheduler.clone(),
        request,
        &mut SeededNoise::new(11),
        &mut no_progress,
    )
    .expect("scale 0");
    assert_eq!(max_abs_diff(zero, plain), 0.0);
}
