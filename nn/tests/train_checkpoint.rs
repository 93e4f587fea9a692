//! The training checkpoint directory format on a small model: a resume is bit-exact (weights,
//! EMA, AdamW state), a save interrupted at every file boundary leaves the previous checkpoint
//! readable and resumable, and a corrupt or truncated checkpoint is a typed error.

use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use unclip_nn::{
    CheckpointStore, EMA_FILE, LATEST_FILE, Linear, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE,
    TrainCheckpointError, TrainResume, TrainSnapshot, apply_gradients, canonical_contents,
    contents_differences, ema_update,
};

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("unclip-nn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny run: a 4 -> 3 linear layer fitted to a fixed target, AdamW, EMA, gradient clipping.
struct Run {
    model: Linear,
    ema: Linear,
    optim: ModuleOptimizer,
    step: u64,
}

fn config() -> serde_json::Value {
    serde_json::json!({"lr": 1e-2, "ema_decay": 0.9, "max_grad_norm": 0.5, "d_in": 4, "d_out": 3})
}

fn fresh(device: &Device) -> Run {
    let plain = device.clone().inner();
    plain.seed(3);
    let model = Linear::new(4, 3, true, &plain);
    let ema = model.clone();
    Run {
        model: model.to_device(device).train(),
        ema,
        optim: AdamWConfig::new().with_weight_decay(0.01).init(),
        step: 0,
    }
}

fn step(run: &mut Run, device: &Device) {
    // x [2, 4] depends on the step (a data stream that is a function of the step).
    let s = run.step as f32;
    let x = Tensor::<2>::from_data(
        TensorData::new(
            (0..8).map(|i| ((i as f32 + s) * 0.37).sin()).collect(),
            [2, 4],
        ),
        device,
    );
    let y = run.model.forward(x).powi_scalar(2).mean(); // [1]
    let lr = 1e-2 * (1.0 + s as f64).recip(); // a schedule by step
    let (model, _norm) = apply_gradients(&mut run.optim, lr, run.model.clone(), y, Some(0.5));
    run.model = model;
    run.ema = ema_update(run.ema.clone(), &run.model.valid(), 0.9);
    run.step += 1;
}

fn save(run: &Run, store: &CheckpointStore) -> Result<std::path::PathBuf, TrainCheckpointError> {
    TrainSnapshot {
        step: run.step,
        model: &run.model.valid(),
        ema: Some(&run.ema),
        optim: &run.optim,
        config: config(),
        extra: serde_json::json!({"note": "none"}),
    }
    .save(store)
}

fn resume(store: &CheckpointStore, device: &Device) -> Result<Option<Run>, TrainCheckpointError> {
    let Some(r) = TrainResume::load(store)? else {
        return Ok(None);
    };
    r.check_config(&config())?;
    let plain = device.clone().inner();
    let model = r.load_model(Linear::new(4, 3, true, &plain))?;
    let ema = r
        .load_ema(Linear::new(4, 3, true, &plain))?
        .expect("the run keeps an EMA");
    let optim = r.load_optimizer(AdamWConfig::new().with_weight_decay(0.01).init())?;
    Ok(Some(Run {
        model: model.to_device(device).train(),
        ema,
        optim,
        step: r.meta.step,
    }))
}

fn bits(m: &Linear) -> Vec<u32> {
    let mut v: Vec<u32> = m
        .weight
        .val()
        .into_data()
        .iter::<f32>()
        .map(f32::to_bits)
        .collect();
    if let Some(b) = &m.bias {
        v.extend(b.val().into_data().iter::<f32>().map(f32::to_bits));
    }
    v
}

fn optim_bytes(o: &ModuleOptimizer) -> Vec<u8> {
    o.into_bytes().unwrap().to_vec()
}

#[test]
fn resume_is_bit_exact() {
    let device = Device::flex().autodiff();
    let dir = TempDir::new("bitexact");
    let store = CheckpointStore::new(&dir.0, 2);

    let mut straight = fresh(&device);
    for _ in 0..8 {
        step(&mut straight, &device);
    }

    let mut first = fresh(&device);
    for _ in 0..4 {
        step(&mut first, &device);
    }
    save(&first, &store).unwrap();
    drop(first);
    let mut resumed = resume(&store, &device).unwrap().expect("a checkpoint");
    assert_eq!(resumed.step, 4);
    for _ in 0..4 {
        step(&mut resumed, &device);
    }
    assert_eq!(bits(&resumed.model.valid()), bits(&straight.model.valid()));
    assert_eq!(bits(&resumed.ema), bits(&straight.ema));
    // The whole state (weights, EMA, AdamW's moments and step counts per parameter, step,
    // config) saved from both runs is the same, bit for bit.
    let a_dir = TempDir::new("bitexact-a");
    let b_dir = TempDir::new("bitexact-b");
    let (a, b) = (
        CheckpointStore::new(&a_dir.0, 1),
        CheckpointStore::new(&b_dir.0, 1),
    );
    save(&straight, &a).unwrap();
    save(&resumed, &b).unwrap();
    let ca = canonical_contents(&a.load_latest().unwrap().unwrap()).unwrap();
    let cb = canonical_contents(&b.load_latest().unwrap().unwrap()).unwrap();
    assert!(
        ca.keys().any(|k| k.starts_with("optimizer/weight/")),
        "{:?}",
        ca.keys()
    );
    assert_eq!(contents_differences(&ca, &cb), Vec::<String>::new());
    assert!(optim_bytes(&resumed.optim).len() > 100);
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint() {
    let device = Device::flex().autodiff();
    let dir = TempDir::new("interrupted");
    let store = CheckpointStore::new(&dir.0, 3);
    let mut run = fresh(&device);
    step(&mut run, &device);
    save(&run, &store).unwrap();
    let saved = bits(&run.model.valid());
    step(&mut run, &device);
    let n_ops = CheckpointStore::save_operations(4); // model, ema, optimizer, state
    for op in 0..n_ops {
        let faulty = store.clone().with_failure_at(op);
        match save(&run, &faulty) {
            Err(TrainCheckpointError::Injected { op: o }) => assert_eq!(o, op),
            other => panic!("op {op}: expected the injected failure, got {other:?}"),
        }
        // Whatever the kill left, the checkpoint read is step 1's, complete.
        let back = resume(&store, &device)
            .unwrap_or_else(|e| panic!("op {op}: {e}"))
            .expect("a checkpoint");
        assert_eq!(back.step, 1, "op {op}");
        assert_eq!(bits(&back.model.valid()), saved, "op {op}");
    }
    // The next save succeeds over the leftovers and becomes the latest.
    save(&run, &store).unwrap();
    let back = resume(&store, &device).unwrap().unwrap();
    assert_eq!(back.step, 2);
    let names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".tmp-")),
        "leftover temporaries: {names:?}"
    );
}

