//! Resumable training of the prior on a tiny config: N steps straight and N/2 + checkpoint +
//! drop everything + resume + N/2 end in the same state bit for bit (weights, EMA, Adam's
//! moments, random stream); a save interrupted at every file boundary leaves the previous
//! checkpoint, which resumes; a damaged checkpoint or another config is a typed error.

use burn::tensor::{Bool, Device, Tensor, TensorData};
use unclip_nn::train_checkpoint::testing;
use unclip_nn::{CheckpointStore, LoadError, TrainCheckpointError};
use unclip_prior::train::{PriorBatch, PriorTrainer, TrainConfig};
use unclip_prior::{PriorConditioning, PriorError, PriorTransformer, PriorTransformerConfig};

const N: u64 = 6;

fn tiny() -> PriorTransformerConfig {
    // embedding 8, 6 text tokens, 2 heads x 4, 1 layer
    PriorTransformerConfig::tiny(8, 6, 2, 4, 1)
}

/// Deterministic data (no global RNG): `[B, 8]` embeddings, `[B, 6, 8]` tokens, masks.
fn data(device: &Device) -> (PriorBatch, PriorConditioning) {
    let (b, l, e) = (4usize, 6usize, 8usize);
    let f = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin()).collect() };
    let text = Tensor::<2>::from_data(TensorData::new(f(b * e, 0.37), [b, e]), device);
    let tokens = Tensor::<3>::from_data(TensorData::new(f(b * l * e, 0.11), [b, l, e]), device);
    let image = Tensor::<2>::from_data(TensorData::new(f(b * e, 0.73), [b, e]), device);
    let mask: Vec<bool> = (0..b * l).map(|i| i % l < 2 + (i / l) % 4).collect();
    let mut um = vec![false; l];
    um[0] = true;
    let uncond = PriorConditioning {
        proj_embedding: Tensor::zeros([1, e], device),
        encoder_hidden_states: Some(Tensor::zeros([1, l, e], device)),
        attention_mask: Some(Tensor::<2, Bool>::from_data(
            TensorData::new(um, [1, l]),
            device,
        )),
    };
    let batch = PriorBatch {
        image_embeddings: image,
        cond: PriorConditioning {
            proj_embedding: text,
            encoder_hidden_states: Some(tokens),
            attention_mask: Some(Tensor::<2, Bool>::from_data(
                TensorData::new(mask, [b, l]),
                device,
            )),
        },
    };
    (batch, uncond)
}

fn config() -> TrainConfig {
    TrainConfig {
        learning_rate: 3e-3,
        ema_decay: Some(0.9),
        seed: 11,
        max_grad_norm: Some(0.5),
        ..TrainConfig::default()
    }
}

fn lr(step: u64) -> Option<f64> {
    Some(3e-3 * (1.0 - step as f64 / (2 * N) as f64))
}

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("unclip-prior-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn resume_is_bit_exact_and_saves_survive_kills() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let (batch, uncond) = data(&plain);
    plain.seed(5);
    let init = PriorTransformer::new_random(&tiny(), &plain).unwrap();
    let dir = TempDir::new("resume");
    let (mut resumed, store) = testing::check_bit_exact_resume(
        &dir.0,
        N,
        || PriorTrainer::new(init.clone(), uncond.clone(), config(), &device).unwrap(),
        |s| PriorTrainer::resume_state(s, uncond.clone(), Some(&config()), &device),
        |_| Ok(batch.clone()),
        lr,
    )
    .unwrap();
    assert!(resumed.ema.is_some());

    // A save of step N + 1 killed at every file boundary: step N resumes.
    resumed.train_step(&batch).unwrap();
    let resume_step = |s: &CheckpointStore| {
        PriorTrainer::resume_state(s, uncond.clone(), Some(&config()), &device)
            .map(|t| t.map(|t| t.step))
    };
    testing::check_interrupted_saves(&store, |s| resumed.save_state(s), resume_step, N).unwrap();

    // Damaged checkpoints and another config are typed errors.
    testing::check_damaged_checkpoint(&store, resume_step, |e| {
        matches!(e, PriorError::Load(LoadError::TrainCheckpoint(_)))
    })
    .unwrap();
    let other = TrainConfig {
        cond_drop_prob: 0.2,
        ..config()
    };
    match PriorTrainer::resume_state(&store, uncond, Some(&other), &device) {
        Err(PriorError::Load(LoadError::TrainCheckpoint(
            TrainCheckpointError::ConfigMismatch { field, .. },
        ))) => assert_eq!(field, "train.cond_drop_prob"),
        other => panic!("expected a config mismatch, got {other:?}"),
    }
}
