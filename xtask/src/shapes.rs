//! `train-shapes`: trains the whole unCLIP stack on the captioned shapes world
//! (`unclip-shapes`) with each stage's own training code, and `export-shapes` assembles the
//! result into a diffusers folder (`model_index.json` + one folder per component) that
//! `unclip::UnclipBuilder::from_pretrained` reads.
//!
//! Stages (each resumable from its checkpoint folder under `--run`):
//!
//! | stage   | model                                   | data                                   |
//! |---------|-----------------------------------------|----------------------------------------|
//! | `clip`  | CLIP, text + ViT (32x32, patch 4), E=64 | captions + 32x32 renders, contrastive   |
//! | `prior` | PriorTransformer (x0 prediction)        | CLIP text -> CLIP image embeddings      |
//! | `decoder` | text_proj + UNet2DConditionModel 32x32 | images + CLIP image embeddings + text |
//! | `sr1`   | UNet2DModel 32 -> 64, crops of 16        | 64x64 renders, blurred low-res input    |
//! | `sr2`   | UNet2DModel 64 -> 128, crops of 32       | 128x128 renders, BSR-degraded low-res   |
//!
//! Batches are drawn from `Dataset::new(seed + step, Split::Train)`, so a resumed run sees the
//! same data it would have seen. Every stage runs in the shared loop (`unclip_nn::TrainLoop`)
//! and saves resumable checkpoints under `<stage>/checkpoints/` (`unclip_nn::CheckpointStore`:
//! one directory per save written atomically, weights, EMA, AdamW's state, the random stream,
//! step and config; the newest `--keep-checkpoints` kept). A killed run started again with the
//! same command continues from the newest complete checkpoint exactly as if it had not been
//! stopped. After each checkpoint the stage folder's export (the diffusers-layout weights
//! `export-shapes` and the evaluations read) is rewritten from it; resuming never reads the
//! export (docs/training.md, "Resuming training").

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use unclip_clip::{
    ClipBatch, ClipConfig, ClipImageProcessor, ClipModel, ClipTextConfig,
    ClipTextModelWithProjection, ClipTrainer, ClipVisionConfig, ClipVisionModelWithProjection,
    Rgb8, l2_normalize,
};
use unclip_decoder::train::{DecoderBatch, DecoderTrainConfig, DecoderTrainer};
use unclip_decoder::{
    TextConditioning, TextProjConfig, UNet2DConditionConfig, UNet2DConditionModel,
    UnCLIPTextProjModel,
};
use unclip_diffusion::{LossWeighting, PredictionType, SchedulerConfig, VarianceType};
use unclip_prior::train::{PriorBatch, PriorTrainer, TrainConfig};
use unclip_prior::{PriorConditioning, PriorTransformer, PriorTransformerConfig};
use unclip_shapes::{
    Attributes, Background, Colour, Dataset, Example, Position, Scene, Shape, Size, Split, caption,
    combinations,
};
use unclip_tokenizer::ClipTokenizer;
use unclip_upsampler::degrade::{BsrConfig, LowResAugmentation};
use unclip_upsampler::train::{SuperResTrainConfig, SuperResTrainer, TrainSchedule};
use unclip_upsampler::{UNet2DConfig, UNet2DModel};

pub type Error = Box<dyn std::error::Error>;

const CLIP_CONFIG: &str = include_str!("../shapes/clip.json");
const PRIOR_CONFIG: &str = include_str!("../shapes/prior.json");
pub const DECODER_CONFIG: &str = include_str!("../shapes/decoder.json");
pub const TEXT_PROJ_CONFIG: &str = include_str!("../shapes/text_proj.json");
const SR1_CONFIG: &str = include_str!("../shapes/super_res_1.json");
const SR2_CONFIG: &str = include_str!("../shapes/super_res_2.json");

/// The base (decoder and CLIP) resolution.
pub const BASE: u32 = 32;

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Stages to run, in order: clip, prior, decoder, sr1, sr2.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "clip,prior,decoder,sr1,sr2"
    )]
    pub stages: Vec<String>,
    /// The run folder (one checkpoint folder per stage).
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    /// The CLIP tokenizer folder (vocab.json + merges.txt; `models/shapes/tokenizer` is CLIP's
    /// BPE with a 24-token context).
    #[arg(long, default_value = "models/shapes/tokenizer")]
    pub tokenizer: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps per stage (the totals; a resumed stage continues up to them).
    #[arg(long, default_value_t = 1600)]
    pub clip_steps: u64,
    #[arg(long, default_value_t = 1200)]
    pub prior_steps: u64,
    #[arg(long, default_value_t = 2600)]
    pub decoder_steps: u64,
    #[arg(long, default_value_t = 1500)]
    pub sr1_steps: u64,
    /// The 32 -> 64 stage's low-resolution augmentation for a fresh run: `blur-noise` (the
    /// committed model's: blur with sigma 0.4-0.8 and, with probability 0.75,
    /// Gaussian noise of sigma 2/255-40/255, for robustness to the decoder's speckle) or `blur`
    /// (DALL-E 2's first upsampler: Gaussian blur, kernel 3, sigma 0.6).
    #[arg(long, default_value = "blur-noise")]
    pub sr1_augmentation: Sr1Augmentation,
    #[arg(long, default_value_t = 1500)]
    pub sr2_steps: u64,
    #[arg(long, default_value_t = 64)]
    pub clip_batch: usize,
    #[arg(long, default_value_t = 64)]
    pub prior_batch: usize,
    #[arg(long, default_value_t = 16)]
    pub decoder_batch: usize,
    #[arg(long, default_value_t = 8)]
    pub sr_batch: usize,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 250)]
    pub save_every: u64,
    /// Decoder: train on timesteps >= this (a high-noise phase; 0 = all).
    #[arg(long, default_value_t = 0)]
    pub decoder_min_timestep: usize,
    /// Decoder: the fraction of each batch drawn from `decoder_min_timestep..T`.
    #[arg(long, default_value_t = 1.0)]
    pub decoder_high_noise_fraction: f64,
    /// Decoder noise schedule of a fresh run: `linear` (DDPM's 1e-4 .. 0.02) or `cosine`
    /// (Karlo's). Under the cosine schedule the 32x32 shapes keep their layout in x_t up to
    /// t ~ 950 and the decoder learned to ignore its conditioning (docs/shapes.md).
    #[arg(long, default_value = "linear")]
    pub decoder_schedule: String,
    /// Decoder: weighting of the simple loss, `uniform` or `snr_plus_one:<max_snr>` (x_0 loss
    /// weighted by 1 + min(SNR, max_snr), as v-prediction weights it; see
    /// `unclip_diffusion::LossWeighting`). Applies from this invocation on.
    #[arg(long, default_value = "uniform")]
    pub decoder_loss_weighting: String,
    /// Decoder: the step the learning-rate schedule (200 warmup steps, cosine decay to
    /// `decoder_steps`) starts from; a resumed run given a later phase start warms up and decays
    /// again over the new steps only (default 0: one schedule over the whole run).
    #[arg(long, default_value_t = 0)]
    pub decoder_lr_phase_start: u64,
    /// Decoder target: `sample` (x_0) or `v_prediction`. A resumed run trained with another
    /// target switches (x_0 -> v starts from the negated x_0 head: v is -x_0 at high noise).
    /// x_0 prediction leaves the identity at low noise to be learned, and the shapes decoder
    /// did not learn it (its x_0 at t = 10 is a blurred copy of x_t); v has it built in.
    #[arg(long, default_value = "sample")]
    pub decoder_prediction: String,
    /// Decoder: the UNet2DConditionModel config.json of a fresh run (default:
    /// `xtask/shapes/decoder.json`); a resumed run keeps its own.
    #[arg(long)]
    pub decoder_config: Option<PathBuf>,
    /// Decoder: the peak learning rate of this invocation's schedule (default: the run's, 6e-4
    /// for a fresh run).
    #[arg(long)]
    pub decoder_learning_rate: Option<f64>,
    /// Decoder: extra weight of the simple loss on the shape's bounding box (grown by one
    /// pixel): pixel weight `1 + w` there, 1 elsewhere, each image normalised by its weights'
    /// sum (`DecoderBatch::pixel_weights`). The box is the same for the three shapes, so the
    /// weight says where the shape is, not which; it spends the loss on the few pixels (2-10%
    /// of the image) that draw the shape instead of on the flat background. 0 (default): the
    /// plain loss. Applies from this invocation on.
    #[arg(long, default_value_t = 0.0)]
    pub decoder_box_weight: f32,
    /// Decoder: draw training timesteps below this only (default: all); trains a low-noise
    /// expert (`unclip_decoder::LowNoiseExpert`, `eval-decoder --expert-run`). Applies from
    /// this invocation on.
    #[arg(long)]
    pub decoder_max_timestep: Option<usize>,
    /// Resumable checkpoints kept per stage (`<stage>/checkpoints/step-*`), newest first.
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Global gradient-norm clipping of a fresh run of every stage (recorded in its config; a
    /// resumed clip, prior or super-resolution run given another value is refused).
    #[arg(long)]
    pub max_grad_norm: Option<f32>,
}

/// A stage's resumable checkpoints: `<stage dir>/checkpoints`.
pub fn stage_store(dir: &Path, keep: usize) -> unclip_nn::CheckpointStore {
    unclip_nn::CheckpointStore::new(dir.join("checkpoints"), keep)
}

