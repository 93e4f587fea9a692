//! `xtask train-shapes` resumes a killed run with nothing lost: a run killed with SIGKILL in
//! the middle (at whatever point it was: a step, a checkpoint save, an export) and started again
//! with the same command ends in exactly the state of an uninterrupted run (the last
//! checkpoint's weights, EMA, AdamW state, random stream, step and config, and the exported
//! weights), bit for bit.
//!
//! The stage is `sr1` (the 32 -> 64 super-resolution UNet): it needs no earlier stage and uses
//! every piece of resumable state (AdamW, EMA, the crop / augmentation / noise stream, the
//! learning-rate warm-up).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 16;

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("unclip-xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn command(run: &Path) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(["train-shapes", "--stages", "sr1", "--seed", "3"])
        .arg("--run")
        .arg(run)
        .arg("--tokenizer")
        .arg(root.join("models/shapes/tokenizer"))
        .args(["--sr1-steps", &STEPS.to_string(), "--sr-batch", "2"])
        .args(["--save-every", "1", "--keep-checkpoints", "2"])
        .env("UNCLIP_XTASK_DEVICE", "flex")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn finish(run: &Path) {
    let out = command(run).output().expect("run xtask");
    assert!(
        out.status.success(),
        "xtask failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn latest_step(store: &unclip_nn::CheckpointStore) -> Option<u64> {
    let dir = store.latest_dir().ok()??;
    dir.file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

#[test]
fn a_killed_run_resumes_with_nothing_lost() {
    let t0 = Instant::now();
    let tmp = TempDir::new("kill");
    let (a, b) = (tmp.0.join("straight"), tmp.0.join("killed"));
    std::fs::create_dir_all(&tmp.0).unwrap();

    finish(&a);
    let straight_time = t0.elapsed();

    // Kill the second run once it has saved a few checkpoints (mid-run: not at its end).
    let store_b = unclip_nn::CheckpointStore::new(b.join("sr1/checkpoints"), 2);
    let mut child = command(&b).spawn().expect("spawn xtask");
    let deadline = Instant::now() + Duration::from_secs(600);
    let killed_at = loop {
        if let Some(s) = latest_step(&store_b)
            && s >= 3
        {
            child.kill().expect("SIGKILL");
            break s;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("xtask exited ({status}) before it could be killed");
        }
        assert!(Instant::now() < deadline, "no checkpoint in time");
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = child.wait();
    let after_kill = latest_step(&store_b);
    println!("killed after checkpoint {killed_at} (latest now {after_kill:?}) of {STEPS}");
    assert!(
        after_kill.is_some_and(|s| s < STEPS),
        "the run was not killed mid-run: {after_kill:?}"
    );

    // Start it again with the same command: it continues from its newest complete checkpoint.
    finish(&b);

    let store_a = unclip_nn::CheckpointStore::new(a.join("sr1/checkpoints"), 2);
    let ca = unclip_nn::canonical_contents(&store_a.load_latest().unwrap().unwrap()).unwrap();
    let cb = unclip_nn::canonical_contents(&store_b.load_latest().unwrap().unwrap()).unwrap();
    assert_eq!(latest_step(&store_a), Some(STEPS));
    assert_eq!(latest_step(&store_b), Some(STEPS));
    assert_eq!(
        unclip_nn::contents_differences(&ca, &cb),
        Vec::<String>::new()
    );
    // The exported weights (what export-shapes reads) are the same files.
    for f in [
        "diffusion_pytorch_model.safetensors",
        "online/diffusion_pytorch_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.join("sr1").join(f)).unwrap(),
            std::fs::read(b.join("sr1").join(f)).unwrap(),
            "{f}"
        );
    }
    println!(
        "uninterrupted run {:.1} s, whole test {:.1} s",
        straight_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
