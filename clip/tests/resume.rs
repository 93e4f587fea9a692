//! Resumable training of CLIP and of the noised CLIP tower on tiny configs: N steps straight and
//! N/2 + checkpoint + drop + resume + N/2 end in the same weights and AdamW state bit for bit; a
//! save killed at every file boundary leaves the previous checkpoint, which resumes; a damaged
//! checkpoint or another config is a typed error.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use unclip_clip::{
    ClipBatch, ClipConfig, ClipModel, ClipTrainer, ClipVisionConfig, NoisedClipBatch,
    NoisedClipTrainer, NoisedClipVisionModel,
};
use unclip_nn::train_checkpoint::testing;
use unclip_nn::{CheckpointStore, LoadError, TrainCheckpointError};

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("unclip-clip-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wave(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * k).sin()).collect()
}

const N: u64 = 4;

#[test]
fn clip_resume_is_bit_exact_and_saves_survive_kills() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let cfg: ClipConfig = serde_json::from_value(serde_json::json!({
        "projection_dim": 16,
        "text_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 8, "eos_token_id": 63},
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 8, "patch_size": 4}
    }))
    .unwrap();
    let b = 4;
    let batch = |step: u64| -> Result<ClipBatch, LoadError> {
        let ids: Vec<i64> = (0..b)
            .flat_map(|i| {
                vec![
                    i as i64 + 1,
                    40 + ((i as u64 + step) % 8) as i64,
                    63,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]
            })
            .collect();
        let mask: Vec<i64> = (0..b).flat_map(|_| vec![1, 1, 1, 0, 0, 0, 0, 0]).collect();
        Ok(ClipBatch {
            input_ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 8]), &device),
            attention_mask: Some(Tensor::<2, Int>::from_data(
                TensorData::new(mask, [b, 8]),
                &device,
            )),
            pixel_values: Tensor::from_data(
                TensorData::new(wave(b * 3 * 64, 0.3 + step as f32 * 0.01), [b, 3, 8, 8]),
                &device,
            ),
        })
    };
    plain.seed(9);
    let init = ClipModel::new(&cfg, &plain);
    let dir = TempDir::new("resume");
    let fresh = || {
        ClipTrainer::new(init.clone().to_device(&device).train(), 3e-3, 0.1)
            .with_model_config(&cfg)
            .with_max_grad_norm(Some(1.0))
    };
    let resume =
        |s: &CheckpointStore| ClipTrainer::resume_state(s, &cfg, 3e-3, 0.1, Some(1.0), &device);
    let (mut resumed, store) =
        testing::check_bit_exact_resume(&dir.0, N, fresh, resume, batch, |step| {
            Some(3e-3 / (1.0 + step as f64))
        })
        .unwrap();

    resumed.step(batch(N).unwrap());
    let resume_step = |s: &CheckpointStore| resume(s).map(|t| t.map(|t| t.steps as u64));
    testing::check_interrupted_saves(&store, |s| resumed.save_state(s), resume_step, N).unwrap();
    testing::check_damaged_checkpoint(&store, resume_step, |e| {
        matches!(e, LoadError::TrainCheckpoint(_))
    })
    .unwrap();
    match ClipTrainer::resume_state(&store, &cfg, 3e-3, 0.2, Some(1.0), &device) {
        Err(LoadError::TrainCheckpoint(TrainCheckpointError::ConfigMismatch { field, .. })) => {
            assert_eq!(field, "train.weight_decay")
        }
        other => panic!("expected a config mismatch, got {:?}", other.map(|_| ())),
    }
    // The public step counter is the trainer's (a caller continuing an old run sets it).
    resumed.steps = 100;
    resumed.step(batch(100).unwrap());
    assert_eq!(resumed.steps, 101);
}

#[test]
fn noised_clip_resume_is_bit_exact() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let cfg: ClipVisionConfig = serde_json::from_value(serde_json::json!({
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "image_size": 8, "patch_size": 4, "projection_dim": 8
    }))
    .unwrap();
    let b = 4usize;
    let batch = |step: u64| -> Result<NoisedClipBatch, LoadError> {
        Ok(NoisedClipBatch {
            x_t: Tensor::from_data(
                TensorData::new(wave(b * 3 * 64, 0.21 + step as f32 * 0.02), [b, 3, 8, 8]),
                &device,
            ),
            timesteps: (0..b)
                .map(|i| (i * 250 + step as usize * 7) % 1000)
                .collect(),
            text_embeds: Tensor::from_data(TensorData::new(wave(6 * 8, 0.9), [6, 8]), &device),
            labels: Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2, 4, 5], [b]), &device),
        })
    };
    plain.seed(10);
    let init = NoisedClipVisionModel::new(&cfg, &plain);
    let dir = TempDir::new("noised-resume");
    let (_resumed, store) = testing::check_bit_exact_resume(
        &dir.0,
        N,
        || {
            NoisedClipTrainer::new(init.clone().to_device(&device).train(), 1e-3, 0.1)
                .with_model_config(&cfg)
        },
        |s| NoisedClipTrainer::resume_state(s, &cfg, 1e-3, 0.1, None, &device),
        batch,
        |step| Some(1e-3 * (step + 1) as f64),
    )
    .unwrap();
    match NoisedClipTrainer::resume_state(&store, &cfg, 1e-3, 0.1, Some(2.0), &device) {
        Err(LoadError::TrainCheckpoint(TrainCheckpointError::ConfigMismatch { field, .. })) => {
            assert_eq!(field, "train.max_grad_norm")
        }
        other => panic!("expected a config mismatch, got {:?}", other.map(|_| ())),
    }
}