/// `[B, 1, side, side]` loss weights: `1 + extra` on each scene's bounding box grown by one
/// pixel, 1 elsewhere (`--decoder-box-weight`).
pub fn box_weights(examples: &[Example], side: u32, extra: f32, device: &Device) -> Tensor<4> {
    let s = side as usize;
    let sf = side as f32;
    let mut v = vec![1.0f32; examples.len() * s * s];
    for (i, e) in examples.iter().enumerate() {
        // The union of the three shapes' boxes at this scene (fractions of the side): the
        // triangle's box sits higher than the square's around the same centroid.
        let (l, t, r, b) = [Shape::Circle, Shape::Square, Shape::Triangle]
            .into_iter()
            .map(|shape| Scene { shape, ..e.scene }.bounding_box())
            .fold((1.0f32, 1.0f32, 0.0f32, 0.0f32), |u, b| {
                (u.0.min(b.0), u.1.min(b.1), u.2.max(b.2), u.3.max(b.3))
            });
        let x0 = ((l * sf).floor() - 1.0).max(0.0) as usize;
        let y0 = ((t * sf).floor() - 1.0).max(0.0) as usize;
        let x1 = ((r * sf).ceil() + 1.0).min(sf) as usize;
        let y1 = ((b * sf).ceil() + 1.0).min(sf) as usize;
        for y in y0..y1 {
            for x in x0..x1 {
                v[i * s * s + y * s + x] += extra;
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [examples.len(), 1, s, s]), device)
}

/// The `--decoder-prediction` value.
fn parse_prediction(text: &str) -> Result<PredictionType, Error> {
    match text {
        "sample" => Ok(PredictionType::Sample),
        "v_prediction" => Ok(PredictionType::VPrediction),
        other => {
            Err(format!("--decoder-prediction {other}: expected `sample` or `v_prediction`").into())
        }
    }
}

/// `unet` with its first `c` output channels (the prediction; the rest are variance values)
/// negated: conv_out's weight rows and bias.
fn negate_prediction_channels(mut unet: UNet2DConditionModel, c: usize) -> UNet2DConditionModel {
    let w = unet.conv_out.weight.val(); // [O, I, k, k]
    let o = w.dims()[0];
    let sign: Vec<f32> = (0..o).map(|i| if i < c { -1.0 } else { 1.0 }).collect();
    let sign = Tensor::<1>::from_floats(sign.as_slice(), &w.device());
    unet.conv_out.weight = Param::from_tensor(w * sign.clone().reshape([o, 1, 1, 1]));
    if let Some(b) = unet.conv_out.bias.take() {
        unet.conv_out.bias = Some(Param::from_tensor(b.val() * sign));
    }
    unet
}

/// The `--decoder-loss-weighting` value.
pub fn parse_loss_weighting(text: &str) -> Result<LossWeighting, Error> {
    if text == "uniform" {
        return Ok(LossWeighting::Uniform);
    }
    if let Some(max) = text.strip_prefix("snr_plus_one:") {
        let max_snr: f32 = max
            .parse()
            .map_err(|e| format!("--decoder-loss-weighting {text}: max_snr: {e}"))?;
        let w = LossWeighting::SnrPlusOne { max_snr };
        w.validate()?;
        return Ok(w);
    }
    Err(
        format!("--decoder-loss-weighting {text}: expected `uniform` or `snr_plus_one:<max_snr>`")
            .into(),
    )
}

/// The device the training and measuring commands run on: burn-flex unless
/// `UNCLIP_XTASK_DEVICE` names another one compiled in ([`unclip_nn::parse_device`]), e.g.
/// `libtorch` (LibTorch's CPU backend, `--features tch`; several times faster training steps
/// than flex on this project's 2-core machine, docs/benchmarks.md) or `libtorch-cuda`.
pub fn compute_device() -> Result<Device, Error> {
    unclip_nn::parse_device(&compute_device_name())
        .map_err(|e| format!("UNCLIP_XTASK_DEVICE: {e}").into())
}

/// The name [`compute_device`] parses (`UNCLIP_XTASK_DEVICE`, else `flex`), for reports.
pub fn compute_device_name() -> String {
    std::env::var("UNCLIP_XTASK_DEVICE").unwrap_or_else(|_| "flex".into())
}

/// The `--decoder-schedule` value.
fn decoder_schedule(name: &str) -> Result<TrainSchedule, Error> {
    match name {
        "linear" => Ok(TrainSchedule::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
        }),
        "cosine" => Ok(TrainSchedule::SquaredcosCapV2),
        other => Err(format!("--decoder-schedule {other}: expected `linear` or `cosine`").into()),
    }
}

/// Examples of step `step` of a stage: a fresh seeded draw from the training split.
pub(crate) fn batch(seed: u64, stage: u64, step: u64, n: usize) -> Vec<Example> {
    let s = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stage << 40)
        .wrapping_add(step);
    Dataset::new(s, Split::Train).sample(n)
}

/// Renders `[B, 3, side, side]` in `[-1, 1]`.
pub fn images_signed(examples: &[Example], side: u32, device: &Device) -> Tensor<4> {
    let s = side as usize;
    let mut v = Vec::with_capacity(examples.len() * 3 * s * s);
    for e in examples {
        v.extend(e.scene.render_planar_signed(side));
    }
    Tensor::from_data(TensorData::new(v, [examples.len(), 3, s, s]), device)
}

/// CLIP pixel values `[B, 3, 32, 32]` of the examples through the image processor (the same
/// path as `UnclipPipeline::encode_images`).
pub fn clip_pixels(
    processor: &ClipImageProcessor,
    examples: &[Example],
    device: &Device,
) -> Result<Tensor<4>, Error> {
    let rgb: Vec<Rgb8> = examples
        .iter()
        .map(|e| {
            let img = e.scene.render(BASE);
            Rgb8 {
                width: img.width() as usize,
                height: img.height() as usize,
                data: img.into_raw(),
            }
        })
        .collect();
    Ok(processor.preprocess_rgb(&rgb, device)?)
}

/// Token ids and mask `[B, 77]` of captions.
pub fn tokens(
    tok: &ClipTokenizer,
    captions: &[String],
    device: &Device,
) -> Result<(Tensor<2, Int>, Tensor<2, Int>), Error> {
    let enc = tok.encode_batch(captions)?;
    let (b, l) = (enc.ids.len(), enc.context_length);
    let ids: Vec<i64> = enc.ids.into_iter().flatten().collect();
    let mask: Vec<i64> = enc.attention_mask.into_iter().flatten().collect();
    Ok((
        Tensor::from_data(TensorData::new(ids, [b, l]), device),
        Tensor::from_data(TensorData::new(mask, [b, l]), device),
    ))
}

/// CLIP text conditioning of captions: `(text_embeds [B, E], last_hidden_state [B, L, E],
/// mask [B, L])`.
pub fn encode_text(
    tok: &ClipTokenizer,
    text: &ClipTextModelWithProjection,
    captions: &[String],
    device: &Device,
) -> Result<(Tensor<2>, Tensor<3>, Tensor<2, Bool>), Error> {
    let (ids, mask) = tokens(tok, captions, device)?;
    // Without the padding mask, as the unCLIP pipelines call the text encoder (the causal mask
    // makes the pooled output and the real tokens' states the same either way).
    let (embeds, out) = text.forward(ids, None);
    Ok((embeds, out.last_hidden_state, mask.equal_elem(1)))
}

fn clip_config() -> ClipConfig {
    serde_json::from_str(CLIP_CONFIG).expect("embedded CLIP config")
}

pub(crate) fn bar(total: u64, done: u64, name: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{name:>8} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}, eta {{eta}})"
        ))
        .expect("template"),
    );
    pb.set_position(done);
    pb
}

/// Appends `step,loss` lines to `dir/losses.csv` and prints every `every` steps.
pub(crate) struct LossLog {
    file: std::fs::File,
    name: &'static str,
    start: Instant,
    window: Vec<f32>,
}

impl LossLog {
    pub(crate) fn open(dir: &Path, name: &'static str) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("losses.csv"))?;
        Ok(LossLog {
            file,
            name,
            start: Instant::now(),
            window: Vec::new(),
        })
    }

    /// The shared loop's progress callback: the loss line, the bar, the step time.
    pub(crate) fn report(
        &mut self,
        r: &unclip_nn::StepReport,
        pb: &ProgressBar,
    ) -> Result<(), Error> {
        pb.set_message(format!(
            "loss {:.4}, {:.2} s/step",
            r.loss,
            r.step_time.as_secs_f64()
        ));
        self.log(r.step, r.loss, pb)
    }

    pub(crate) fn log(&mut self, step: u64, loss: f32, pb: &ProgressBar) -> Result<(), Error> {
        writeln!(self.file, "{step},{loss}")?;
        self.window.push(loss);
        pb.set_position(step);
        if step.is_multiple_of(50) {
            let mean = self.window.iter().sum::<f32>() / self.window.len() as f32;
            println!(
                "{} step {step} loss(mean of last {}) {mean:.5} [{:.0} s]",
                self.name,
                self.window.len(),
                self.start.elapsed().as_secs_f64()
            );
            self.window.clear();
        }
        Ok(())
    }
}

/// Linear warm-up over the first `warmup` steps.
fn warmup_lr(lr: f64, step: u64, warmup: u64) -> f64 {
    lr * ((step + 1) as f64 / warmup as f64).min(1.0)
}

