//! `train-noised-clip`: GLIDE's noised CLIP for a shapes model — the model's image tower
//! continued on noised renders `x_t` (the decoder's noise schedule and side) with a timestep
//! embedding, against the model's frozen text tower, so that the pipeline can guide the decoder
//! with `grad log p(caption | x_t)` (`Settings::decoder_clip_guidance_scale`).
//!
//! Each step: `batch` training scenes (held-out combinations never appear), rendered at the
//! decoder's side in `[-1, 1]`, noised to uniform timesteps; the loss is the cross-entropy of
//! each image against the canonical-template-or-another captions of every training combination
//! (one template per step, all templates precomputed with the frozen text tower).

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use unclip_clip::{
    ClipTextModelWithProjection, ClipVisionConfig, ClipVisionModelWithProjection, NoisedClipBatch,
    NoisedClipTrainer, NoisedClipVisionModel,
};
use unclip_diffusion::SeededNoise;
use unclip_diffusion::UnCLIPScheduler;
use unclip_shapes::{Attributes, NUM_TEMPLATES, Split, caption, combinations};
use unclip_tokenizer::ClipTokenizer;

use crate::shapes::{Error, LossLog, bar, batch, compute_device, cosine_lr, encode_text};

#[derive(clap::Args, Debug, Clone)]
pub struct NoisedClipArgs {
    /// The model folder (its tokenizer, text and image encoders and decoder scheduler).
    #[arg(long, default_value = "models/shapes")]
    pub model: PathBuf,
    /// Where to write the noised image encoder (resumable).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 5e-4)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 250)]
    pub save_every: u64,
    /// Resumable checkpoints kept (`<out>/checkpoints/step-*`), newest first.
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Global gradient-norm clipping (recorded in the run's config).
    #[arg(long)]
    pub max_grad_norm: Option<f32>,
    /// A CLIP vision config (JSON) for a tower trained from scratch; without it the tower
    /// starts from the model's `image_encoder` (same config) with a zero timestep embedding.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only measure the saved encoder (no training).
    #[arg(long)]
    pub eval_only: bool,
}

const WEIGHT_DECAY: f32 = 0.1;

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    step: u64,
}

/// The decoder's side (its UNet's `sample_size`).
fn decoder_side(model: &std::path::Path) -> Result<u32, Error> {
    let cfg: unclip_decoder::UNet2DConditionConfig =
        unclip_nn::read_json(model.join("decoder/config.json"))?;
    crate::shapes::decoder_side(&cfg)
}

/// Text embeddings `[K, P]` of `captions` through the frozen text tower.
fn text_bank(
    tok: &ClipTokenizer,
    text: &ClipTextModelWithProjection,
    captions: &[String],
    device: &Device,
) -> Result<Tensor<2>, Error> {
    let parts: Result<Vec<Tensor<2>>, Error> = captions
        .chunks(64)
        .map(|c| Ok(encode_text(tok, text, c, device)?.0))
        .collect();
    Ok(Tensor::cat(parts?, 0))
}

/// `x_t [B, 3, S, S]` of rendered scenes noised to `ts` with the decoder's schedule.
fn noised(
    scenes: &[unclip_shapes::Scene],
    side: u32,
    ts: &[usize],
    scheduler: &UnCLIPScheduler,
    noise: &mut SeededNoise,
    device: &Device,
) -> Result<Tensor<4>, Error> {
    let s = side as usize;
    let mut v = Vec::with_capacity(scenes.len() * 3 * s * s);
    for sc in scenes {
        v.extend(sc.render_planar_signed(side));
    }
    let x0 = Tensor::<4>::from_data(TensorData::new(v, [scenes.len(), 3, s, s]), device);
    let eps: Tensor<4> = unclip_diffusion::randn(noise, [scenes.len(), 3, s, s], device)?;
    Ok(scheduler.add_noise(x0, eps, ts)?)
}

