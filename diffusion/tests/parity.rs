//! Parity of the scheduler with diffusers 0.42's UnCLIPScheduler traces.
//!
//! Every trace found in a fixture's `io.safetensors` is replayed: `trace.<cfg>.N<n>.*` chains
//! (timesteps exactly, then each step's `prev_sample` / `pred_original_sample` within 1e-5
//! scaled by max(1, max|ref|)), and the isolated `trace.<cfg>.single_t<t>.*` steps. The recorded
//! `variance_noise` tensors are fed through `ReplayNoise`; configs come from
//! `<fixture>/<cfg>/scheduler_config.json`. Nothing about sizes, configs or N is hard-coded.

use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::Device;
use unclip_diffusion::{
    DiffusionError, NoiseSchedule, ReplayNoise, SchedulerConfig, UnCLIPScheduler,
    classifier_free_guidance, unclip_timesteps,
};
use unclip_testkit::{
    HostData, HostTensor, Io, assert_close_slice, fixture_dir, read_json, test_device, to_vec,
};

const TOL: f32 = 1e-5;

fn host(shape: Vec<usize>, values: Vec<f32>) -> HostTensor {
    HostTensor {
        shape,
        data: HostData::F32(values),
    }
}

fn replay(noise: &[&HostTensor]) -> ReplayNoise {
    ReplayNoise::from_recordings(noise.iter().map(|h| (h.shape.clone(), h.f32())))
        .expect("recorded noise")
}

fn check(name: &str, actual: &HostTensor, expected: &HostTensor) {
    assert_eq!(actual.shape, expected.shape, "{name}: shape");
    assert_close_slice(name, &actual.f32(), &expected.f32(), TOL);
}

/// One `UnCLIPScheduler::step` on host tensors of any rank 1..=5: `(prev_sample, pred_x0)`.
fn step_host(
    sched: &UnCLIPScheduler,
    model_output: &HostTensor,
    t: usize,
    sample: &HostTensor,
    prev: Option<usize>,
    noise: &mut ReplayNoise,
    device: &Device,
) -> Result<(HostTensor, HostTensor), DiffusionError> {
    fn run<const D: usize>(
        sched: &UnCLIPScheduler,
        mo: &HostTensor,
        t: usize,
        sample: &HostTensor,
        prev: Option<usize>,
        noise: &mut ReplayNoise,
        device: &Device,
    ) -> Result<(HostTensor, HostTensor), DiffusionError> {
        let out = sched.step(
            mo.float::<D>(device),
            t,
            sample.float::<D>(device),
            prev,
            noise,
        )?;
        let shape = out.prev_sample.dims().to_vec();
        Ok((
            host(shape.clone(), to_vec(out.prev_sample)),
            host(
                out.pred_original_sample.dims().to_vec(),
                to_vec(out.pred_original_sample),
            ),
        ))
    }
    match sample.shape.len() {
        1 => run::<1>(sched, model_output, t, sample, prev, noise, device),
        2 => run::<2>(sched, model_output, t, sample, prev, noise, device),
        3 => run::<3>(sched, model_output, t, sample, prev, noise, device),
        4 => run::<4>(sched, model_output, t, sample, prev, noise, device),
        5 => run::<5>(sched, model_output, t, sample, prev, noise, device),
        r => panic!("rank {r} samples are not covered by this test"),
    }
}

fn cfg_host(
    output: &HostTensor,
    scale: f32,
    channels: Option<usize>,
    device: &Device,
) -> HostTensor {
    fn run<const D: usize>(o: &HostTensor, s: f32, c: Option<usize>, d: &Device) -> HostTensor {
        let g = classifier_free_guidance(o.float::<D>(d), s, c).expect("guidance");
        host(g.dims().to_vec(), to_vec(g))
    }
    match output.shape.len() {
        2 => run::<2>(output, scale, channels, device),
        3 => run::<3>(output, scale, channels, device),
        4 => run::<4>(output, scale, channels, device),
        r => panic!("rank {r} outputs are not covered by this test"),
    }
}

