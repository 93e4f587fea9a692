//! `bench-ops`: the building blocks of the UNet and prior forwards, one at a time, at the shapes
//! the bench configs run them (`xtask/bench/configs/*.json`), against the same ops in PyTorch
//! (`xtask/bench/torch_ops.py`) right after, in one run.
//!
//! This is where a network-level gap (bench-decoder / bench-super-res / bench-prior) is taken
//! apart: each row is one op the networks call many times, so a row's ratio says whether the
//! time is lost in a backend kernel (convolution, matmul, softmax) or in the project's own
//! composition of ops (group norm, activation, attention plumbing).

use std::path::{Path, PathBuf};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};
use clap::Args;
use unclip_nn::{Activation, GroupNorm, scaled_dot_product};

use crate::{fmt_times, median, normal, run_python, time_it, times_lines};

#[derive(Args, Clone)]
pub struct OpsOpts {
    /// Untimed warm-up calls per op.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed calls per op; the median is reported.
    #[arg(long, default_value_t = 7)]
    iters: usize,
    /// Rust device.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Python with torch: also time the same ops in PyTorch and print Rust / PyTorch.
    #[arg(long)]
    torch_python: Option<PathBuf>,
    /// Threads for PyTorch (`torch.set_num_threads`).
    #[arg(long, default_value_t = 2)]
    torch_threads: usize,
    /// Only the ops whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

/// One benchmarked op. The names and shapes are shared with `torch_ops.py`, which reads the
/// list from `bench-ops --list`.
#[derive(Clone, Copy)]
enum Op {
    /// 3x3 convolution, padding 1, `[B, C, S, S] -> [B, C, S, S]`.
    Conv3 { b: usize, c: usize, s: usize },
    /// 1x1 convolution `[B, C, S, S] -> [B, C, S, S]`.
    Conv1 { b: usize, c: usize, s: usize },
    /// GroupNorm(32) then SiLU on `[B, C, S, S]`, as every resnet block starts.
    NormSilu { b: usize, c: usize, s: usize },
    /// `unclip_nn::GroupNorm(32)` alone (the backend's fused layer norm + per-channel affine).
    Norm { b: usize, c: usize, s: usize },
    /// The same group norm written out in element-wise ops (mean, centre, square, mean,
    /// divide, scale, shift): the formulation `GroupNorm` used before, kept as the reference.
    NormComposed { b: usize, c: usize, s: usize },
    /// SiLU alone (`unclip_nn::Activation::Silu`).
    Silu { b: usize, c: usize, s: usize },
    /// SiLU as burn's `activation::silu` (`x * sigmoid(x)`), the reference.
    SiluBurn { b: usize, c: usize, s: usize },
    /// Attention `q [B, H, L, 64]`, `k, v [B, H, L + 81, 64]` with an additive bias
    /// `[B, 1, 1, L + 81]` (the decoder's self + cross attention at S x S, L = S^2).
    Attn { b: usize, h: usize, l: usize },
    /// The same attention through burn's fused `module::attention` (flex: naive or flash
    /// kernel by size), the candidate to replace `unclip_nn::scaled_dot_product`.
    AttnFused { b: usize, h: usize, l: usize },
    /// `[B, L, D] x [D, D]` (the prior's and the attention projections' linear layers).
    Matmul { b: usize, l: usize, d: usize },
}

#[rustfmt::skip]
const OPS: &[Op] = &[
    // decoder bench config, batch 2: the four levels
    Op::Conv3 { b: 2, c: 64, s: 64 },
    Op::Conv3 { b: 2, c: 128, s: 32 },
    Op::Conv3 { b: 2, c: 192, s: 16 },
    Op::Conv3 { b: 2, c: 256, s: 8 },
    // super-resolution bench config, batch 1, first level
    Op::Conv3 { b: 1, c: 64, s: 256 },
    Op::Conv1 { b: 2, c: 128, s: 32 },
    Op::NormSilu { b: 2, c: 64, s: 64 },
    Op::NormSilu { b: 1, c: 64, s: 256 },
    Op::Norm { b: 2, c: 64, s: 64 },
    Op::NormComposed { b: 2, c: 64, s: 64 },
    Op::Silu { b: 2, c: 64, s: 64 },
    Op::SiluBurn { b: 2, c: 64, s: 64 },
    Op::Attn { b: 2, h: 2, l: 1024 },
    Op::Attn { b: 2, h: 3, l: 256 },
    Op::AttnFused { b: 2, h: 2, l: 1024 },
    Op::AttnFused { b: 2, h: 3, l: 256 },
    Op::Matmul { b: 2, l: 81, d: 512 },
];

impl Op {
    fn name(self) -> String {
        match self {
            Op::Conv3 { b, c, s } => format!("conv3x3 b{b} c{c} {s}x{s}"),
            Op::Conv1 { b, c, s } => format!("conv1x1 b{b} c{c} {s}x{s}"),
            Op::NormSilu { b, c, s } => format!("groupnorm+silu b{b} c{c} {s}x{s}"),
            Op::Norm { b, c, s } => format!("groupnorm b{b} c{c} {s}x{s}"),
            Op::NormComposed { b, c, s } => format!("groupnorm, composed b{b} c{c} {s}x{s}"),
            Op::Silu { b, c, s } => format!("silu b{b} c{c} {s}x{s}"),
            Op::SiluBurn { b, c, s } => format!("silu, burn's b{b} c{c} {s}x{s}"),
            Op::Attn { b, h, l } => format!("attention b{b} h{h} q{l} k{}", l + 81),
            Op::AttnFused { b, h, l } => {
                format!("attention, burn fused b{b} h{h} q{l} k{}", l + 81)
            }
            Op::Matmul { b, l, d } => format!("linear b{b} l{l} {d}x{d}"),
        }
    }