pub fn train(args: &NoisedClipArgs) -> Result<(), Error> {
    let plain = compute_device()?;
    let tok = ClipTokenizer::from_dir(args.model.join("tokenizer"))?;
    let text =
        ClipTextModelWithProjection::from_pretrained(args.model.join("text_encoder"), &plain)?;
    let scheduler =
        UnCLIPScheduler::from_file(args.model.join("decoder_scheduler/scheduler_config.json"))?;
    let side = decoder_side(&args.model)?;
    let vcfg = match &args.config {
        Some(p) => ClipVisionConfig::from_file(p)?,
        None => ClipVisionConfig::from_file(args.model.join("image_encoder/config.json"))?,
    };
    if vcfg.projection_dim != text.text_projection.weight.dims()[0] {
        return Err(format!(
            "the tower's projection_dim {} is not the text tower's {}",
            vcfg.projection_dim,
            text.text_projection.weight.dims()[0]
        )
        .into());
    }
    if vcfg.image_size != side as usize {
        return Err(format!(
            "the image encoder reads {0}x{0} images and the decoder draws {side}x{side}",
            vcfg.image_size
        )
        .into());
    }
    let train_combos = combinations(Split::Train);
    // [NUM_TEMPLATES][K, P]
    let banks: Vec<Tensor<2>> = (0..NUM_TEMPLATES)
        .map(|j| {
            let caps: Vec<String> = train_combos.iter().map(|a| caption(a, j)).collect();
            text_bank(&tok, &text, &caps, &plain)
        })
        .collect::<Result<_, _>>()?;
    let state_path = args.out.join("state.json");
    let device = plain.clone().autodiff();
    let store = crate::shapes::stage_store(&args.out, args.keep_checkpoints);
    let resumed = if args.eval_only {
        None
    } else {
        NoisedClipTrainer::resume_state(
            &store,
            &vcfg,
            args.learning_rate,
            WEIGHT_DECAY,
            args.max_grad_norm,
            &device,
        )?
    };
    let mut trainer = match resumed {
        Some(t) => t,
        None => {
            let (model, start) = if state_path.is_file() {
                let st: State = unclip_nn::read_json(&state_path)?;
                (
                    NoisedClipVisionModel::from_pretrained(&args.out, &plain)?,
                    st.step,
                )
            } else if args.config.is_some() {
                plain.seed(args.seed);
                (NoisedClipVisionModel::new(&vcfg, &plain), 0)
            } else {
                // The model's image tower, a fresh timestep embedding whose last layer is zero
                // (so training starts from the clean tower).
                let clean = ClipVisionModelWithProjection::from_pretrained(
                    args.model.join("image_encoder"),
                    &plain,
                )?;
                plain.seed(args.seed);
                let mut m = NoisedClipVisionModel::new(&vcfg, &plain);
                m.vision_model = clean.vision_model;
                m.visual_projection = clean.visual_projection;
                m.time_embedding.linear_2.weight =
                    m.time_embedding.linear_2.weight.map(|w| w.zeros_like());
                if let Some(b) = m.time_embedding.linear_2.bias.take() {
                    m.time_embedding.linear_2.bias = Some(b.map(|b| b.zeros_like()));
                }
                (m, 0)
            };
            let mut t = NoisedClipTrainer::new(
                model.to_device(&device).train(),
                args.learning_rate,
                WEIGHT_DECAY,
            )
            .with_model_config(&vcfg)
            .with_max_grad_norm(args.max_grad_norm);
            t.steps = start as usize;
            t
        }
    };
    let start = trainer.steps as u64;
    if !args.eval_only && start < args.steps {
        let pb = bar(args.steps, start, "nclip");
        let mut log = LossLog::open(&args.out, "nclip")?;
        let n_train = scheduler.schedule().num_train_timesteps();
        unclip_nn::TrainLoop {
            store: &store,
            total_steps: args.steps,
            save_every: args.save_every,
        }
        .run(
            &mut trainer,
            |step| Some(cosine_lr(args.learning_rate, step, 100, args.steps)),
            |step| -> Result<NoisedClipBatch, Error> {
                // Every draw of a step comes from generators seeded by the step.
                let mut rng =
                    rand::rngs::StdRng::seed_from_u64(args.seed ^ (step.wrapping_mul(0x9E37_79B9)));
                let ex = batch(args.seed, 7, step, args.batch);
                let scenes: Vec<_> = ex.iter().map(|e| e.scene.clone()).collect();
                let ts: Vec<usize> = (0..ex.len())
                    .map(|_| rng.random_range(0..n_train))
                    .collect();
                let mut noise = SeededNoise::new(args.seed ^ (step << 20) ^ 0x5eed);
                let x_t = noised(&scenes, side, &ts, &scheduler, &mut noise, &device)?;
                let labels: Vec<i64> = ex
                    .iter()
                    .map(|e| {
                        let a = e.attributes();
                        train_combos.iter().position(|c| *c == a).unwrap_or(0) as i64
                    })
                    .collect();
                let j = rng.random_range(0..NUM_TEMPLATES);
                Ok(NoisedClipBatch {
                    x_t,
                    timesteps: ts,
                    text_embeds: banks[j].clone().to_device(&device),
                    labels: Tensor::<1, Int>::from_data(
                        TensorData::new(labels, [ex.len()]),
                        &device,
                    ),
                })
            },
            |trainer, report| {
                log.report(report, &pb)?;
                if report.saved.is_some() {
                    trainer.model().valid().save_pretrained(&vcfg, &args.out)?;
                    unclip_nn::write_json(&state_path, &State { step: report.step })?;
                }
                Ok(())
            },
        )?;
        pb.finish();
    }
    let model = NoisedClipVisionModel::from_pretrained(&args.out, &plain)?;
    let report = measure(&model, &tok, &text, &scheduler, side, &plain)?;
    print!("{report}");
    std::fs::write(args.out.join("accuracy.md"), &report)?;
    Ok(())
}