/// Warm-up, then a cosine decay to 5% of `lr` at `total` steps.
pub(crate) fn cosine_lr(lr: f64, step: u64, warmup: u64, total: u64) -> f64 {
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total.max(1) as f64).cos());
    warmup_lr(lr, step, warmup) * (0.05 + 0.95 * cos)
}

pub fn train(args: &TrainArgs) -> Result<(), Error> {
    let tok = ClipTokenizer::from_dir(&args.tokenizer)?;
    for stage in &args.stages {
        let t0 = Instant::now();
        match stage.as_str() {
            "clip" => train_clip(args, &tok)?,
            "prior" => train_prior(args, &tok)?,
            "decoder" => train_decoder(args, &tok)?,
            "sr1" => train_sr(args, 1)?,
            "sr2" => train_sr(args, 2)?,
            other => return Err(format!("unknown stage {other:?}").into()),
        }
        println!("stage {stage} done in {:.0} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ClipState {
    step: u64,
}

const CLIP_LR: f64 = 1e-3;
const CLIP_WEIGHT_DECAY: f32 = 0.1;

fn train_clip(args: &TrainArgs, tok: &ClipTokenizer) -> Result<(), Error> {
    let dir = args.run.join("clip");
    let cfg = clip_config();
    let plain = compute_device()?;
    let device = plain.clone().autodiff();
    let state_path = dir.join("state.json");
    let store = stage_store(&dir, args.keep_checkpoints);
    let lr = CLIP_LR;
    let resumed = ClipTrainer::resume_state(
        &store,
        &cfg,
        lr,
        CLIP_WEIGHT_DECAY,
        args.max_grad_norm,
        &device,
    )?;
    let mut trainer = match resumed {
        Some(t) => t,
        None => {
            let (model, start) = if state_path.is_file() {
                // A run from before resumable checkpoints: its weights, fresh AdamW moments.
                let st: ClipState = unclip_nn::read_json(&state_path)?;
                println!(
                    "clip: continuing an old-format run at step {} (optimizer restarts)",
                    st.step
                );
                (ClipModel::from_pretrained(&dir, &plain)?, st.step)
            } else {
                plain.seed(args.seed);
                (ClipModel::new(&cfg, &plain), 0)
            };
            let mut t = ClipTrainer::new(model.to_device(&device).train(), lr, CLIP_WEIGHT_DECAY)
                .with_model_config(&cfg)
                .with_max_grad_norm(args.max_grad_norm);
            t.steps = start as usize;
            t
        }
    };
    let start = trainer.steps as u64;
    if start >= args.clip_steps {
        println!("clip: already at step {start}");
        return Ok(());
    }
    let processor = ClipImageProcessor::for_size(BASE as usize);
    let pb = bar(args.clip_steps, start, "clip");
    let mut log = LossLog::open(&dir, "clip")?;
    unclip_nn::TrainLoop {
        store: &store,
        total_steps: args.clip_steps,
        save_every: args.save_every,
    }
    .run(
        &mut trainer,
        |step| Some(cosine_lr(lr, step, 100, args.clip_steps)),
        |step| -> Result<ClipBatch, Error> {
            let ex = batch(args.seed, 1, step, args.clip_batch);
            let captions: Vec<String> = ex.iter().map(|e| e.caption.clone()).collect();
            let (ids, mask) = tokens(tok, &captions, &device)?;
            Ok(ClipBatch {
                input_ids: ids,
                attention_mask: Some(mask),
                pixel_values: clip_pixels(&processor, &ex, &device)?,
            })
        },
        |trainer, report| {
            log.report(report, &pb)?;
            if report.saved.is_some() {
                trainer.model().valid().save_pretrained(&cfg, &dir)?;
                unclip_nn::write_json(&state_path, &ClipState { step: report.step })?;
            }
            Ok(())
        },
    )?;
    pb.finish();
    let clip = trainer.into_model().valid();
    let report = clip_zero_shot(&clip, tok, 2, &plain)?;
    println!("{report}");
    std::fs::write(dir.join("zero_shot.md"), &report)?;
    Ok(())
}

/// Loads the trained CLIP towers from the run.
fn load_clip(
    run: &Path,
    device: &Device,
) -> Result<(ClipTextModelWithProjection, ClipVisionModelWithProjection), Error> {
    Ok(ClipModel::from_pretrained(run.join("clip"), device)?.into_towers())
}

/// Held-out test scenes: every held-out combination on both backgrounds, `per` jittered draws
/// each.
pub fn held_out_scenes(per: usize, seed: u64) -> Vec<(Attributes, Scene)> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for a in combinations(Split::HeldOut) {
        for bg in Background::all() {
            for _ in 0..per {
                out.push((a, Scene::random_with_background(a, bg, &mut rng)));
            }
        }
    }
    out
}

/// CLIP zero-shot accuracy per attribute on held-out images: for each attribute, the candidate
/// texts are the canonical caption with that attribute set to each of its values (the others
/// true); "all four" is retrieval among the canonical captions of every combination.
pub fn clip_zero_shot(
    clip: &ClipModel,
    tok: &ClipTokenizer,
    per: usize,
    device: &Device,
) -> Result<String, Error> {
    let scenes = held_out_scenes(per, 99);
    let processor = ClipImageProcessor::for_size(BASE as usize);
    let examples: Vec<Example> = scenes
        .iter()
        .map(|(a, s)| Example {
            scene: s.clone(),
            caption: caption(a, 0),
            template: 0,
        })
        .collect();
    let mut img = Vec::new();
    for chunk in examples.chunks(64) {
        img.push(l2_normalize(
            clip.image_features(clip_pixels(&processor, chunk, device)?),
        ));
    }
    let img = Tensor::cat(img, 0); // [N, E]
    let text_emb = |captions: &[String]| -> Result<Tensor<2>, Error> {
        let mut out = Vec::new();
        for chunk in captions.chunks(64) {
            let (ids, mask) = tokens(tok, chunk, device)?;
            out.push(l2_normalize(clip.text_features(ids, Some(mask))));
        }
        Ok(Tensor::cat(out, 0))
    };
    let n = scenes.len();
    let mut correct = [0usize; 5];
    // Per attribute: candidates vary one attribute.
    type Variants = fn(&Attributes) -> Vec<Attributes>;
    let variants: [(&str, Variants); 4] = [
        ("shape", |a| {
            Shape::all()
                .iter()
                .map(|&s| Attributes { shape: s, ..*a })
                .collect()
        }),
        ("colour", |a| {
            Colour::all()
                .iter()
                .map(|&c| Attributes { colour: c, ..*a })
                .collect()
        }),
        ("size", |a| {
            Size::all()
                .iter()
                .map(|&s| Attributes { size: s, ..*a })
                .collect()
        }),
        ("position", |a| {
            Position::all()
                .iter()
                .map(|&p| Attributes { position: p, ..*a })
                .collect()
        }),
    ];
    for (k, (_, f)) in variants.iter().enumerate() {
        for (i, (a, _)) in scenes.iter().enumerate() {
            let cands = f(a);
            let caps: Vec<String> = cands.iter().map(|c| caption(c, 0)).collect();
            let t = text_emb(&caps)?; // [K, E]
            let logits = img.clone().slice([i..i + 1]).matmul(t.transpose()); // [1, K]
            let best = logits
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .map_err(|e| format!("{e:?}"))?[0] as usize;
            if cands[best] == *a {
                correct[k] += 1;
            }
        }
    }
    let all: Vec<Attributes> = Attributes::all();
    let caps: Vec<String> = all.iter().map(|c| caption(c, 0)).collect();
    let t = text_emb(&caps)?; // [324, E]
    let best = img
        .matmul(t.transpose())
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| format!("{e:?}"))?;
    for (i, (a, _)) in scenes.iter().enumerate() {
        if all[best[i] as usize] == *a {
            correct[4] += 1;
        }
    }
    let pct = |c: usize| 100.0 * c as f64 / n as f64;
    Ok(format!(
        "CLIP zero-shot on {n} held-out images ({} held-out combinations x 2 backgrounds x {per}):\n\
         | shape | colour | size | position | all four (retrieval among {} captions) |\n\
         |---|---|---|---|---|\n\
         | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1}% |\n",
        combinations(Split::HeldOut).len(),
        all.len(),
        pct(correct[0]),
        pct(correct[1]),
        pct(correct[2]),
        pct(correct[3]),
        pct(correct[4])
    ))
}

/// `(text conditioning, image embeddings)` of a batch through the frozen CLIP.
#[allow(clippy::type_complexity)]
fn clip_batch(
    tok: &ClipTokenizer,
    text: &ClipTextModelWithProjection,
    vision: &ClipVisionModelWithProjection,
    processor: &ClipImageProcessor,
    ex: &[Example],
    device: &Device,
) -> Result<((Tensor<2>, Tensor<3>, Tensor<2, Bool>), Tensor<2>), Error> {
    let captions: Vec<String> = ex.iter().map(|e| e.caption.clone()).collect();
    let t = encode_text(tok, text, &captions, device)?;
    let (img, _) = vision.forward(clip_pixels(processor, ex, device)?);
    Ok((t, img))
}

