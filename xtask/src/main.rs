//! Project tasks: `cargo run -p xtask -- <task>`.
//!
//! - `bench-clip`: times one CLIP forward (text + vision towers, ViT-B/32 shapes by default) on
//!   every CPU backend compiled in, in one run, and prints the figures and their ratio to the
//!   first backend (the baseline). Build with `--features ndarray` to compare flex and ndarray.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use clap::{Parser, Subcommand};
use unclip_clip::{ClipConfig, ClipModel};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
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
}

fn main() {
    let cli = Cli::parse();
    match cli.task {
        Task::BenchClip { batch, iters, devices } => bench_clip(batch, iters, &devices),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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
        let ids: Vec<i64> = (0..batch * l).map(|i| if i % l == l - 1 { 49407 } else { (i % 400) as i64 + 300 }).collect();
        let s = cfg.vision_config.image_size;
        let run = || {
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [batch, l]), &device);
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