#[test]
fn keep_n_prunes_older_checkpoints() {
    let device = Device::flex().autodiff();
    let dir = TempDir::new("prune");
    let store = CheckpointStore::new(&dir.0, 2);
    let mut run = fresh(&device);
    for _ in 0..4 {
        step(&mut run, &device);
        save(&run, &store).unwrap();
    }
    assert_eq!(store.steps().unwrap(), vec![3, 4]);
    assert_eq!(
        std::fs::read_to_string(dir.0.join(LATEST_FILE))
            .unwrap()
            .trim(),
        "step-000004"
    );
}

#[test]
fn damaged_checkpoints_are_typed_errors() {
    let device = Device::flex().autodiff();
    let dir = TempDir::new("damaged");
    let store = CheckpointStore::new(&dir.0, 1);

    // No checkpoint at all: a fresh run.
    assert!(resume(&store, &device).unwrap().is_none());

    let mut run = fresh(&device);
    step(&mut run, &device);
    let ckpt = save(&run, &store).unwrap();
    let pristine: Vec<(String, Vec<u8>)> = [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, STATE_FILE]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(ckpt.join(n)).unwrap()))
        .collect();
    let restore = || {
        for (n, b) in &pristine {
            std::fs::write(ckpt.join(n), b).unwrap();
        }
    };
    for (name, _) in &pristine {
        let p = ckpt.join(name);
        let orig = std::fs::read(&p).unwrap();
        // Truncated.
        std::fs::write(&p, &orig[..orig.len() / 2]).unwrap();
        assert!(
            matches!(
                resume(&store, &device),
                Err(TrainCheckpointError::Truncated { .. })
            ),
            "{name} truncated"
        );
        // One byte changed.
        let mut bad = orig.clone();
        let i = bad.len() / 3;
        bad[i] ^= 0x40;
        std::fs::write(&p, &bad).unwrap();
        assert!(
            matches!(
                resume(&store, &device),
                Err(TrainCheckpointError::Corrupt { .. })
            ),
            "{name} corrupt"
        );
        // Removed.
        std::fs::remove_file(&p).unwrap();
        assert!(
            matches!(
                resume(&store, &device),
                Err(TrainCheckpointError::MissingFile { .. })
            ),
            "{name} missing"
        );
        restore();
    }
    assert!(resume(&store, &device).unwrap().is_some());

    // A pointer to garbage, to a missing directory, to a directory without its marker.
    std::fs::write(dir.0.join(LATEST_FILE), b"\x00\xffgarbage").unwrap();
    assert!(matches!(
        resume(&store, &device),
        Err(TrainCheckpointError::Corrupt { .. })
    ));
    std::fs::write(dir.0.join(LATEST_FILE), b"step-000099\n").unwrap();
    assert!(matches!(
        resume(&store, &device),
        Err(TrainCheckpointError::Incomplete { .. })
    ));
    std::fs::write(dir.0.join(LATEST_FILE), b"step-000001\n").unwrap();
    let marker = std::fs::read(ckpt.join(unclip_nn::COMPLETE_FILE)).unwrap();
    std::fs::write(
        ckpt.join(unclip_nn::COMPLETE_FILE),
        &marker[..marker.len() / 2],
    )
    .unwrap();
    assert!(matches!(
        resume(&store, &device),
        Err(TrainCheckpointError::Corrupt { .. })
    ));
    std::fs::remove_file(ckpt.join(unclip_nn::COMPLETE_FILE)).unwrap();
    assert!(matches!(
        resume(&store, &device),
        Err(TrainCheckpointError::Incomplete { .. })
    ));
}