fn train_prior(args: &TrainArgs, tok: &ClipTokenizer) -> Result<(), Error> {
    let dir = args.run.join("prior");
    let plain = compute_device()?;
    let device = plain.clone().autodiff();
    let (text, vision) = load_clip(&args.run, &plain)?;
    let processor = ClipImageProcessor::for_size(BASE as usize);
    let (ue, uh, um) = encode_text(tok, &text, &[String::new()], &plain)?;
    let uncond = PriorConditioning {
        proj_embedding: ue,
        encoder_hidden_states: Some(uh),
        attention_mask: Some(um),
    };
    let store = stage_store(&dir, args.keep_checkpoints);
    let expected = prior_train_config(args);
    let resumed = PriorTrainer::resume_state(&store, uncond.clone(), Some(&expected), &device)?;
    let mut trainer = if let Some(t) = resumed {
        t
    } else if dir.join("trainer_state.json").is_file() {
        println!("prior: continuing an old-format run (optimizer and noise stream restart)");
        PriorTrainer::resume(&dir, uncond, &device)?
    } else {
        let cfg: PriorTransformerConfig = serde_json::from_str(PRIOR_CONFIG)?;
        plain.seed(args.seed + 2);
        let mut model = PriorTransformer::new(&cfg, &plain)?;
        // clip_mean / clip_std: statistics of the training images' CLIP embeddings.
        let mut embs = Vec::new();
        for i in 0..32 {
            let ex = batch(args.seed, 100, i, 64);
            embs.push(vision.forward(clip_pixels(&processor, &ex, &plain)?).0);
        }
        let embs = Tensor::cat(embs, 0); // [2048, E]
        let mean = embs.clone().mean_dim(0); // [1, E]
        let std = (embs - mean.clone()).powi_scalar(2).mean_dim(0).sqrt(); // [1, E]
        model.clip_mean = Param::from_tensor(mean);
        model.clip_std = Param::from_tensor(std);
        PriorTrainer::new(model, uncond, expected, &device)?
    };
    let base_lr = trainer.config.learning_rate;
    let start = trainer.step;
    let pb = bar(args.prior_steps, start, "prior");
    let mut log = LossLog::open(&dir, "prior")?;
    unclip_nn::TrainLoop {
        store: &store,
        total_steps: args.prior_steps,
        save_every: args.save_every,
    }
    .run(
        &mut trainer,
        |step| Some(cosine_lr(base_lr, step, 100, args.prior_steps)),
        |step| -> Result<PriorBatch, Error> {
            let ex = batch(args.seed, 2, step, args.prior_batch);
            let ((e, h, m), img) = clip_batch(tok, &text, &vision, &processor, &ex, &plain)?;
            Ok(PriorBatch {
                image_embeddings: img,
                cond: PriorConditioning {
                    proj_embedding: e,
                    encoder_hidden_states: Some(h),
                    attention_mask: Some(m),
                },
            })
        },
        |trainer, report| {
            log.report(report, &pb)?;
            if report.saved.is_some() {
                trainer.save_checkpoint(&dir)?;
            }
            Ok(())
        },
    )?;
    pb.finish();
    Ok(())
}

/// The prior's training settings for a run of `args`.
pub fn prior_train_config(args: &TrainArgs) -> TrainConfig {
    TrainConfig {
        learning_rate: 3e-4,
        ema_decay: Some(0.995),
        cond_drop_prob: 0.1,
        num_train_timesteps: 1000,
        seed: args.seed + 3,
        max_grad_norm: args.max_grad_norm,
    }
}

fn train_decoder(args: &TrainArgs, tok: &ClipTokenizer) -> Result<(), Error> {
    let dir = args.run.join("decoder");
    let plain = compute_device()?;
    let device = plain.clone().autodiff();
    let (text, vision) = load_clip(&args.run, &plain)?;
    let processor = ClipImageProcessor::for_size(BASE as usize);
    let uncond = empty_prompt(tok, &text, &plain)?;
    let wanted = parse_prediction(&args.decoder_prediction)?;
    let store = stage_store(&dir, args.keep_checkpoints);
    // The decoder's flags below apply from each invocation on, so its saved config is not
    // compared with them (`None`).
    let resumed = DecoderTrainer::resume_state(&store, uncond.clone(), None, &device)?;
    let legacy = resumed.is_none() && dir.join("trainer_state.json").is_file();
    if legacy {
        println!("decoder: continuing an old-format run (optimizer and noise stream restart)");
    }
    let mut trainer = if resumed.is_some() || legacy {
        let t = match resumed {
            Some(t) => t,
            None => DecoderTrainer::resume(&dir, uncond.clone(), &device)?,
        };
        let from = t.config.prediction_type;
        if from != wanted {
            // Continue from the run's weights with another target (fresh optimizer and EMA):
            // eps -> x_0 (the committed model's first 1000 steps were eps), or x_0 -> v.
            println!(
                "decoder: switching the run from {from:?} to {wanted:?} prediction at step {}",
                t.step
            );
            let step = t.step;
            let config = DecoderTrainConfig {
                prediction_type: wanted,
                ..t.config.clone()
            };
            let models = t.models.valid();
            let unet = if (from, wanted) == (PredictionType::Sample, PredictionType::VPrediction) {
                // v = (sqrt(a) x_t - x_0) / sqrt(1 - a) is -x_0 at high noise: start from the
                // x_0 head negated, so only the low-noise end has to be learned anew.
                let c = models.unet.in_channels();
                negate_prediction_channels(models.unet, c)
            } else {
                models.unet
            };
            let mut t = DecoderTrainer::new(models.text_proj, unet, uncond, config, &device)?;
            t.step = step;
            t
        } else {
            t
        }
    } else {
        let ucfg: UNet2DConditionConfig = match &args.decoder_config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("--decoder-config {}: {e}", p.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("--decoder-config {}: {e}", p.display()))?
            }
            None => serde_json::from_str(DECODER_CONFIG)?,
        };
        let tcfg: TextProjConfig = serde_json::from_str(TEXT_PROJ_CONFIG)?;
        plain.seed(args.seed + 4);
        let unet = UNet2DConditionModel::new(&ucfg, &plain)?;
        let text_proj = UnCLIPTextProjModel::new(&tcfg, &plain);
        let config = DecoderTrainConfig {
            learning_rate: 6e-4,
            ema_decay: Some(0.995),
            prediction_type: wanted,
            schedule: decoder_schedule(&args.decoder_schedule)?,
            seed: args.seed + 5,
            max_grad_norm: args.max_grad_norm,
            ..DecoderTrainConfig::default()
        };
        DecoderTrainer::new(text_proj, unet, uncond, config, &device)?
    };
    trainer.config.min_timestep = args.decoder_min_timestep;
    trainer.config.high_noise_fraction = args.decoder_high_noise_fraction;
    trainer.config.max_timestep = args.decoder_max_timestep;
    trainer.config.loss_weighting = parse_loss_weighting(&args.decoder_loss_weighting)?;
    if let Some(lr) = args.decoder_learning_rate {
        trainer.config.learning_rate = lr;
    }
    let box_weight = args.decoder_box_weight;
    if !(box_weight.is_finite() && box_weight >= 0.0) {
        return Err(format!("--decoder-box-weight {box_weight}: expected a number >= 0").into());
    }
    // The run's resolution is its UNet config's `sample_size` (32 for fresh runs; a run copied
    // from a 32x32 one with `sample_size` edited continues at that size: the UNet is
    // convolutional and its attention is over tokens, so the weights carry over).
    let side = decoder_side(&trainer.models.unet.config)?;
    let phase = args.decoder_lr_phase_start.min(args.decoder_steps);
    let base_lr = trainer.config.learning_rate;
    let start = trainer.step;
    let pb = bar(args.decoder_steps, start, "decoder");
    let mut log = LossLog::open(&dir, "decoder")?;
    unclip_nn::TrainLoop {
        store: &store,
        total_steps: args.decoder_steps,
        save_every: args.save_every,
    }
    .run(
        &mut trainer,
        |step| {
            Some(cosine_lr(
                base_lr,
                step.saturating_sub(phase),
                200,
                args.decoder_steps - phase,
            ))
        },
        |step| -> Result<DecoderBatch, Error> {
            let ex = batch(args.seed, 3, step, args.decoder_batch);
            let ((e, h, m), img) = clip_batch(tok, &text, &vision, &processor, &ex, &plain)?;
            Ok(DecoderBatch {
                images: images_signed(&ex, side, &plain),
                image_embeddings: img,
                text: TextConditioning {
                    prompt_embeds: e,
                    hidden_states: h,
                    mask: m,
                },
                pixel_weights: (box_weight > 0.0)
                    .then(|| box_weights(&ex, side, box_weight, &plain)),
            })
        },
        |trainer, report| {
            log.report(report, &pb)?;
            if report.saved.is_some() {
                trainer.save_checkpoint(&dir)?;
            }
            Ok(())
        },
    )?;
    pb.finish();
    Ok(())
}

/// The side of a shapes decoder: its config's square `sample_size` (the CLIP conditioning stays
/// at [`BASE`] whatever the decoder draws).
pub fn decoder_side(config: &UNet2DConditionConfig) -> Result<u32, Error> {
    match config.sample_size.map(|s| s.hw()) {
        Some([h, w]) if h == w && h % 4 == 0 && h > 0 => Ok(h as u32),
        other => Err(format!(
            "the shapes decoder needs a square sample_size divisible by 4, its config has {other:?}"
        )
        .into()),
    }
}

/// The first super-resolution stage's low-resolution augmentation (`--sr1-augmentation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sr1Augmentation {
    /// DALL-E 2's: Gaussian blur, kernel 3, sigma 0.6.
    Blur,
    /// Blur (sigma 0.4-0.8) and Gaussian noise (sigma 2/255-40/255, probability 0.75).
    BlurNoise,
}

