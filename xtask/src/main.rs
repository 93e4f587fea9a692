//! Project tasks: `cargo run -p xtask -- <task>`.
//!
//! - `bench-clip`: times one CLIP forward (text + vision towers, ViT-B/32 shapes by default) on
//!   every CPU backend compiled in, in one run, and prints the figures and their ratio to the
//!   first backend (the baseline). Build with `--features ndarray` to compare flex and ndarray.
//! - `bench-prior`, `bench-decoder`, `bench-super-res`: time one forward of the prior
//!   transformer, the decoder UNet and the 64->256 super-resolution UNet at the reference
//!   configs of `xtask/bench/configs/*.json` (diffusers `config.json` files, random init), on
//!   each device asked for. With `--torch-python PATH` the same forward is then timed in
//!   PyTorch (`xtask/bench/torch_forward.py`, same configs, inputs shapes, warm-up and
//!   iteration counts) right after, and the ratio Rust / PyTorch is printed. See
//!   `docs/benchmarks.md`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::tensor::{Bool, Device, Distribution, Int, Tensor, TensorData};
use clap::{Args, Parser, Subcommand};
use unclip_clip::{ClipConfig, ClipModel};
use unclip_decoder::{UNet2DConditionConfig, UNet2DConditionModel};
use unclip_prior::{PriorConditioning, PriorTransformer, PriorTransformerConfig};
use unclip_upsampler::{UNet2DConfig, UNet2DModel};

mod grow;
mod noised_clip;
mod ops_bench;
mod shapes;
mod shapes_eval;