#[test]
fn a_model_of_another_shape_or_config_is_refused() {
    let device = Device::flex().autodiff();
    let dir = TempDir::new("mismatch");
    let store = CheckpointStore::new(&dir.0, 1);
    let mut run = fresh(&device);
    step(&mut run, &device);
    save(&run, &store).unwrap();
    let r = TrainResume::load(&store).unwrap().unwrap();
    let mut other = config();
    other["max_grad_norm"] = serde_json::json!(1.0);
    match r.check_config(&other) {
        Err(TrainCheckpointError::ConfigMismatch {
            field,
            saved,
            given,
            ..
        }) => {
            assert_eq!(
                (field.as_str(), saved.as_str(), given.as_str()),
                ("max_grad_norm", "0.5", "1.0")
            );
        }
        other => panic!("expected a config mismatch, got {other:?}"),
    }
    let err = r
        .load_model(Linear::new(4, 5, true, &device.clone().inner()))
        .unwrap_err();
    assert!(
        matches!(err, TrainCheckpointError::ModelMismatch { .. }),
        "{err}"
    );
    let err = r
        .load_model(Linear::new(4, 3, false, &device.clone().inner()))
        .unwrap_err();
    assert!(
        matches!(err, TrainCheckpointError::ModelMismatch { .. }),
        "{err}"
    );
}