impl Sr1Augmentation {
    /// The augmentation it names.
    pub fn augmentation(self) -> LowResAugmentation {
        match self {
            Sr1Augmentation::Blur => LowResAugmentation::blur_64_to_256(),
            // BSR's noise (probability 0.75) after an isotropic blur; no downscale, no JPEG.
            Sr1Augmentation::BlurNoise => LowResAugmentation::Bsr(BsrConfig {
                blur_prob: 1.0,
                blur_kernel_size: 3,
                blur_sigma: [0.4, 0.8],
                anisotropic_prob: 0.0,
                downscale_prob: 0.0,
                noise_sigma: [2.0 / 255.0, 40.0 / 255.0],
                jpeg_prob: 0.0,
                shuffle: false,
                ..BsrConfig::default()
            }),
        }
    }
}

/// The super-resolution stage `k` (1: 32 -> 64, 2: 64 -> 128).
pub fn sr_train_config(k: usize, seed: u64) -> SuperResTrainConfig {
    let base = SuperResTrainConfig {
        learning_rate: 1e-3,
        weight_decay: 0.0,
        ema_decay: Some(0.995),
        num_train_timesteps: 1000,
        scale_factor: 2,
        crop_size: None,
        // x_0 prediction: sampled in few steps from t = 999 (see the field's docs).
        prediction_type: PredictionType::Sample,
        seed: seed + 10 + k as u64,
        ..SuperResTrainConfig::stage_64_to_256()
    };
    if k == 1 {
        base
    } else {
        SuperResTrainConfig {
            schedule: TrainSchedule::Linear {
                beta_start: 1e-4,
                beta_end: 0.02,
            },
            augmentation: LowResAugmentation::bsr_256_to_1024(),
            ..base
        }
    }
}

fn train_sr(args: &TrainArgs, k: usize) -> Result<(), Error> {
    let name = if k == 1 { "sr1" } else { "sr2" };
    let dir = args.run.join(name);
    let plain = compute_device()?;
    let device = plain.clone().autodiff();
    let side = BASE << k; // 64 or 128
    let steps = if k == 1 {
        args.sr1_steps
    } else {
        args.sr2_steps
    };
    let store = stage_store(&dir, args.keep_checkpoints);
    let expected = SuperResTrainConfig {
        max_grad_norm: args.max_grad_norm,
        ..if k == 1 {
            SuperResTrainConfig {
                augmentation: args.sr1_augmentation.augmentation(),
                ..sr_train_config(k, args.seed)
            }
        } else {
            sr_train_config(k, args.seed)
        }
    };
    let resumed = SuperResTrainer::resume_state(&store, Some(&expected), &device)?;
    let mut trainer = if let Some(t) = resumed {
        t
    } else if dir.join("trainer_state.json").is_file() {
        println!("{name}: continuing an old-format run (optimizer and noise stream restart)");
        SuperResTrainer::resume(&dir, &device)?
    } else {
        let cfg: UNet2DConfig = serde_json::from_str(if k == 1 { SR1_CONFIG } else { SR2_CONFIG })?;
        plain.seed(args.seed + 6 + k as u64);
        SuperResTrainer::new(UNet2DModel::new(&cfg, &plain)?, expected, &device)?
    };
    let base_lr = trainer.config.learning_rate;
    let start = trainer.step;
    let pb = bar(steps, start, name);
    let mut log = LossLog::open(&dir, if k == 1 { "sr1" } else { "sr2" })?;
    unclip_nn::TrainLoop {
        store: &store,
        total_steps: steps,
        save_every: args.save_every,
    }
    .run(
        &mut trainer,
        |step| Some(warmup_lr(base_lr, step, 100)),
        |step| -> Result<Tensor<4>, Error> {
            let ex = batch(args.seed, 3 + k as u64, step, args.sr_batch);
            Ok(images_signed(&ex, side, &plain))
        },
        |trainer, report| {
            log.report(report, &pb)?;
            if report.saved.is_some() {
                trainer.save_checkpoint(&dir)?;
            }
            Ok(())
        },
    )?;
    pb.finish();
    Ok(())
}

/// A decoder run's sampling scheduler: its training schedule with Karlo's clipped x_0.
pub fn decoder_scheduler(train: &DecoderTrainConfig) -> SchedulerConfig {
    SchedulerConfig {
        clip_sample: true,
        clip_sample_range: 1.0,
        ..DecoderTrainer::scheduler_config(train)
    }
}

/// A super-resolution run's sampling scheduler: its training schedule with clipped x_0.
pub fn super_res_scheduler(train: &SuperResTrainConfig) -> SchedulerConfig {
    SchedulerConfig {
        clip_sample: true,
        clip_sample_range: 1.0,
        ..SuperResTrainer::scheduler_config(train)
    }
}

/// The scheduler configs written with the exported model, derived from what each stage of the
/// run was trained with (its `trainer_state.json`), with Karlo's sampling settings (clipped
/// x_0; the prior clips at 5 in its normalised space).
///
/// `decoder_variance` replaces the decoder's trained variance type: `fixed_small_log` samples a
/// learned-variance decoder with the posterior variance (its variance channels are ignored).
///
/// `super_res`: the run's super-resolution stages in pipeline order ([`super_res_chain`]).
pub fn scheduler_configs(
    run: &Path,
    decoder_variance: VarianceType,
    super_res: &[&str],
) -> Result<Vec<(&'static str, SchedulerConfig)>, Error> {
    // A stage imported from an exported folder (`import-shapes`) has no trainer state: its
    // scheduler config was copied beside its weights and is used as it is.
    let imported = |stage: &str| -> Result<Option<SchedulerConfig>, Error> {
        let dir = run.join(stage);
        if dir.join("trainer_state.json").is_file() {
            return Ok(None);
        }
        let path = dir.join(IMPORTED_SCHEDULER);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: neither trainer_state.json nor {IMPORTED_SCHEDULER} ({e})",
                dir.display()
            )
        })?;
        Ok(Some(SchedulerConfig::from_json_str(&text)?))
    };
    let prior = match imported("prior")? {
        Some(c) => c,
        None => {
            let st: unclip_prior::train::TrainerState =
                unclip_nn::read_json(run.join("prior").join("trainer_state.json"))?;
            SchedulerConfig {
                clip_sample: true,
                clip_sample_range: 5.0,
                variance_type: VarianceType::FixedSmallLog,
                ..PriorTrainer::scheduler_config(&st.train)
            }
        }
    };
    let decoder: unclip_decoder::train::DecoderTrainerState =
        unclip_nn::read_json(run.join("decoder").join("trainer_state.json"))?;
    let sr = |name: &str| -> Result<SchedulerConfig, Error> {
        if let Some(c) = imported(name)? {
            return Ok(c);
        }
        let st: unclip_upsampler::train::SuperResTrainerState =
            unclip_nn::read_json(run.join(name).join("trainer_state.json"))?;
        Ok(super_res_scheduler(&st.train))
    };
    Ok([
        ("prior_scheduler", prior),
        (
            "decoder_scheduler",
            SchedulerConfig {
                variance_type: decoder_variance,
                ..decoder_scheduler(&decoder.train)
            },
        ),
    ]
    .into_iter()
    .chain(
        super_res
            .iter()
            .zip(["super_res_scheduler", "super_res_2_scheduler"])
            .map(|(stage, name)| Ok((name, sr(stage)?)))
            .collect::<Result<Vec<_>, Error>>()?,
    )
    .collect())
}

