//! The training loop every stage's trainer runs in: batches by step, a learning-rate schedule
//! by step, an optimiser step with optional global gradient-norm clipping, a checkpoint every
//! `save_every` steps and a progress callback with the loss and the step time.
//!
//! The trainers (`ClipTrainer`, `NoisedClipTrainer`, `PriorTrainer`, `DecoderTrainer`,
//! `SuperResTrainer`) implement [`Trainer`]; what differs between them is only the loss of a
//! batch and which state they save.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::{CheckpointStore, TrainCheckpointError};

/// One finished step, as reported to the progress callback.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Steps taken after this one.
    pub step: u64,
    /// The run's total.
    pub total: u64,
    /// The loss of the step (before the update).
    pub loss: f32,
    /// Wall time of the step (batch, forward, backward, update; not the save).
    pub step_time: Duration,
    /// The learning rate the step used.
    pub learning_rate: f64,
    /// The checkpoint written after this step, if one was.
    pub saved: Option<PathBuf>,
}

/// A trainer the shared loop can drive.
pub trait Trainer {
    /// What one step consumes.
    type Batch;
    type Error: From<TrainCheckpointError>;
    /// Optimiser steps taken.
    fn step(&self) -> u64;
    /// The learning rate of the next steps (the run's config keeps its base value).
    fn set_learning_rate(&mut self, lr: f64);
    /// The learning rate the next step will use.
    fn learning_rate(&self) -> f64;
    /// One optimiser step on `batch`; returns the loss before the step.
    fn train_step(&mut self, batch: &Self::Batch) -> Result<f32, Self::Error>;
    /// Saves everything a resume needs as `store`'s checkpoint of the current step.
    fn save(&self, store: &CheckpointStore) -> Result<PathBuf, Self::Error>;
}

/// The shared loop: runs `trainer` from its step up to `total_steps`.
///
/// ```no_run
/// # fn f<T: unclip_nn::Trainer<Batch = ()>>(trainer: &mut T) -> Result<(), T::Error> {
/// let store = unclip_nn::CheckpointStore::new("runs/x/checkpoints", 3);
/// unclip_nn::TrainLoop { store: &store, total_steps: 1000, save_every: 100 }.run::<T, T::Error>(
///     trainer,
///     |step| Some(1e-3 * ((step + 1) as f64 / 100.0).min(1.0)), // warm-up
///     |_step| Ok(()),                                            // the batch of a step
///     |_trainer, report| { println!("{} {}", report.step, report.loss); Ok(()) },
/// )
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TrainLoop<'a> {
    pub store: &'a CheckpointStore,
    pub total_steps: u64,
    /// A checkpoint after every step that is a multiple of this, and after the last step.
    pub save_every: u64,
}

impl TrainLoop<'_> {
    /// `lr(step)`: the learning rate of step `step` (`None`: leave it); `batch(step)`: the batch
    /// of step `step` (a pure function of the step, so a resumed run sees the same data);
    /// `progress(trainer, report)` after every step (and after its checkpoint, if any).
    ///
    /// `E` is the caller's error type (the trainer's own, or any it converts into).
    pub fn run<T: Trainer, E: From<T::Error>>(
        &self,
        trainer: &mut T,
        lr: impl Fn(u64) -> Option<f64>,
        mut batch: impl FnMut(u64) -> Result<T::Batch, E>,
        mut progress: impl FnMut(&T, &StepReport) -> Result<(), E>,
    ) -> Result<(), E> {
        let every = self.save_every.max(1);
        while trainer.step() < self.total_steps {
            let step = trainer.step();
            let t0 = Instant::now();
            let b = batch(step)?;
            if let Some(lr) = lr(step) {
                trainer.set_learning_rate(lr);
            }
            let learning_rate = trainer.learning_rate();
            let loss = trainer.train_step(&b)?;
            let step_time = t0.elapsed();
            let done = trainer.step();
            let saved = if done.is_multiple_of(every) || done == self.total_steps {
                Some(trainer.save(self.store)?)
            } else {
                None
            };
            progress(
                trainer,
                &StepReport {
                    step: done,
                    total: self.total_steps,
                    loss,
                    step_time,
                    learning_rate,
                    saved,
                },
            )?;
        }
        Ok(())
    }
}

/// Sum of squares of every parameter's gradient (`[1]`).
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.powi_scalar(2).sum(); // [1]
            self.acc = Some(match self.acc.take() {
                Some(a) => a + s,
                None => s,
            });
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g * self.factor);
        }
    }
}

/// Global gradient-norm clipping (as torch's `clip_grad_norm_`): when the L2 norm of all of
/// `model`'s gradients together exceeds `max_norm`, every gradient is scaled by
/// `max_norm / (norm + 1e-6)`. Returns the gradients and the norm before clipping.
pub fn clip_grad_norm<M: Module>(
    mut grads: GradientsParams,
    model: &M,
    max_norm: f32,
) -> (GradientsParams, f32) {
    let mut sq = SquaredNorm {
        grads: &grads,
        acc: None,
    };
    model.visit(&mut sq);
    let norm = sq.acc.map(|a| a.sqrt().into_scalar::<f32>()).unwrap_or(0.0);
    if norm.is_finite() && norm > max_norm {
        let factor = max_norm as f64 / (norm as f64 + 1e-6);
        model.visit(&mut ScaleGrads {
            grads: &mut grads,
            factor,
        });
    }
    (grads, norm)
}

/// Backpropagates `loss`, clips the gradients' global norm to `max_grad_norm` when set, and
/// steps `optim`. Returns the updated model and the gradient norm before clipping (when
/// clipping is on).
pub fn apply_gradients<M: Module>(
    optim: &mut ModuleOptimizer,
    learning_rate: f64,
    model: M,
    loss: Tensor<1>,
    max_grad_norm: Option<f32>,
) -> (M, Option<f32>) {
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let (grads, norm) = match max_grad_norm {
        Some(m) => {
            let (g, n) = clip_grad_norm(grads, &model, m);
            (g, Some(n))
        }
        None => (grads, None),
    };
    (optim.step(learning_rate, model, grads), norm)
}