fn load_scheduler(dir: &Path, cfg: &str) -> UnCLIPScheduler {
    let path = dir.join(cfg).join("scheduler_config.json");
    UnCLIPScheduler::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(config folder, N or t)` pairs.
type Runs = BTreeSet<(String, usize)>;

/// `(cfg, n)` of every `trace.<cfg>.N<n>.timesteps`, and `(cfg, t)` of every
/// `trace.<cfg>.single_t<t>.sample`.
fn discover(io: &Io) -> (Runs, Runs) {
    let mut chains = BTreeSet::new();
    let mut singles = BTreeSet::new();
    for name in io.names_with_prefix("trace.") {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() != 4 {
            continue;
        }
        let (cfg, run, leaf) = (parts[1], parts[2], parts[3]);
        if leaf == "timesteps"
            && let Some(n) = run.strip_prefix('N').and_then(|n| n.parse().ok())
        {
            chains.insert((cfg.to_string(), n));
        }
        if leaf == "sample"
            && let Some(t) = run.strip_prefix("single_t").and_then(|t| t.parse().ok())
        {
            singles.insert((cfg.to_string(), t));
        }
    }
    (chains, singles)
}

/// Replays every trace of the fixture `name`; returns how many steps were checked.
fn replay_traces(name: &str) -> usize {
    let dir = fixture_dir(name);
    let io = Io::open_dir(&dir);
    let json = read_json(&dir.join("io.json"));
    let device = test_device();
    let (chains, singles) = discover(&io);
    assert!(
        !chains.is_empty(),
        "{name}: no trace.<cfg>.N<n>.timesteps tensors"
    );
    let mut checked = 0;

    for (cfg, n) in &chains {
        let prefix = format!("trace.{cfg}.N{n}");
        let mut sched = load_scheduler(&dir, cfg);
        sched
            .set_timesteps(*n)
            .unwrap_or_else(|e| panic!("{prefix}: {e}"));
        let expected: Vec<usize> = io
            .get(&format!("{prefix}.timesteps"))
            .i64()
            .iter()
            .map(|&t| t as usize)
            .collect();
        assert_eq!(sched.timesteps(), expected.as_slice(), "{prefix}.timesteps");

        // io.json's step list (when present) must agree with the pairs the scheduler yields.
        let steps_json = json
            .get("traces")
            .or_else(|| json.get("scheduler_traces").and_then(|s| s.get("traces")))
            .and_then(|t| t.get(&prefix))
            .and_then(|t| t.get("steps"))
            .and_then(|s| s.as_array());
        let pairs = sched.timestep_pairs();
        if let Some(steps) = steps_json {
            assert_eq!(
                steps.len(),
                pairs.len(),
                "{prefix}: number of steps in io.json"
            );
            for (s, (t, prev)) in steps.iter().zip(&pairs) {
                assert_eq!(s["t"].as_u64(), Some(*t as u64), "{prefix}: t");
                assert_eq!(
                    s["prev_timestep"].as_u64().map(|p| p as usize),
                    *prev,
                    "{prefix}: prev_timestep"
                );
            }
        }
        assert!(
            !io.has(&format!("{prefix}.step{n}.model_output")),
            "{prefix}: more steps than N"
        );

        let mut sample = io.get(&format!("{prefix}.sample_init")).clone();
        for (i, (t, prev)) in pairs.into_iter().enumerate() {
            let step = format!("{prefix}.step{i}");
            let noise_name = format!("{step}.variance_noise");
            let recorded: Vec<&HostTensor> = io
                .has(&noise_name)
                .then(|| io.get(&noise_name))
                .into_iter()
                .collect();
            assert_eq!(
                recorded.is_empty(),
                t == 0,
                "{step}: noise is drawn exactly when t > 0"
            );
            let mut noise = replay(&recorded);
            let (prev_sample, x0) = step_host(
                &sched,
                io.get(&format!("{step}.model_output")),
                t,
                &sample,
                prev,
                &mut noise,
                &device,
            )
            .unwrap_or_else(|e| panic!("{step} (t={t}): {e}"));
            assert_eq!(noise.remaining(), 0, "{step}: recorded noise not consumed");
            check(
                &format!("{step}.pred_original_sample"),
                &x0,
                io.get(&format!("{step}.pred_original_sample")),
            );
            check(
                &format!("{step}.prev_sample"),
                &prev_sample,
                io.get(&format!("{step}.prev_sample")),
            );
            sample = prev_sample;
            checked += 1;
        }
    }

    for (cfg, t) in &singles {
        let prefix = format!("trace.{cfg}.single_t{t}");
        let sched = load_scheduler(&dir, cfg);
        let noise_name = format!("{prefix}.variance_noise");
        let recorded: Vec<&HostTensor> = io
            .has(&noise_name)
            .then(|| io.get(&noise_name))
            .into_iter()
            .collect();
        let mut noise = replay(&recorded);
        let (prev_sample, x0) = step_host(
            &sched,
            io.get(&format!("{prefix}.model_output")),
            *t,
            io.get(&format!("{prefix}.sample")),
            None,
            &mut noise,
            &device,
        )
        .unwrap_or_else(|e| panic!("{prefix}: {e}"));
        assert_eq!(
            noise.remaining(),
            0,
            "{prefix}: recorded noise not consumed"
        );
        check(
            &format!("{prefix}.pred_original_sample"),
            &x0,
            io.get(&format!("{prefix}.pred_original_sample")),
        );
        check(
            &format!("{prefix}.prev_sample"),
            &prev_sample,
            io.get(&format!("{prefix}.prev_sample")),
        );
        checked += 1;
    }
    println!(
        "{name}: {} chains, {} single steps, {checked} steps checked",
        chains.len(),
        singles.len()
    );
    checked
}

#[test]
fn scheduler_only_traces() {
    assert!(replay_traces("scheduler_only") > 0);
}

#[test]
fn unclip_tiny_scheduler_traces() {
    assert!(replay_traces("unclip_tiny") > 0);
}

/// `betas`, `alphas`, `alphas_cumprod` of every config of the fixture.
#[test]
fn scheduler_only_schedule() {
    let dir = fixture_dir("scheduler_only");
    let io = Io::open_dir(&dir);
    let (chains, _) = discover(&io);
    let configs: BTreeSet<&String> = chains.iter().map(|(c, _)| c).collect();
    assert!(!configs.is_empty());
    for cfg in configs {
        let config =
            SchedulerConfig::from_file(dir.join(cfg).join("scheduler_config.json")).unwrap();
        let schedule = NoiseSchedule::from_config(&config);
        for (name, ours) in [
            ("betas", schedule.betas()),
            ("alphas", schedule.alphas()),
            ("alphas_cumprod", schedule.alphas_cumprod()),
        ] {
            let reference = io.get(name).f32();
            let differ = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
            println!(
                "{cfg} {name}: {differ} of {} values differ bitwise",
                reference.len()
            );
            assert_eq!(ours.len(), reference.len(), "{cfg} {name}: length");
            assert_close_slice(&format!("{cfg} {name}"), ours, &reference, 0.0);
            assert_eq!(
                differ, 0,
                "{cfg} {name}: torch's float32 values are reproduced exactly"
            );
        }
    }
}

/// io.json `set_timesteps` (every N listed), and the N = 1 error.
#[test]
fn scheduler_only_set_timesteps() {
    let dir = fixture_dir("scheduler_only");
    let json = read_json(&dir.join("io.json"));
    let io = Io::open_dir(&dir);
    let (chains, _) = discover(&io);
    let map = json["set_timesteps"]
        .as_object()
        .expect("io.json set_timesteps");
    assert!(!map.is_empty());
    for (cfg, _) in &chains {
        let mut sched = load_scheduler(&dir, cfg);
        for (n, expected) in map {
            let n: usize = n.parse().expect("N");
            let expected: Vec<usize> = expected
                .as_array()
                .expect("list")
                .iter()
                .map(|v| v.as_u64().expect("int") as usize)
                .collect();
            sched.set_timesteps(n).unwrap();
            assert_eq!(sched.timesteps(), expected.as_slice(), "{cfg} N={n}");
            assert_eq!(
                unclip_timesteps(sched.config().num_train_timesteps, n).unwrap(),
                expected
            );
        }
        assert!(matches!(
            sched.set_timesteps(1),
            Err(DiffusionError::TooFewInferenceSteps { requested: 1 })
        ));
    }
}

/// The scheduler side of a recorded pipeline run (`e2e.*`): classifier-free guidance of the raw
/// model outputs (prior: whole output; decoder: eps channels, variance from the cond half), then
/// the scheduler steps with the recorded noise, stage by stage, in the order of io.json
/// `e2e.scheduler_steps`; the decoder's result clamped to [-1, 1] is `e2e.image_small`.
fn replay_e2e(name: &str) -> usize {
    let dir = fixture_dir(name);
    let io = Io::open_dir(&dir);
    let json = read_json(&dir.join("io.json"));
    let device = test_device();
    let e2e = &json["e2e"];
    let steps = e2e["scheduler_steps"]
        .as_array()
        .expect("e2e.scheduler_steps");
    let stages = e2e["steps"].as_object().expect("e2e.steps");
    assert!(!steps.is_empty() && !stages.is_empty());
    let mut checked = 0;
    for (stage, n) in stages {
        let mut sched = load_scheduler(&dir, &format!("{stage}_scheduler"));
        let n = n.as_u64().expect("steps") as usize;
        sched.set_timesteps(n).unwrap();
        let expected: Vec<usize> = e2e["timesteps"][stage]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            sched.timesteps(),
            expected.as_slice(),
            "{name} {stage} timesteps"
        );
        let mut sample = io.get(&format!("e2e.{stage}_latents")).clone();
        let stage_steps: Vec<_> = steps
            .iter()
            .filter(|s| s["stage"] == stage.as_str())
            .collect();
        assert_eq!(stage_steps.len(), n, "{name} {stage}: steps");
        let guidance = e2e["guidance"][stage].as_f64().map(|g| g as f32);
        for (s, (t, prev)) in stage_steps.iter().zip(sched.timestep_pairs()) {
            let i = s["i"].as_u64().unwrap();
            assert_eq!(s["t"].as_u64(), Some(t as u64));
            assert_eq!(s["prev_timestep"].as_u64().map(|p| p as usize), prev);
            let model_output = match (stage.as_str(), guidance) {
                ("prior", Some(scale)) => {
                    let raw = io.get(&format!("e2e.prior.step{i}.predicted_image_embedding"));
                    cfg_host(raw, scale, None, &device)
                }
                ("decoder", Some(scale)) => {
                    let raw = io.get(&format!("e2e.decoder.step{i}.out"));
                    cfg_host(raw, scale, Some(sample.shape[1]), &device)
                }
                ("super_res", None) => io.get(&format!("e2e.super_res.step{i}.out")).clone(),
                other => panic!("{name}: stage {other:?} is not covered by this test"),
            };
            let reference_output = format!("e2e.sched.{stage}.step{i}.model_output");
            if io.has(&reference_output) {
                check(&reference_output, &model_output, io.get(&reference_output));
            }
            let recorded: Vec<&HostTensor> = s["noise"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| io.get(v.as_str().unwrap()))
                .collect();
            let mut noise = replay(&recorded);
            let (prev_sample, _) =
                step_host(&sched, &model_output, t, &sample, prev, &mut noise, &device)
                    .unwrap_or_else(|e| panic!("{name} {stage} step {i}: {e}"));
            assert_eq!(noise.remaining(), 0);
            check(
                &format!("e2e.sched.{stage}.step{i}.prev_sample"),
                &prev_sample,
                io.get(&format!("e2e.sched.{stage}.step{i}.prev_sample")),
            );
            sample = prev_sample;
            checked += 1;
        }
        if stage == "decoder" && io.has("e2e.image_small") {
            let clamped = host(
                sample.shape.clone(),
                sample.f32().iter().map(|v| v.clamp(-1.0, 1.0)).collect(),
            );
            check("e2e.image_small", &clamped, io.get("e2e.image_small"));
        }
    }
    checked
}

#[test]
fn unclip_tiny_e2e_guidance_and_steps() {
    assert!(replay_e2e("unclip_tiny") > 0);
}

#[test]
fn unclip_variation_tiny_e2e_guidance_and_steps() {
    assert!(replay_e2e("unclip_variation_tiny") > 0);
}