/// The run's super-resolution stages that follow a decoder of side `side`, in pipeline order
/// (`super_res_first`, then `super_res_2`): a 32x32 decoder takes both (32 -> 64 -> 128), a
/// 64x64 one only the 64 -> 128 stage. The output is 128x128 either way.
pub fn super_res_chain(side: u32) -> Result<&'static [&'static str], Error> {
    match side {
        s if s == BASE => Ok(&["sr1", "sr2"]),
        s if s == 2 * BASE => Ok(&["sr2"]),
        other => Err(format!(
            "no super-resolution chain to 128 for a {other}x{other} decoder (32 or 64)"
        )
        .into()),
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The run folder written by `train-shapes`.
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    /// The CLIP tokenizer folder the run was trained with (copied into the model).
    #[arg(long, default_value = "models/shapes/tokenizer")]
    pub tokenizer: PathBuf,
    /// Where to write the diffusers folder.
    #[arg(long, default_value = "models/shapes")]
    pub out: PathBuf,
    /// Recommended decoder steps, written to `unclip_settings.json`. The background (black or
    /// white) is not in CLIP's embedding, so the decoder must pick it from x_t's faint global
    /// mean; with 25 steps it stays undecided (grey), with ~250 it commits (docs/shapes.md).
    #[arg(long, default_value_t = 250)]
    pub decoder_steps: usize,
    /// Recommended decoder guidance scale, written to `unclip_settings.json`.
    #[arg(long, default_value_t = 3.0)]
    pub decoder_guidance: f32,
    /// The decoder scheduler's variance: `fixed_small_log` (the posterior variance; the UNet's
    /// learned variance channels are ignored) or `learned_range` (as trained). On the shapes
    /// decoder the posterior variance samples clean backgrounds and the learned one speckles
    /// them (docs/shapes.md).
    #[arg(long, default_value = "fixed_small_log", value_parser = parse_variance)]
    pub decoder_variance: VarianceType,
    /// Recommended decoder sampler, written to `unclip_settings.json`: `ancestral`, `ddim` or
    /// `ddim:<eta>`.
    #[arg(long, default_value = "ancestral")]
    pub decoder_sampler: unclip::Sampler,
    /// Recommended decoder candidates per image (reranked by CLIP), written to
    /// `unclip_settings.json`.
    #[arg(long, default_value_t = 1)]
    pub decoder_candidates: usize,
    /// Recommended prior guidance scale, written to `unclip_settings.json`. `eval-prior`: 1-2
    /// keep the prior's samples on the image-embedding manifold, Karlo's 4 already pushes them
    /// off it (docs/shapes.md).
    #[arg(long, default_value_t = 2.0)]
    pub prior_guidance: f32,
}

/// `fixed_small_log` | `learned_range`, as diffusers' scheduler configs spell them.
pub fn parse_variance(s: &str) -> Result<VarianceType, String> {
    match s {
        "fixed_small_log" => Ok(VarianceType::FixedSmallLog),
        "learned_range" => Ok(VarianceType::LearnedRange),
        other => Err(format!(
            "{other}: expected `fixed_small_log` or `learned_range`"
        )),
    }
}

fn copy_files(from: &Path, to: &Path, names: &[&str]) -> Result<(), Error> {
    std::fs::create_dir_all(to)?;
    for n in names {
        std::fs::copy(from.join(n), to.join(n))
            .map_err(|e| format!("copying {}: {e}", from.join(n).display()))?;
    }
    Ok(())
}

/// Assembles the trained stages into one diffusers folder.
pub fn export(args: &ExportArgs) -> Result<(), Error> {
    let out = &args.out;
    let plain = compute_device()?;
    std::fs::create_dir_all(out)?;
    let cfg = clip_config();
    let (text, vision) = load_clip(&args.run, &plain)?;
    text.save_pretrained(&cfg.text(), out.join("text_encoder"))?;
    vision.save_pretrained(&cfg.vision(), out.join("image_encoder"))?;
    let tok_files: Vec<&str> = [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]
    .into_iter()
    .filter(|n| args.tokenizer.join(n).is_file())
    .collect();
    if args.tokenizer.canonicalize()? != out.join("tokenizer").canonicalize().unwrap_or_default() {
        copy_files(&args.tokenizer, &out.join("tokenizer"), &tok_files)?;
    }
    unclip_nn::write_json(
        out.join("feature_extractor")
            .join("preprocessor_config.json"),
        &serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true, "size": {"shortest_edge": BASE}, "resample": 3,
            "do_center_crop": true, "crop_size": {"height": BASE, "width": BASE},
            "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711]
        }),
    )?;
    let weights = ["config.json", "diffusion_pytorch_model.safetensors"];
    copy_files(&args.run.join("prior"), &out.join("prior"), &weights)?;
    copy_files(
        &args.run.join("decoder/decoder"),
        &out.join("decoder"),
        &weights,
    )?;
    copy_files(
        &args.run.join("decoder/text_proj"),
        &out.join("text_proj"),
        &weights,
    )?;
    let chain = super_res_chain(decoder_side(&unclip_nn::read_json(
        args.run.join("decoder/decoder/config.json"),
    )?)?)?;
    for (stage, folder) in chain.iter().zip(["super_res_first", "super_res_2"]) {
        copy_files(&args.run.join(stage), &out.join(folder), &weights)?;
    }
    if chain.len() < 2 {
        // A re-export over a 32x32 model's folder must not leave its second stage behind.
        for stale in ["super_res_2", "super_res_2_scheduler"] {
            if out.join(stale).is_dir() {
                std::fs::remove_dir_all(out.join(stale))?;
            }
        }
    }
    for (name, sc) in scheduler_configs(&args.run, args.decoder_variance, chain)? {
        let mut v = serde_json::to_value(&sc)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("_class_name".into(), "UnCLIPScheduler".into());
        }
        unclip_nn::write_json(out.join(name).join("scheduler_config.json"), &v)?;
    }
    let mut index = serde_json::json!({
        "_class_name": "UnCLIPPipeline",
        "_unclip_note": "trained by `cargo run -p xtask -- train-shapes` on the unclip-shapes world",
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "prior": ["diffusers", "PriorTransformer"],
        "prior_scheduler": ["diffusers", "UnCLIPScheduler"],
        "text_proj": ["unclip", "UnCLIPTextProjModel"],
        "decoder": ["diffusers", "UNet2DConditionModel"],
        "decoder_scheduler": ["diffusers", "UnCLIPScheduler"],
        "super_res_first": ["diffusers", "UNet2DModel"],
        "super_res_scheduler": ["diffusers", "UnCLIPScheduler"],
        "super_res_2": ["unclip", "UNet2DModel"],
        "super_res_2_scheduler": ["diffusers", "UnCLIPScheduler"]
    });
    if chain.len() < 2
        && let Some(m) = index.as_object_mut()
    {
        m.remove("super_res_2");
        m.remove("super_res_2_scheduler");
    }
    unclip_nn::write_json(out.join("model_index.json"), &index)?;
    let settings = unclip::Settings {
        decoder_steps: args.decoder_steps,
        decoder_guidance_scale: args.decoder_guidance,
        decoder_sampler: args.decoder_sampler,
        decoder_candidates: args.decoder_candidates,
        prior_guidance_scale: args.prior_guidance,
        ..unclip::Settings::default()
    };
    unclip_nn::write_json(out.join(unclip::SETTINGS_FILE), &settings)?;
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;
    use rand::SeedableRng;

    /// `dump-decoder-stream` writes the batches `train-shapes` draws for the decoder, with the
    /// run's CLIP conditioning: names, shapes and values of the second batch checked against
    /// the same draw made here.
    #[test]
    fn the_dumped_stream_is_the_decoders_training_stream() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = root.join("models/shapes");
        let tmp = std::env::temp_dir().join(format!("unclip-dump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        import(&ImportArgs {
            model: model.clone(),
            run: tmp.join("run"),
            decoder_step: 1,
            decoder_side: None,
            decoder_learning_rate: 1e-4,
            decoder_checkpoint: None,
        })
        .expect("import");
        let args = DumpArgs {
            run: tmp.join("run"),
            tokenizer: model.join("tokenizer"),
            out: tmp.join("stream.safetensors"),
            steps: 2,
            start: 5,
            batch: 3,
            side: 16,
            seed: 9,
            held_out: false,
        };
        dump_decoder_stream(&args).expect("dump");
        let bytes = std::fs::read(&args.out).expect("read");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let get = |name: &str| -> (Vec<usize>, Vec<f32>) {
            let t = st.tensor(name).expect(name);
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (t.shape().to_vec(), v)
        };
        let device = Device::flex();
        let tok = ClipTokenizer::from_dir(model.join("tokenizer")).expect("tokenizer");
        let (text, vision) = load_clip(&args.run, &device).expect("clip");
        let processor = ClipImageProcessor::for_size(BASE as usize);
        let ex = batch(9, 3, 6, 3); // the second batch: step start + 1
        let ((e, h, m), img) =
            clip_batch(&tok, &text, &vision, &processor, &ex, &device).expect("clip batch");
        let l = h.dims()[1];
        let want: [(&str, Vec<usize>, Vec<f32>); 5] = [
            (
                "images",
                vec![3, 3, 16, 16],
                images_signed(&ex, 16, &device)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            ),
            (
                "image_embeds",
                vec![3, 64],
                img.into_data().try_to_vec::<f32>().unwrap(),
            ),
            (
                "prompt_embeds",
                vec![3, 64],
                e.into_data().try_to_vec::<f32>().unwrap(),
            ),
            (
                "hidden_states",
                vec![3, l, 64],
                h.into_data().try_to_vec::<f32>().unwrap(),
            ),
            (
                "mask",
                vec![3, l],
                m.float().into_data().try_to_vec::<f32>().unwrap(),
            ),
        ];
        for (name, dims, values) in want {
            let (shape, got) = get(name);
            let mut full = dims.clone();
            full[0] = 6;
            assert_eq!(shape, full, "{name}");
            let half = got.len() / 2;
            assert_eq!(&got[half..], &values[..], "{name}: the second batch");
            assert_ne!(
                &got[..half],
                &values[..],
                "{name}: the first batch is another draw"
            );
        }
        assert_eq!(get("uncond_hidden_states").0, vec![1, l, 64]);
        assert!(
            get("uncond_mask").1.contains(&0.0),
            "the empty prompt is padded"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// `import-shapes` then `export-shapes` gives back the committed folder's weights and
    /// scheduler configs byte for byte (the CLIP towers pass through the rebuilt `CLIPModel`),
    /// the imported decoder run resumes at its step with the folder's weights (and a decoder
    /// checkpoint imported from it at its own step), and importing twice into one run is
    /// refused.
    #[test]
    fn an_imported_model_resumes_and_exports_unchanged() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = root.join("models/shapes");
        let tmp = std::env::temp_dir().join(format!("unclip-import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let args = ImportArgs {
            model: model.clone(),
            run: tmp.join("run"),
            decoder_step: 777,
            decoder_side: None,
            decoder_learning_rate: 1e-4,
            decoder_checkpoint: None,
        };
        import(&args).expect("import");
        // A run in progress carried over: its decoder checkpoint continues at its own step.
        import(&ImportArgs {
            run: tmp.join("run2"),
            decoder_step: 1,
            decoder_checkpoint: Some(tmp.join("run/decoder")),
            ..args.clone()
        })
        .expect("import a decoder checkpoint");
        let carried: unclip_decoder::train::DecoderTrainerState =
            unclip_nn::read_json(tmp.join("run2/decoder/trainer_state.json")).expect("state");
        assert_eq!(carried.step, 777);
        assert!(import(&args).is_err(), "a second import into the same run");
        export(&ExportArgs {
            run: tmp.join("run"),
            tokenizer: model.join("tokenizer"),
            out: tmp.join("out"),
            decoder_steps: 250,
            decoder_guidance: 3.0,
            decoder_variance: VarianceType::FixedSmallLog,
            decoder_sampler: unclip::Sampler::Ancestral,
            decoder_candidates: 1,
            prior_guidance: 2.0,
        })
        .expect("export");
        let mut compared = 0;
        for dir in std::fs::read_dir(&model).expect("model folder") {
            let dir = dir.expect("entry").path();
            if !dir.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&dir).expect("component") {
                let f = f.expect("file").path();
                let rel = f.strip_prefix(&model).expect("prefix");
                let a = std::fs::read(&f).expect("committed file");
                let b = std::fs::read(tmp.join("out").join(rel))
                    .unwrap_or_else(|e| panic!("{} not exported: {e}", rel.display()));
                assert!(a == b, "{} differs after import + export", rel.display());
                compared += 1;
            }
        }
        assert!(compared >= 20, "only {compared} files compared");
        let plain = Device::flex();
        let state: unclip_decoder::train::DecoderTrainerState =
            unclip_nn::read_json(tmp.join("run/decoder/trainer_state.json")).expect("state");
        assert_eq!(state.step, 777);
        assert_eq!(state.train.learning_rate, 1e-4);
        let online =
            UNet2DConditionModel::from_pretrained(tmp.join("run/decoder/online/decoder"), &plain)
                .expect("online weights");
        let committed = UNet2DConditionModel::from_pretrained(model.join("decoder"), &plain)
            .expect("committed weights");
        let w = |m: &UNet2DConditionModel| {
            m.conv_out
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32")
        };
        assert_eq!(w(&online), w(&committed));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// A decoder's side comes from its config; the super-resolution chain after it always ends
    /// at 128 (32 -> 64 -> 128, or 64 -> 128), and other sides are refused.
    #[test]
    fn decoder_side_selects_the_super_resolution_chain() {
        let mut config: UNet2DConditionConfig =
            serde_json::from_str(DECODER_CONFIG).expect("embedded decoder config");
        assert_eq!(decoder_side(&config).expect("32"), BASE);
        assert_eq!(super_res_chain(BASE).expect("chain"), ["sr1", "sr2"]);
        config.sample_size = Some(unclip_decoder::config::SampleSize::Square(64));
        assert_eq!(decoder_side(&config).expect("64"), 64);
        assert_eq!(super_res_chain(64).expect("chain"), ["sr2"]);
        // Each chain doubles the side up to 128 (sr1: 32 -> 64, sr2: 64 -> 128).
        for side in [32u32, 64] {
            let n = super_res_chain(side).expect("chain").len() as u32;
            assert_eq!(side << n, 128);
        }
        assert!(super_res_chain(48).is_err());
        config.sample_size = Some(unclip_decoder::config::SampleSize::Rect([32, 64]));
        assert!(decoder_side(&config).is_err());
        config.sample_size = None;
        assert!(decoder_side(&config).is_err());
    }

    #[test]
    fn sr1_augmentations_are_valid_and_only_blur_noise_adds_noise() {
        let device = Device::flex();
        // A flat grey image: a blur leaves it flat, noise does not.
        let x = Tensor::<4>::zeros([8, 3, 16, 16], &device);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let spread = |a: Sr1Augmentation, rng: &mut rand::rngs::StdRng| -> f32 {
            let aug = a.augmentation();
            aug.validate().expect("valid augmentation");
            let y = aug.apply(x.clone(), rng).expect("apply");
            assert_eq!(y.dims(), [8, 3, 16, 16]);
            y.powi_scalar(2).mean().sqrt().into_scalar::<f32>()
        };
        assert!(spread(Sr1Augmentation::Blur, &mut rng) < 1e-6);
        // 8 images, noise with probability 0.75 and sigma >= 2/255 (in [0, 1]; x2 in [-1, 1]).
        let rms = spread(Sr1Augmentation::BlurNoise, &mut rng);
        assert!(rms > 2.0 / 255.0, "blur-noise rms {rms}");
        assert!(rms < 2.0 * 40.0 / 255.0 * 2.0, "blur-noise rms {rms}");
    }

    /// The box weights cover every pixel the shape touches (and its one-pixel ring), are the
    /// same for the three shapes of one scene (the union of their boxes), and are 1 elsewhere.
    #[test]
    fn box_weights_cover_the_shape_and_ignore_which_shape() {
        let device = Device::flex();
        let side = 32u32;
        let s = side as usize;
        let mut ds = Dataset::new(3, Split::Train);
        let mut examples: Vec<Example> = Vec::new();
        for base in ds.sample(12) {
            for shape in [Shape::Circle, Shape::Square, Shape::Triangle] {
                let mut e = base.clone();
                e.scene.shape = shape;
                examples.push(e);
            }
        }
        let w = box_weights(&examples, side, 4.0, &device);
        assert_eq!(w.dims(), [examples.len(), 1, s, s]);
        let v = w.into_data().try_to_vec::<f32>().expect("f32");
        for (i, e) in examples.iter().enumerate() {
            let map = &v[i * s * s..(i + 1) * s * s];
            assert!(map.iter().all(|&x| x == 1.0 || x == 5.0));
            // Every pixel that differs from the background is weighted, and so are its
            // 4-neighbours.
            let img = e.scene.render(side);
            let bg = e.scene.background.rgb();
            let mut weighted = 0;
            for (k, px) in img.pixels().enumerate() {
                if px.0 != bg {
                    let (x, y) = (k % s, k / s);
                    assert_eq!(map[k], 5.0, "image {i} pixel ({x}, {y})");
                    for (dx, dy) in [(-1i32, 0i32), (1, 0), (0, -1), (0, 1)] {
                        let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                        if (0..s as i32).contains(&nx) && (0..s as i32).contains(&ny) {
                            assert_eq!(map[ny as usize * s + nx as usize], 5.0);
                        }
                    }
                }
                weighted += (map[k] == 5.0) as usize;
            }
            // The box is a small part of the image.
            assert!(
                weighted < s * s / 2,
                "image {i}: {weighted} weighted pixels"
            );
            // Same map for the three shapes of a scene.
            let first = (i / 3) * 3;
            assert_eq!(map, &v[first * s * s..(first + 1) * s * s], "image {i}");
        }
    }
}

