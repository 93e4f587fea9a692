//! The shared training loop's pieces: global gradient-norm clipping, and the loop's schedule,
//! checkpoint cadence and progress reports.

use std::path::PathBuf;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use unclip_nn::{
    CheckpointStore, Linear, StepReport, TrainCheckpointError, TrainLoop, TrainSnapshot, Trainer,
    clip_grad_norm,
};

fn loss(model: &Linear, device: &Device) -> Tensor<1> {
    let x = Tensor::<2>::from_data(
        TensorData::new((0..12).map(|i| i as f32 - 3.0).collect(), [3, 4]),
        device,
    );
    model.forward(x).powi_scalar(2).sum() * 10.0 // [1], large gradients
}

/// The global L2 norm of all gradients of `model`.
fn global_norm(grads: &GradientsParams, model: &Linear) -> f32 {
    let mut sq = 0.0f32;
    let w = grads.get::<2>(model.weight.id).unwrap();
    sq += w.powi_scalar(2).sum().into_scalar::<f32>();
    if let Some(b) = &model.bias {
        sq += grads
            .get::<1>(b.id)
            .unwrap()
            .powi_scalar(2)
            .sum()
            .into_scalar::<f32>();
    }
    sq.sqrt()
}

#[test]
fn gradient_norm_clipping_is_global() {
    let device = Device::flex().autodiff();
    device.clone().inner().seed(1);
    let model = Linear::new(4, 2, true, &device.clone().inner()).to_device(&device);
    let model = model.train();
    let grads = GradientsParams::from_grads(loss(&model, &device).backward(), &model);
    let before = global_norm(&grads, &model);
    assert!(before > 1.0, "{before}");
    // Above the norm: scaled to it, every tensor by the same factor.
    let w0 = grads.get::<2>(model.weight.id).unwrap().into_data();
    let (clipped, reported) = clip_grad_norm(grads, &model, 1.0);
    assert!(
        (reported - before).abs() <= 1e-4 * before,
        "{reported} vs {before}"
    );
    let after = global_norm(&clipped, &model);
    assert!((after - 1.0).abs() < 1e-4, "{after}");
    let w1 = clipped.get::<2>(model.weight.id).unwrap().into_data();
    let ratio: Vec<f32> = w0
        .iter::<f32>()
        .zip(w1.iter::<f32>())
        .filter(|(a, _)| a.abs() > 1e-3)
        .map(|(a, b)| b / a)
        .collect();
    assert!(
        ratio.iter().all(|r| (r - 1.0 / before).abs() < 1e-4),
        "{ratio:?}"
    );
    // Below the norm: unchanged.
    let grads = GradientsParams::from_grads(loss(&model, &device).backward(), &model);
    let (same, _) = clip_grad_norm(grads, &model, before * 2.0);
    assert!((global_norm(&same, &model) - before).abs() <= 1e-4 * before);
}

/// A trainer of a linear layer, for the loop itself.
struct Tiny {
    model: Linear,
    optim: ModuleOptimizer,
    step: u64,
    lr: f64,
    device: Device,
}

impl Trainer for Tiny {
    type Batch = f32;
    type Error = TrainCheckpointError;
    fn step(&self) -> u64 {
        self.step
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn train_step(&mut self, scale: &f32) -> Result<f32, TrainCheckpointError> {
        let l = loss(&self.model, &self.device) * (*scale as f64);
        let v = l.clone().into_scalar::<f32>();
        let (m, _) =
            unclip_nn::apply_gradients(&mut self.optim, self.lr, self.model.clone(), l, Some(1.0));
        self.model = m;
        self.step += 1;
        Ok(v)
    }
    fn save(&self, store: &CheckpointStore) -> Result<PathBuf, TrainCheckpointError> {
        TrainSnapshot {
            step: self.step,
            model: &self.model,
            ema: None,
            optim: &self.optim,
            config: serde_json::json!({}),
            extra: serde_json::json!({}),
        }
        .save(store)
    }
}

#[test]
fn the_loop_schedules_saves_and_reports() {
    let device = Device::flex().autodiff();
    let model = Linear::new(4, 2, true, &device.clone().inner()).to_device(&device);
    let mut t = Tiny {
        model: model.train(),
        optim: AdamWConfig::new().init(),
        step: 2,
        lr: 0.0,
        device: device.clone(),
    };
    let dir = std::env::temp_dir().join(format!("unclip-nn-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = CheckpointStore::new(&dir, 10);
    let mut reports: Vec<StepReport> = Vec::new();
    let mut batches = Vec::new();
    TrainLoop {
        store: &store,
        total_steps: 7,
        save_every: 3,
    }
    .run::<_, TrainCheckpointError>(
        &mut t,
        |step| Some(step as f64 * 1e-3),
        |step| {
            batches.push(step);
            Ok(1.0)
        },
        |_, r| {
            reports.push(r.clone());
            Ok(())
        },
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(batches, vec![2, 3, 4, 5, 6]);
    let steps: Vec<u64> = reports.iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![3, 4, 5, 6, 7]);
    let saved: Vec<u64> = reports
        .iter()
        .filter(|r| r.saved.is_some())
        .map(|r| r.step)
        .collect();
    assert_eq!(saved, vec![3, 6, 7], "every 3 steps and the last");
    assert!(reports.iter().all(|r| r.loss.is_finite() && r.total == 7));
    assert_eq!(reports[0].learning_rate, 2e-3);
}