/// Reads held-out renders noised to fixed timesteps against the canonical captions of all 324
/// combinations: how often the top caption has the right shape, and is the right combination.
fn measure(
    model: &NoisedClipVisionModel,
    tok: &ClipTokenizer,
    text: &ClipTextModelWithProjection,
    scheduler: &UnCLIPScheduler,
    side: u32,
    device: &Device,
) -> Result<String, Error> {
    let all: Vec<Attributes> = combinations(Split::Train)
        .into_iter()
        .chain(combinations(Split::HeldOut))
        .collect();
    let caps: Vec<String> = all.iter().map(|a| caption(a, 0)).collect();
    let bank = text_bank(tok, text, &caps, device)?;
    let scenes = crate::shapes::held_out_scenes(2, 3); // 40 x 2 backgrounds x 2
    let mut noise = SeededNoise::new(17);
    let mut out = String::from(
        "Noised CLIP on 160 held-out renders noised to t, top caption among the 324 canonical \
         ones:\n\n| t | shape | all four |\n|---|---|---|\n",
    );
    for t in [0usize, 100, 300, 500, 700, 900] {
        let (mut shape, mut allc) = (0usize, 0usize);
        for chunk in scenes.chunks(64) {
            let sc: Vec<_> = chunk.iter().map(|(_, s)| s.clone()).collect();
            let ts = vec![t; sc.len()];
            let x_t = noised(&sc, side, &ts, scheduler, &mut noise, device)?;
            let pred = model
                .logits(x_t, &ts, bank.clone())
                .argmax(1)
                .reshape([sc.len()])
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .map_err(|e| format!("{e:?}"))?;
            for ((a, _), p) in chunk.iter().zip(pred) {
                let got = &all[p as usize];
                shape += (got.shape == a.shape) as usize;
                allc += (got == a) as usize;
            }
        }
        let n = scenes.len() as f64;
        out.push_str(&format!(
            "| {t} | {:.1}% | {:.1}% |\n",
            100.0 * shape as f64 / n,
            100.0 * allc as f64 / n
        ));
    }
    Ok(out)
}