/// The file name under which `import-shapes` keeps an imported stage's scheduler config.
const IMPORTED_SCHEDULER: &str = "imported_scheduler_config.json";

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The exported diffusers folder (the committed default model unless given).
    #[arg(long, default_value = "models/shapes")]
    pub model: PathBuf,
    /// The run folder to write (must not have a `clip/` or `decoder/` yet).
    #[arg(long)]
    pub run: PathBuf,
    /// The step count the folder's decoder was trained to (the committed one: 13200); the
    /// continued run counts on from it.
    #[arg(long, default_value_t = 13200)]
    pub decoder_step: u64,
    /// The decoder's side in the continued run (default: the folder's `sample_size`); a larger
    /// side continues the same weights at a higher base resolution (the UNet is convolutional,
    /// its attention over tokens).
    #[arg(long)]
    pub decoder_side: Option<u32>,
    /// AdamW learning rate written to the continued run's config (`train-shapes
    /// --decoder-learning-rate` overrides it per invocation).
    #[arg(long, default_value_t = 2e-4)]
    pub decoder_learning_rate: f64,
    /// A decoder trainer checkpoint folder (`trainer_state.json`, `online/`, `decoder/`,
    /// `text_proj/`, as `train-shapes` writes it) to continue instead of the folder's decoder,
    /// e.g. a run in progress kept between machines; `--decoder-step`, `--decoder-side` and
    /// `--decoder-learning-rate` do not apply to it.
    #[arg(long)]
    pub decoder_checkpoint: Option<PathBuf>,
}