    /// The argument line `torch_ops.py` parses.
    fn spec(self) -> String {
        match self {
            Op::Conv3 { b, c, s } => format!("conv3 {b} {c} {s}"),
            Op::Conv1 { b, c, s } => format!("conv1 {b} {c} {s}"),
            Op::NormSilu { b, c, s } => format!("normsilu {b} {c} {s}"),
            Op::Norm { b, c, s } | Op::NormComposed { b, c, s } => format!("norm {b} {c} {s}"),
            Op::Silu { b, c, s } | Op::SiluBurn { b, c, s } => format!("silu {b} {c} {s}"),
            Op::Attn { b, h, l } | Op::AttnFused { b, h, l } => format!("attn {b} {h} {l}"),
            Op::Matmul { b, l, d } => format!("matmul {b} {l} {d}"),
        }
    }

    /// Floating-point operations of one call (multiply-adds count two), for the GFLOP/s column.
    fn flops(self) -> Option<f64> {
        match self {
            Op::Conv3 { b, c, s } => Some(2.0 * 9.0 * (c * c * s * s * b) as f64),
            Op::Conv1 { b, c, s } => Some(2.0 * (c * c * s * s * b) as f64),
            Op::Attn { b, h, l } | Op::AttnFused { b, h, l } => {
                Some(2.0 * 2.0 * (b * h * l * (l + 81) * 64) as f64)
            }
            Op::Matmul { b, l, d } => Some(2.0 * (b * l * d * d) as f64),
            Op::NormSilu { .. }
            | Op::Norm { .. }
            | Op::NormComposed { .. }
            | Op::Silu { .. }
            | Op::SiluBurn { .. } => None,
        }
    }

