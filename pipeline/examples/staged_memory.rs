//! Peak memory of one text-to-image call, `MemoryMode::Resident` vs `MemoryMode::Staged`.
//!
//! ```sh
//! cargo run -p unclip --example staged_memory              # a synthetic folder (see below)
//! cargo run -p unclip --example staged_memory -- MODEL_DIR # any diffusers folder
//! ```
//!
//! Each mode runs in a child process of its own (the peak resident set size, `VmHWM` of
//! `/proc/self/status`, only grows), which builds the pipeline, resets the peak (`5` to
//! `/proc/self/clear_refs`), runs one text-to-image call and reports the peak of the build and
//! of the call. Without `MODEL_DIR` the folder is the tiny `unclip_tiny` fixture with larger
//! random super-resolution models (`super_res_first`, `super_res_last` and a second stage
//! `super_res_2`), so the weights are large against the process's own memory. Linux only.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use unclip::upsampler::{UNet2DConfig, UNet2DModel};
use unclip::{Control, MemoryMode, UnclipBuilder};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `(VmHWM, VmRSS)` in MiB.
fn memory() -> Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or(format!("no {name} in /proc/self/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .ok_or("bad status line")?
            .parse()?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

fn child(mode: &str, dir: &Path) -> Result<()> {
    let mode = match mode {
        "resident" => MemoryMode::Resident,
        _ => MemoryMode::Staged,
    };
    let pipe = UnclipBuilder::new()
        .device(Device::flex())
        .from_pretrained(dir)
        .memory(mode)
        .prior_steps(2)
        .decoder_steps(2)
        .super_res_steps(2)
        .super_res_2_steps(2)
        .build()?;
    let (build_peak, after_build) = memory()?;
    std::fs::write("/proc/self/clear_refs", "5")?; // peak := current
    let out = pipe.text_to_image(&["a red circle"], &mut |_| Control::Continue)?;
    let (call_peak, _) = memory()?;
    println!(
        "{mode:?}\t{build_peak:.0}\t{after_build:.0}\t{call_peak:.0}\t{:?}",
        out.images.dims()
    );
    Ok(())
}

fn fixtures_root() -> PathBuf {
    std::env::var("UNCLIP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// `unclip_tiny` with larger random super-resolution models, in a temporary folder.
fn synthetic() -> Result<PathBuf> {
    let src = fixtures_root().join("unclip_tiny");
    let dst = std::env::temp_dir().join(format!("unclip-staged-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst)?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::os::unix::fs::symlink(entry.path(), dst.join(entry.file_name()))?;
        }
    }
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("model_index.json"))?)?;
    let device = Device::flex();
    let first: UNet2DConfig = UNet2DConfig::from_file(src.join("super_res_first/config.json"))?;
    let size = first.sample_size.ok_or("no sample_size")?.hw()[0];
    for (name, side) in [
        ("super_res_first", size),
        ("super_res_last", size),
        ("super_res_2", 2 * size),
    ] {
        let config: UNet2DConfig = serde_json::from_value(serde_json::json!({
            "in_channels": 6,
            "out_channels": 3,
            "block_out_channels": [128, 256, 384],
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "down_block_types": [
                "ResnetDownsampleBlock2D",
                "ResnetDownsampleBlock2D",
                "ResnetDownsampleBlock2D"
            ],
            "up_block_types": [
                "ResnetUpsampleBlock2D",
                "ResnetUpsampleBlock2D",
                "ResnetUpsampleBlock2D"
            ],
            "add_attention": false,
            "sample_size": side,
        }))?;
        let _ = std::fs::remove_file(dst.join(name));
        UNet2DModel::new(&config, &device)?.save_pretrained(dst.join(name))?;
    }
    std::fs::create_dir_all(dst.join("super_res_2_scheduler"))?;
    std::fs::copy(
        src.join("super_res_scheduler/scheduler_config.json"),
        dst.join("super_res_2_scheduler/scheduler_config.json"),
    )?;
    let obj = index
        .as_object_mut()
        .ok_or("model_index is not an object")?;
    obj.insert(
        "super_res_2".into(),
        serde_json::json!(["unclip", "UNet2DModel"]),
    );
    obj.insert(
        "super_res_2_scheduler".into(),
        serde_json::json!(["unclip", "UnCLIPScheduler"]),
    );
    std::fs::write(dst.join("model_index.json"), serde_json::to_string(&index)?)?;
    Ok(dst)
}

fn weights_mib(dir: &Path) -> f64 {
    let mut total = 0u64;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if p.is_dir() {
                for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    let name = f.file_name();
                    let name = name.to_string_lossy();
                    if name.ends_with(".safetensors") && name != "io.safetensors"
                        || name.ends_with(".bin")
                    {
                        total += f.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                }
            }
        }
    }
    total as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, mode, dir] = args.as_slice()
        && flag == "--child"
    {
        return child(mode, Path::new(dir));
    }
    let (dir, made) = match args.first() {
        Some(d) => (PathBuf::from(d), false),
        None => (synthetic()?, true),
    };
    println!(
        "{}: {:.0} MiB of weights files",
        dir.display(),
        weights_mib(&dir)
    );
    println!("mode\tbuild peak MiB\tafter build MiB\tcall peak MiB\toutput");
    let exe = std::env::current_exe()?;
    for mode in ["resident", "staged"] {
        let out = Command::new(&exe)
            .args(["--child", mode])
            .arg(&dir)
            .output()?;
        if !out.status.success() {
            return Err(format!("{mode}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    if made {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