/// Rebuilds a resumable `train-shapes` run from an exported folder, so a fresh machine (which
/// has the committed `models/shapes` and no run folders) can continue the decoder or evaluate
/// it with `eval-decoder`:
///
/// - `clip/`: a `CLIPModel` assembled from `text_encoder/` and `image_encoder/` (the export
///   drops `logit_scale`, so it is written at its initial value: a CLIP run resumed from it would
///   relearn it; the decoder and prior stages use the towers only);
/// - `decoder/`: a decoder trainer checkpoint at `--decoder-step` whose online and EMA weights
///   are both the folder's (EMA) weights, with the folder's scheduler (beta schedule,
///   prediction type) in its training config;
/// - `prior/`, and the super-resolution stages under their run names (`sr1`, `sr2`), as
///   weights and scheduler config only, so `export-shapes` can assemble the run again
///   (training those stages on it starts them afresh: the folder has no trainer state).
pub fn import(args: &ImportArgs) -> Result<(), Error> {
    let (model, run) = (&args.model, &args.run);
    for stage in ["clip", "decoder"] {
        if run.join(stage).exists() {
            return Err(format!(
                "{} exists: import into a new run folder",
                run.join(stage).display()
            )
            .into());
        }
    }
    let plain = compute_device()?;
    let text = ClipTextModelWithProjection::from_pretrained(model.join("text_encoder"), &plain)?;
    let vision =
        ClipVisionModelWithProjection::from_pretrained(model.join("image_encoder"), &plain)?;
    let cfg = ClipConfig {
        text_config: ClipTextConfig::from_file(model.join("text_encoder").join("config.json"))?,
        vision_config: ClipVisionConfig::from_file(
            model.join("image_encoder").join("config.json"),
        )?,
        ..clip_config()
    };
    let clip = ClipModel {
        text_model: text.text_model,
        vision_model: vision.vision_model,
        text_projection: text.text_projection,
        visual_projection: vision.visual_projection,
        logit_scale: Param::from_tensor(Tensor::<1>::from_floats(
            [cfg.logit_scale_init_value as f32],
            &plain,
        )),
    };
    clip.save_pretrained(&cfg, run.join("clip"))?;

    if let Some(ckpt) = &args.decoder_checkpoint {
        // Checked by loading it the way `train-shapes` will.
        let tok = ClipTokenizer::from_dir(model.join("tokenizer"))?;
        let uncond = empty_prompt(&tok, &load_clip(run, &plain)?.0, &plain)?;
        let trainer = DecoderTrainer::resume(ckpt, uncond, &plain.clone().autodiff())
            .map_err(|e| format!("--decoder-checkpoint {}: {e}", ckpt.display()))?;
        trainer.save_checkpoint(run.join("decoder"))?;
        if ckpt.join("losses.csv").is_file() {
            copy_files(ckpt, &run.join("decoder"), &["losses.csv"])?;
        }
        println!(
            "decoder: continued from {} at step {}",
            ckpt.display(),
            trainer.step
        );
        return import_other_stages(
            model,
            run,
            decoder_side(&unclip_nn::read_json(
                model.join("decoder").join("config.json"),
            )?)?,
        );
    }
    let mut unet = UNet2DConditionModel::from_pretrained(model.join("decoder"), &plain)?;
    if let Some(side) = args.decoder_side {
        if side == 0 || side % 4 != 0 {
            return Err(format!("--decoder-side {side}: expected a positive multiple of 4").into());
        }
        unet.config.sample_size = Some(serde_json::from_value(serde_json::json!(side))?);
    }
    let side = decoder_side(&unet.config)?;
    super_res_chain(side)?;
    let text_proj = UnCLIPTextProjModel::from_pretrained(model.join("text_proj"), &plain)?;
    let sched = SchedulerConfig::from_json_str(&std::fs::read_to_string(
        model
            .join("decoder_scheduler")
            .join("scheduler_config.json"),
    )?)?;
    let schedule = match sched.beta_schedule {
        unclip_diffusion::BetaSchedule::Linear => TrainSchedule::Linear {
            beta_start: sched.beta_start,
            beta_end: sched.beta_end,
        },
        unclip_diffusion::BetaSchedule::SquaredcosCapV2 => TrainSchedule::SquaredcosCapV2,
        other => {
            return Err(format!("decoder scheduler: no training schedule for {other:?}").into());
        }
    };
    let config = DecoderTrainConfig {
        learning_rate: args.decoder_learning_rate,
        ema_decay: Some(0.995),
        prediction_type: sched.prediction_type,
        schedule,
        seed: 5,
        ..DecoderTrainConfig::default()
    };
    let tok = ClipTokenizer::from_dir(model.join("tokenizer"))?;
    let uncond = empty_prompt(&tok, &load_clip(run, &plain)?.0, &plain)?;
    let ema = Some((text_proj.clone(), unet.clone()));
    let trainer = DecoderTrainer::continue_from(
        text_proj,
        unet,
        ema,
        uncond,
        config,
        args.decoder_step,
        &plain.clone().autodiff(),
    )?;
    trainer.save_checkpoint(run.join("decoder"))?;
    import_other_stages(
        model,
        run,
        decoder_side(&unclip_nn::read_json(
            model.join("decoder").join("config.json"),
        )?)?,
    )?;
    println!(
        "imported {} into {} (decoder at step {}, side {side})",
        model.display(),
        run.display(),
        args.decoder_step
    );
    Ok(())
}

/// The prior and the super-resolution stages (after a decoder of side `from_side` in the
/// folder) as weights + scheduler configs under their run names.
fn import_other_stages(model: &Path, run: &Path, from_side: u32) -> Result<(), Error> {
    let weights = ["config.json", "diffusion_pytorch_model.safetensors"];
    let scheduler = |from: &str, to: &Path| {
        std::fs::copy(
            model.join(from).join("scheduler_config.json"),
            to.join(IMPORTED_SCHEDULER),
        )
        .map_err(|e| format!("copying {from}/scheduler_config.json: {e}"))
    };
    copy_files(&model.join("prior"), &run.join("prior"), &weights)?;
    scheduler("prior_scheduler", &run.join("prior"))?;
    let folders = if model.join("super_res_2").is_dir() {
        vec![
            ("super_res_first", "super_res_scheduler"),
            ("super_res_2", "super_res_2_scheduler"),
        ]
    } else {
        vec![("super_res_first", "super_res_scheduler")]
    };
    for ((folder, sched), stage) in folders.iter().zip(super_res_chain(from_side)?) {
        copy_files(&model.join(folder), &run.join(stage), &weights)?;
        scheduler(sched, &run.join(stage))?;
    }
    Ok(())
}

/// The empty prompt's conditioning (one row): the decoder's unconditional branch and caption
/// dropout.
fn empty_prompt(
    tok: &ClipTokenizer,
    text: &ClipTextModelWithProjection,
    device: &Device,
) -> Result<TextConditioning, Error> {
    let (prompt_embeds, hidden_states, mask) = encode_text(tok, text, &[String::new()], device)?;
    Ok(TextConditioning {
        prompt_embeds,
        hidden_states,
        mask,
    })
}

#[derive(clap::Args, Debug, Clone)]
pub struct DumpArgs {
    /// The run folder whose `clip/` computes the conditioning.
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    /// The CLIP tokenizer folder.
    #[arg(long, default_value = "models/shapes/tokenizer")]
    pub tokenizer: PathBuf,
    /// The safetensors file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Batches to write: the decoder stage's stream from `--start` (the batches `train-shapes`
    /// draws at those steps with the same `--seed`).
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Render side of `images`.
    #[arg(long, default_value_t = BASE)]
    pub side: u32,
    /// The run's seed (`train-shapes --seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write `--steps x --batch` held-out examples (drawn with `--seed`) instead of the
    /// training stream.
    #[arg(long)]
    pub held_out: bool,
}

/// Writes the decoder's training stream (or held-out examples) with its frozen-CLIP
/// conditioning to one safetensors file, for measuring another trainer on exactly the same data:
/// `images [N, 3, S, S]` in [-1, 1], `image_embeds [N, E]`, `prompt_embeds [N, E]`,
/// `hidden_states [N, L, E]`, `mask [N, L]` (1 = token), and the empty prompt's conditioning
/// `uncond_prompt_embeds [1, E]`, `uncond_hidden_states [1, L, E]`, `uncond_mask [1, L]`.
pub fn dump_decoder_stream(args: &DumpArgs) -> Result<(), Error> {
    let device = compute_device()?;
    let tok = ClipTokenizer::from_dir(&args.tokenizer)?;
    let (text, vision) = load_clip(&args.run, &device)?;
    let processor = ClipImageProcessor::for_size(BASE as usize);
    // Each tensor's little-endian f32 bytes and shape, batches concatenated along dim 0.
    let names = [
        "images",
        "image_embeds",
        "prompt_embeds",
        "hidden_states",
        "mask",
    ];
    let mut cols: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| (n.to_string(), Vec::new(), Vec::new()))
        .collect();
    let append = |col: &mut (String, Vec<usize>, Vec<u8>), t: TensorData| -> Result<(), Error> {
        let d = t.shape().to_vec();
        let v = t
            .try_to_vec::<f32>()
            .map_err(|e| format!("{}: {e:?}", col.0))?;
        col.2.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        match col.1.first_mut() {
            Some(n) => *n += d[0],
            None => col.1 = d,
        }
        Ok(())
    };
    let pb = bar(args.steps, 0, "dump");
    let mut held = Dataset::new(args.seed, Split::HeldOut);
    for i in 0..args.steps {
        let ex = if args.held_out {
            held.sample(args.batch)
        } else {
            batch(args.seed, 3, args.start + i, args.batch)
        };
        let ((e, h, m), img) = clip_batch(&tok, &text, &vision, &processor, &ex, &device)?;
        let parts = [
            images_signed(&ex, args.side, &device).into_data(),
            img.into_data(),
            e.into_data(),
            h.into_data(),
            m.float().into_data(),
        ];
        for (col, t) in cols.iter_mut().zip(parts) {
            append(col, t)?;
        }
        pb.inc(1);
    }
    pb.finish();
    let (ue, uh, um) = encode_text(&tok, &text, &[String::new()], &device)?;
    for (name, t) in [
        ("uncond_prompt_embeds", ue.into_data()),
        ("uncond_hidden_states", uh.into_data()),
        ("uncond_mask", um.float().into_data()),
    ] {
        let mut col = (name.to_string(), Vec::new(), Vec::new());
        append(&mut col, t)?;
        cols.push(col);
    }
    let views = cols
        .iter()
        .map(|(n, d, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, d.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{e}"))?;
    let bytes =
        safetensors::serialize(views, None).map_err(|e| format!("{}: {e}", args.out.display()))?;
    unclip_nn::atomic_write(&args.out, &bytes)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