    fn time(self, warmup: usize, iters: usize, device: &Device) -> Vec<f64> {
        match self {
            Op::Conv3 { b, c, s } | Op::Conv1 { b, c, s } => {
                let k = if matches!(self, Op::Conv3 { .. }) {
                    3
                } else {
                    1
                };
                let conv: Conv2d = Conv2dConfig::new([c, c], [k, k])
                    .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                    .init(device);
                let x = normal([b, c, s, s], device);
                time_it(warmup, iters, || {
                    let _ = conv.forward(x.clone()).into_data();
                })
            }
            Op::NormSilu { b, c, s } | Op::Norm { b, c, s } | Op::NormComposed { b, c, s } => {
                let norm = GroupNorm::new(32, c, 1e-5, device);
                let x = normal([b, c, s, s], device);
                time_it(warmup, iters, || {
                    let y = match self {
                        Op::NormSilu { .. } => Activation::Silu.forward(norm.forward(x.clone())),
                        Op::NormComposed { .. } => group_norm_composed(&norm, x.clone()),
                        _ => norm.forward(x.clone()),
                    };
                    let _ = y.into_data();
                })
            }
            Op::Silu { b, c, s } => {
                let x = normal([b, c, s, s], device);
                time_it(warmup, iters, || {
                    let _ = Activation::Silu.forward(x.clone()).into_data();
                })
            }
            Op::SiluBurn { b, c, s } => {
                let x = normal([b, c, s, s], device);
                time_it(warmup, iters, || {
                    let _ = burn::tensor::activation::silu(x.clone()).into_data();
                })
            }
            Op::Attn { b, h, l } => {
                let q = normal([b, h, l, 64], device);
                let k = normal([b, h, l + 81, 64], device);
                let v = normal([b, h, l + 81, 64], device);
                let bias: Tensor<4> = normal([b, 1, 1, l + 81], device);
                time_it(warmup, iters, || {
                    let y = scaled_dot_product(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        Some(bias.clone()),
                        0.125,
                    );
                    let _ = y.into_data();
                })
            }
            Op::AttnFused { b, h, l } => {
                let q = normal([b, h, l, 64], device);
                let k = normal([b, h, l + 81, 64], device);
                let v = normal([b, h, l + 81, 64], device);
                let bias: Tensor<4> = normal([b, 1, 1, l + 81], device);
                let options = AttentionModuleOptions {
                    scale: Some(0.125),
                    softcap: None,
                    is_causal: false,
                };
                time_it(warmup, iters, || {
                    let y = attention(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        None,
                        Some(bias.clone().expand([b, h, l, l + 81])),
                        options,
                    );
                    let _ = y.into_data();
                })
            }
            Op::Matmul { b, l, d } => {
                let lin = unclip_nn::Linear::new(d, d, true, device);
                let x = normal([b, l, d], device);
                time_it(warmup, iters, || {
                    let _ = lin.forward(x.clone()).into_data();
                })
            }
        }
    }
}

/// Group norm in element-wise ops: `(x - mean) / sqrt(var + eps) * weight + bias` per group.
fn group_norm_composed(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let g = norm.num_groups;
    let xg = x.reshape([b, g, (c / g) * h * w]);
    let mean = xg.clone().mean_dim(2);
    let xc = xg - mean;
    let var = xc.clone().powi_scalar(2).mean_dim(2);
    let y = (xc / (var + norm.eps).sqrt()).reshape([b, c, h, w]);
    y * norm.weight.val().reshape([1, c, 1, 1]) + norm.bias.val().reshape([1, c, 1, 1])
}

/// Runs `torch_ops.py` over the selected ops; returns each op's timings (ms).
fn time_torch(py: &Path, ops: &[Op], o: &OpsOpts) -> Result<Vec<Vec<f64>>, String> {
    let mut args = vec![
        "--warmup".to_string(),
        o.warmup.to_string(),
        "--iters".into(),
        o.iters.to_string(),
        "--threads".into(),
        o.torch_threads.to_string(),
    ];
    // each spec is four arguments: kind and three integers
    for op in ops {
        args.extend(op.spec().split_whitespace().map(str::to_string));
    }
    let stdout = run_python(py, "torch_ops.py", &args)?;
    let rows = times_lines(&stdout)?;
    if rows.len() != ops.len() {
        return Err(format!("expected {} times_ms= lines:\n{stdout}", ops.len()));
    }
    Ok(rows)
}

pub fn bench_ops(o: &OpsOpts) -> Result<(), String> {
    let device = unclip_nn::parse_device(&o.device).map_err(|e| e.to_string())?;
    let ops: Vec<Op> = OPS
        .iter()
        .copied()
        .filter(|op| {
            o.only
                .as_ref()
                .is_none_or(|f| op.name().contains(f.as_str()))
        })
        .collect();
    println!(
        "ops: warm-up {}, {} timed calls, median ms; Rust on {}, then PyTorch ({} threads)",
        o.warmup, o.iters, o.device, o.torch_threads
    );
    let rust: Vec<f64> = ops
        .iter()
        .map(|op| median(op.time(o.warmup, o.iters, &device)))
        .collect();
    let torch = match &o.torch_python {
        Some(py) => Some(time_torch(py, &ops, o)?),
        None => None,
    };
    println!("| op | rust ms | rust GFLOP/s | pytorch ms | pytorch GFLOP/s | rust / pytorch |");
    println!("|---|---|---|---|---|---|");
    for (i, op) in ops.iter().enumerate() {
        let gf = |ms: f64| {
            op.flops()
                .map_or("-".to_string(), |f| format!("{:.1}", f / ms / 1e6))
        };
        let (tm, tg, ratio) = match &torch {
            Some(t) => {
                let m = median(t[i].clone());
                (format!("{m:.2}"), gf(m), format!("{:.2}", rust[i] / m))
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {:.2} | {} | {tm} | {tg} | {ratio} |",
            op.name(),
            rust[i],
            gf(rust[i])
        );
    }
    Ok(())
}

#[derive(Args, Clone)]
pub struct PipelineOpts {
    /// The model folder (default: the embedded shapes model).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/shapes"))]
    model: PathBuf,
    #[arg(long, default_value = "a large red circle in the top left")]
    prompt: String,
    /// Untimed warm-up calls.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed calls; the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Rust device.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Write the last picture here.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Python with torch, diffusers and transformers: also time `torch_pipeline.py` (the same
    /// model and settings through diffusers' classes) and print Rust / PyTorch.
    #[arg(long)]
    torch_python: Option<PathBuf>,
    /// Threads for PyTorch (`torch.set_num_threads`).
    #[arg(long, default_value_t = 2)]
    torch_threads: usize,
}

/// This process's peak resident set (KiB), from `/proc/self/status` (Linux); `None` elsewhere.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `bench-pipeline`: one full text-to-image call (prior, decoder, both super-resolution stages
/// at the folder's settings) on the embedded model, seconds per picture and peak RSS, then the
/// same in PyTorch.
pub fn bench_pipeline(o: &PipelineOpts) -> Result<(), String> {
    let device = unclip_nn::parse_device(&o.device).map_err(|e| e.to_string())?;
    let pipe = unclip::UnclipBuilder::new()
        .device(device)
        .from_pretrained(&o.model)
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = None;
    let mut err = None;
    let times = time_it(o.warmup, o.iters, || {
        match pipe.text_to_image(&[o.prompt.as_str()], &mut |_| unclip::Control::Continue) {
            Ok(g) => last = Some(g),
            Err(e) => err = Some(e.to_string()),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let (Some(path), Some(g)) = (&o.png, &last) {
        let pics = g.to_rgb8().map_err(|e| e.to_string())?;
        pics[0].save(path).map_err(|e| e.to_string())?;
    }
    let rss = peak_rss_kib();
    let m = median(times.clone());
    println!(
        "text-to-image, {:?}, {}: warm-up {}, {} timed, median",
        o.prompt,
        o.model.display(),
        o.warmup,
        o.iters
    );
    println!("| implementation | s per picture | peak RSS MiB | timings ms |");
    println!("|---|---|---|---|");
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0));
    println!(
        "| rust {} | {:.2} | {} | {} |",
        o.device,
        m / 1e3,
        mib(rss),
        fmt_times(&times)
    );
    if let Some(py) = &o.torch_python {
        let mut args = vec!["--model".to_string(), o.model.display().to_string()];
        for (flag, value) in [
            ("--prompt", o.prompt.clone()),
            ("--warmup", o.warmup.to_string()),
            ("--iters", o.iters.to_string()),
            ("--threads", o.torch_threads.to_string()),
        ] {
            args.extend([flag.to_string(), value]);
        }
        let stdout = run_python(py, "torch_pipeline.py", &args)?;
        let t = times_lines(&stdout)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("no times_ms= line in:\n{stdout}"))?;
        let prss = stdout
            .lines()
            .find_map(|l| l.strip_prefix("peak_rss_kib="))
            .and_then(|s| s.trim().parse().ok());
        let tm = median(t.clone());
        println!(
            "| pytorch ({} threads) | {:.2} | {} | {} |",
            o.torch_threads,
            tm / 1e3,
            mib(prss),
            fmt_times(&t)
        );
        println!("rust / pytorch = {:.2}", m / tm);
    }
    Ok(())
}