/// The reference configs, shared with the PyTorch script.
const PRIOR_CONFIG: &str = include_str!("../bench/configs/prior.json");
const DECODER_CONFIG: &str = include_str!("../bench/configs/decoder.json");
const SUPER_RES_CONFIG: &str = include_str!("../bench/configs/super_res.json");

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Args, Clone)]
struct BenchOpts {
    /// Batch size (default: the reference batch of the benchmark).
    #[arg(long)]
    batch: Option<usize>,
    /// Untimed warm-up forwards per device.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed forwards per device; the median is reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Devices to time, the first is the baseline of the ratio column.
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    devices: Vec<String>,
    /// Python interpreter with torch + diffusers: also time the PyTorch forward (same config,
    /// shapes, warm-up and iterations) after the Rust one, and print Rust / PyTorch.
    #[arg(long)]
    torch_python: Option<PathBuf>,
    /// Threads for PyTorch (`torch.set_num_threads`).
    #[arg(long, default_value_t = 2)]
    torch_threads: usize,
    /// Rust-then-PyTorch rounds (medians of every round are printed, and the median ratio).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

#[derive(Subcommand)]
enum Task {
    /// Time a CLIP forward on each compiled-in CPU backend.
    BenchClip {
        /// Batch size (texts and images).
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Timed iterations per backend (after one warm-up).
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Devices to compare, the first is the baseline.
        #[arg(long, value_delimiter = ',', default_value = "flex,ndarray")]
        devices: Vec<String>,
    },
    /// Train CLIP, prior, decoder and two upsamplers on the shapes world (resumable).
    TrainShapes(shapes::TrainArgs),
    /// Grow a decoder trainer checkpoint by one outer level at twice its resolution
    /// (progressive growing; the new level starts as a pass-through).
    GrowDecoder(grow::GrowArgs),
    /// Assemble a `train-shapes` run into a diffusers folder.
    ExportShapes(shapes::ExportArgs),
    /// Rebuild a resumable run folder from an exported one (the committed model on a fresh machine).
    ImportShapes(shapes::ImportArgs),
    /// Measure a shapes model through the pipeline (oracle fidelity, variations, interpolation).
    EvalShapes(shapes_eval::EvalArgs),
    /// Measure a crop-trained super-resolution stage of a shapes run on full images.
    EvalSr(shapes_eval::EvalSrArgs),
    /// Measure the decoder of a shapes run on held-out renders (true embeddings).
    EvalDecoder(shapes_eval::EvalDecoderArgs),
    /// Measure the prior of a shapes model in CLIP image-embedding space (nearest render).
    EvalPrior(shapes_eval::EvalPriorArgs),
    /// How far reranking K decoder samples per caption can go (oracle's pick) and how far
    /// CLIP's image- and text-embedding scores take it.
    EvalRerank(shapes_eval::EvalRerankArgs),
    /// Train GLIDE's noised CLIP image tower for a shapes model (decoder CLIP guidance).
    TrainNoisedClip(noised_clip::NoisedClipArgs),
    /// Write the decoder's training stream (or held-out examples) with its CLIP conditioning to
    /// a safetensors file, to train or measure another implementation on the same data.
    DumpDecoderStream(shapes::DumpArgs),
    /// Render a caption of the shapes world as a PNG (inputs for the image examples).
    RenderShape(shapes_eval::RenderArgs),
    /// Time shapes-decoder training steps (forward, backward, AdamW, EMA) on each device named,
    /// the first the baseline (e.g. `flex,libtorch` with `--features tch`).
    BenchTrainDecoder(TrainBenchOpts),
    /// Time a prior transformer forward (6 layers, 8 x 64 heads, width 512; batch 2).
    BenchPrior(BenchOpts),
    /// Time a decoder UNet forward (Karlo layout, channels 64/128/192/256, 64x64, context
    /// 81 x 384; batch 2, the guidance pair).
    BenchDecoder(BenchOpts),
    /// Time one super-resolution UNet step (Karlo super_res_first layout, channels
    /// 64/128/192/256, 6 -> 3 channels at 256x256; batch 1).
    BenchSuperRes(BenchOpts),
    /// Time the networks' building blocks one at a time (convolutions, group norm + SiLU,
    /// attention, linear) at the bench configs' shapes, against PyTorch with `--torch-python`.
    BenchOps(ops_bench::OpsOpts),
    /// Time one text-to-image call on the embedded model (seconds per picture, peak RSS),
    /// against the same model through diffusers with `--torch-python`.
    BenchPipeline(ops_bench::PipelineOpts),
}

/// mimalloc keeps freed pages for reuse, where glibc's malloc gives a large buffer back to the
/// kernel and faults it in afresh on the next op (measured in `docs/benchmarks.md`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    match cli.task {
        Task::BenchClip {
            batch,
            iters,
            devices,
        } => bench_clip(batch, iters, &devices),
        Task::BenchPrior(o) => bench_model(Model::Prior, &o),
        Task::TrainShapes(a) => exit_on_error(shapes::train(&a)),
        Task::GrowDecoder(a) => exit_on_error(grow::grow(&a)),
        Task::ExportShapes(a) => exit_on_error(shapes::export(&a)),
        Task::ImportShapes(a) => exit_on_error(shapes::import(&a)),
        Task::DumpDecoderStream(a) => exit_on_error(shapes::dump_decoder_stream(&a)),
        Task::EvalShapes(a) => exit_on_error(shapes_eval::eval(&a)),
        Task::EvalSr(a) => exit_on_error(shapes_eval::eval_sr(&a)),
        Task::EvalDecoder(a) => exit_on_error(shapes_eval::eval_decoder(&a)),
        Task::EvalPrior(a) => exit_on_error(shapes_eval::eval_prior(&a)),
        Task::EvalRerank(a) => exit_on_error(shapes_eval::eval_rerank(&a)),
        Task::TrainNoisedClip(a) => exit_on_error(noised_clip::train(&a)),
        Task::RenderShape(a) => exit_on_error(shapes_eval::render(&a)),
        Task::BenchDecoder(o) => bench_model(Model::Decoder, &o),
        Task::BenchTrainDecoder(o) => exit_on_error(bench_train_decoder(&o)),
        Task::BenchSuperRes(o) => bench_model(Model::SuperRes, &o),
        Task::BenchOps(o) => {
            if let Err(e) = ops_bench::bench_ops(&o) {
                eprintln!("bench-ops: {e}");
                std::process::exit(1);
            }
        }
        Task::BenchPipeline(o) => {
            if let Err(e) = ops_bench::bench_pipeline(&o) {
                eprintln!("bench-pipeline: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// The median (mean of the two middle values for an even count, as Python's
/// `statistics.median`, so that Rust and PyTorch figures are reduced the same way).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `warmup` untimed calls, then `iters` timed calls (ms).
fn time_it(warmup: usize, iters: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn fmt_times(v: &[f64]) -> String {
    v.iter()
        .map(|t| format!("{t:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Clone, Copy)]
enum Model {
    Prior,
    Decoder,
    SuperRes,
}

impl Model {
    fn torch_name(self) -> &'static str {
        match self {
            Model::Prior => "prior",
            Model::Decoder => "decoder",
            Model::SuperRes => "super-res",
        }
    }
    fn default_batch(self) -> usize {
        match self {
            Model::Prior | Model::Decoder => 2,
            Model::SuperRes => 1,
        }
    }
    fn describe(self, batch: usize) -> String {
        match self {
            Model::Prior => {
                let c: PriorTransformerConfig = serde_json::from_str(PRIOR_CONFIG).unwrap();
                format!(
                    "PriorTransformer: {} layers, {} heads x {}, embedding_dim {}, {}+{} tokens; batch {batch}, with text mask (causal + padding bias)",
                    c.num_layers,
                    c.num_attention_heads,
                    c.attention_head_dim,
                    c.embedding_dim,
                    c.num_embeddings,
                    c.additional_embeddings
                )
            }
            Model::Decoder => {
                let c: UNet2DConditionConfig = serde_json::from_str(DECODER_CONFIG).unwrap();
                format!(
                    "UNet2DConditionModel (Karlo decoder layout): channels {:?}, 64x64, in {} / out {}, context {DECODER_CONTEXT} x {}; batch {batch}",
                    c.block_out_channels, c.in_channels, c.out_channels, DECODER_CROSS_DIM
                )
            }
            Model::SuperRes => {
                let c: UNet2DConfig = serde_json::from_str(SUPER_RES_CONFIG).unwrap();
                format!(
                    "UNet2DModel (Karlo super_res_first layout): channels {:?}, {} layers/block, 256x256, in {} / out {}; batch {batch}",
                    c.block_out_channels, c.layers_per_block, c.in_channels, c.out_channels
                )
            }
        }
    }
}

const PRIOR_TEXT_TOKENS: usize = 12; // real tokens of the mask (the rest is padding)
const DECODER_CONTEXT: usize = 81; // 77 text tokens + 4 clip_extra_context_tokens
const DECODER_CROSS_DIM: usize = 384;
const DECODER_REAL_TOKENS: usize = 16; // 4 extra + 12 text tokens attended to
const DIFFUSION_T: f32 = 999.0;

fn mask(batch: usize, len: usize, real: usize, device: &Device) -> Tensor<2, Bool> {
    let v: Vec<bool> = (0..batch * len).map(|i| i % len < real).collect();
    Tensor::from_data(TensorData::new(v, [batch, len]), device)
}

fn normal<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Builds the model and inputs on `device`, returns the timings (ms) of `warmup` + `iters`.
fn time_rust(model: Model, batch: usize, warmup: usize, iters: usize, device: &Device) -> Vec<f64> {
    let b = batch;
    let t = Tensor::<1>::from_data(TensorData::new(vec![DIFFUSION_T; b], [b]), device);
    match model {
        Model::Prior => {
            let cfg: PriorTransformerConfig =
                serde_json::from_str(PRIOR_CONFIG).expect("prior config");
            let m = PriorTransformer::new(&cfg, device).expect("prior");
            let e = cfg.embedding_dim;
            let x = normal([b, e], device);
            let cond = PriorConditioning {
                proj_embedding: normal([b, cfg.embedding_proj_dim()], device),
                encoder_hidden_states: Some(normal([b, cfg.num_embeddings, e], device)),
                attention_mask: Some(mask(b, cfg.num_embeddings, PRIOR_TEXT_TOKENS, device)),
            };
            time_it(warmup, iters, || {
                let y = m
                    .forward(x.clone(), t.clone(), &cond)
                    .expect("prior forward");
                let _ = y.into_data();
            })
        }
        Model::Decoder => {
            let cfg: UNet2DConditionConfig =
                serde_json::from_str(DECODER_CONFIG).expect("decoder config");
            let m = UNet2DConditionModel::new(&cfg, device).expect("decoder");
            let temb = cfg.layout().expect("layout").time_embed_dim;
            let x = normal([b, cfg.in_channels, 64, 64], device);
            let ctx = normal([b, DECODER_CONTEXT, DECODER_CROSS_DIM], device);
            let class = normal([b, temb], device);
            let mk = mask(b, DECODER_CONTEXT, DECODER_REAL_TOKENS, device);
            time_it(warmup, iters, || {
                let y = m
                    .forward(
                        x.clone(),
                        t.clone(),
                        ctx.clone(),
                        Some(class.clone()),
                        Some(mk.clone()),
                    )
                    .expect("decoder forward");
                let _ = y.into_data();
            })
        }
        Model::SuperRes => {
            let cfg: UNet2DConfig =
                serde_json::from_str(SUPER_RES_CONFIG).expect("super-res config");
            let m = UNet2DModel::new(&cfg, device).expect("super-res");
            let x = normal([b, cfg.in_channels, 256, 256], device);
            time_it(warmup, iters, || {
                let y = m.forward(x.clone(), t.clone()).expect("super-res forward");
                let _ = y.into_data();
            })
        }
    }
}

/// Runs one of `xtask/bench/*.py` with `python` and returns its standard output (the error
/// carries its output and standard error when it fails).
fn run_python(python: &Path, script: &str, args: &[String]) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join(script);
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

/// The timings of each `times_ms=t1,t2,...` line of a bench script's output, in order.
fn times_lines(stdout: &str) -> Result<Vec<Vec<f64>>, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("times_ms="))
        .map(|rest| {
            rest.split(',')
                .map(|s| s.trim().parse::<f64>().map_err(|e| format!("{s}: {e}")))
                .collect()
        })
        .collect()
}

/// Runs `xtask/bench/torch_forward.py` and reads its `times_ms=` line.
fn time_torch(
    python: &Path,
    model: Model,
    o: &BenchOpts,
    batch: usize,
) -> Result<Vec<f64>, String> {
    let args = [
        model.torch_name().to_string(),
        "--batch".into(),
        batch.to_string(),
        "--warmup".into(),
        o.warmup.to_string(),
        "--iters".into(),
        o.iters.to_string(),
        "--threads".into(),
        o.torch_threads.to_string(),
    ];
    let stdout = run_python(python, "torch_forward.py", &args)?;
    for line in stdout.lines().filter(|l| !l.starts_with("times_ms=")) {
        println!("  torch: {line}");
    }
    times_lines(&stdout)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("no times_ms= line in:\n{stdout}"))
}

fn bench_model(model: Model, o: &BenchOpts) {
    let batch = o.batch.unwrap_or(model.default_batch());
    println!("{}", model.describe(batch));
    println!(
        "warm-up {}, {} timed iterations, median; every timing in ms in the last column, {} round(s)",
        o.warmup, o.iters, o.rounds
    );
    let devices: Vec<(String, Device)> = o
        .devices
        .iter()
        .filter_map(|name| match unclip_nn::parse_device(name) {
            Ok(d) => Some((name.clone(), d)),
            Err(e) => {
                println!("{name}: skipped: {e}");
                None
            }
        })
        .collect();
    let mut ratios = Vec::new();
    for round in 0..o.rounds.max(1) {
        let mut baseline = None;
        println!("round {}", round + 1);
        println!(
            "| implementation | median ms | ratio to {} | timings |",
            devices.first().map_or("-", |d| &d.0)
        );
        println!("|---|---|---|---|");
        for (name, device) in &devices {
            let times = time_rust(model, batch, o.warmup, o.iters, device);
            let m = median(times.clone());
            let base = *baseline.get_or_insert(m);
            println!(
                "| rust {name} | {m:.1} | {:.2} | {} |",
                m / base,
                fmt_times(&times)
            );
        }
        if let Some(py) = &o.torch_python {
            match time_torch(py, model, o, batch) {
                Ok(times) => {
                    let m = median(times.clone());
                    let base = baseline.unwrap_or(m);
                    println!(
                        "| pytorch | {m:.1} | {:.2} | {} |",
                        m / base,
                        fmt_times(&times)
                    );
                    println!(
                        "rust {} / pytorch = {:.2}",
                        devices.first().map_or("-", |d| &d.0),
                        base / m
                    );
                    ratios.push(base / m);
                }
                Err(e) => println!("| pytorch | failed: {e} | | |"),
            }
        }
    }
    if ratios.len() > 1 {
        println!(
            "rust / pytorch per round: {}; median {:.2}",
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            median(ratios.clone())
        );
    }
}

fn bench_clip(batch: usize, iters: usize, devices: &[String]) {
    // OpenAI ViT-B/32 shapes (transformers defaults).
    let cfg: ClipConfig = serde_json::from_str("{}").expect("default config");
    println!(
        "CLIP forward, ViT-B/32 shapes (text {}x{} layers, vision {}x{} layers, {}px/{}), batch {batch}, {iters} iterations, median",
        cfg.text_config.hidden_size,
        cfg.text_config.num_hidden_layers,
        cfg.vision_config.hidden_size,
        cfg.vision_config.num_hidden_layers,
        cfg.vision_config.image_size,
        cfg.vision_config.patch_size
    );
    let mut baseline = None;
    println!("| backend | median ms | ratio to {} |", devices[0]);
    println!("|---|---|---|");
    for name in devices {
        let device: Device = match unclip_nn::parse_device(name) {
            Ok(d) => d,
            Err(e) => {
                println!("| {name} | skipped: {e} | |");
                continue;
            }
        };
        let model = ClipModel::new(&cfg, &device);
        let l = cfg.text_config.max_position_embeddings;
        let ids: Vec<i64> = (0..batch * l)
            .map(|i| {
                if i % l == l - 1 {
                    49407
                } else {
                    (i % 400) as i64 + 300
                }
            })
            .collect();
        let s = cfg.vision_config.image_size;
        let run = || {
            let ids =
                Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [batch, l]), &device);
            let px = Tensor::<4>::random([batch, 3, s, s], Distribution::Normal(0.0, 1.0), &device);
            let out = model.forward(ids, None, px, false);
            let _ = out.logits_per_image.into_data(); // synchronise
        };
        run();
        let times: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let m = median(times);
        let base = *baseline.get_or_insert(m);
        println!("| {name} | {m:.1} | {:.2} |", m / base);
    }
}

#[derive(Args)]
struct TrainBenchOpts {
    /// Devices to compare (`unclip_nn::parse_device` names), the first is the baseline.
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    devices: Vec<String>,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// The decoder's side (32: the shapes base; 64: the 64x64 continuation).
    #[arg(long, default_value_t = 32)]
    side: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    iters: usize,
}

/// Training steps of the shapes decoder (`xtask/shapes/decoder.json` at `--side`, Karlo's text
/// projection, v prediction, linear betas; batches of random images and conditioning of the
/// shapes CLIP's sizes), timed per device after `--warmup` steps; median and ratio to the first.
fn bench_train_decoder(o: &TrainBenchOpts) -> Result<(), shapes::Error> {
    use unclip_decoder::train::{DecoderBatch, DecoderTrainConfig, DecoderTrainer};
    use unclip_decoder::{TextConditioning, UnCLIPTextProjModel};
    let mut ucfg: UNet2DConditionConfig = serde_json::from_str(shapes::DECODER_CONFIG)?;
    ucfg.sample_size = Some(unclip_decoder::config::SampleSize::Square(o.side));
    let tcfg: unclip_decoder::TextProjConfig = serde_json::from_str(shapes::TEXT_PROJ_CONFIG)?;
    let (b, s, e, l) = (o.batch, o.side, tcfg.clip_embeddings_dim, 24);
    println!(
        "shapes decoder training step ({:?} at {s}x{s}), batch {b}, {} warm-up + {} timed steps, median",
        ucfg.block_out_channels, o.warmup, o.iters
    );
    println!(
        "| device | median ms | ratio to {} | steps (ms) |",
        o.devices[0]
    );
    println!("|---|---|---|---|");
    let mut baseline = None;
    for name in &o.devices {
        let plain = match unclip_nn::parse_device(name) {
            Ok(d) => d,
            Err(e) => {
                println!("| {name} | skipped: {e} | | |");
                continue;
            }
        };
        plain.seed(0);
        let text = |n: usize| TextConditioning {
            prompt_embeds: normal([n, e], &plain),
            hidden_states: normal([n, l, e], &plain),
            mask: mask(n, l, 8, &plain),
        };
        let unet = UNet2DConditionModel::new(&ucfg, &plain)?;
        let text_proj = UnCLIPTextProjModel::new(&tcfg, &plain);
        let config = DecoderTrainConfig {
            ema_decay: Some(0.995),
            prediction_type: unclip_diffusion::PredictionType::VPrediction,
            schedule: unclip_diffusion::TrainSchedule::Linear {
                beta_start: 1e-4,
                beta_end: 0.02,
            },
            ..DecoderTrainConfig::default()
        };
        let mut trainer =
            DecoderTrainer::new(text_proj, unet, text(1), config, &plain.clone().autodiff())?;
        let batch = DecoderBatch {
            images: normal([b, 3, s, s], &plain).clamp(-1.0, 1.0),
            image_embeddings: normal([b, e], &plain),
            text: text(b),
            pixel_weights: None,
        };
        let mut err = None;
        let times = time_it(o.warmup, o.iters, || {
            if let Err(e) = trainer.train_step(&batch) {
                err.get_or_insert(e);
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        let m = median(times.clone());
        let base = *baseline.get_or_insert(m);
        println!(
            "| {name} | {m:.0} | {:.2} | {} |",
            m / base,
            fmt_times(&times)
        );
    }
    Ok(())
}

fn exit_on_error(r: Result<(), shapes::Error>) {
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
