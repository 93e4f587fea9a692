//! The training noise schedule: betas, alphas, cumulative alphas (host `f32`, computed exactly as
//! torch does in float32), the forward process `q(x_t | x0)`, the true posterior
//! `q(x_{t-1} | x_t, x0)` and conversions between eps, x0 and v predictions.
//!
//! Batched helpers take per-sample timesteps as a host slice `&[usize]` of length `B` and
//! tensors `[B, ...]` of any rank `D >= 1`; per-sample coefficients are broadcast as `[B, 1, .., 1]`.

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::{BetaSchedule, PredictionType, SchedulerConfig};
use crate::error::DiffusionError;

/// Betas and cumulative alphas of a training schedule (all `[T]`, float32 on the host).
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f32>,
    alphas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
}

/// diffusers' `betas_for_alpha_bar` (cosine): computed in f64, then rounded to f32.
pub fn cosine_betas(num_train_timesteps: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    let n = num_train_timesteps as f64;
    (0..num_train_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// `torch.linspace(start, end, steps, dtype=float32)` as torch's CPU kernel computes it (float32
/// step, the second half counted back from `end`).
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                s + step * i as f32
            } else {
                e - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// `x.reshape([B, 1, ..., 1])` for a host vector of per-sample values.
pub(crate) fn per_sample<const D: usize>(values: Vec<f32>, device: &Device) -> Tensor<D> {
    let b = values.len();
    let mut shape = [1usize; D];
    shape[0] = b;
    Tensor::<1>::from_data(TensorData::new(values, [b]), device).reshape(shape)
}

impl NoiseSchedule {
    /// Builds the schedule of `config` (its beta schedule and number of training timesteps).
    pub fn from_config(config: &SchedulerConfig) -> Self {
        let t = config.num_train_timesteps;
        let betas = match config.beta_schedule {
            BetaSchedule::SquaredcosCapV2 => cosine_betas(t, 0.999),
            BetaSchedule::Linear => linspace_f32(config.beta_start, config.beta_end, t),
            BetaSchedule::ScaledLinear => {
                linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), t)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
        };
        Self::from_betas(betas)
    }

    /// From explicit betas: `alphas = 1 - betas` (f32), `alphas_cumprod = cumprod(alphas)` with
    /// torch's CPU accumulation (the running product kept in f64, each output rounded to f32).
    pub fn from_betas(betas: Vec<f32>) -> Self {
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let mut acc = 1.0f64;
        let alphas_cumprod = alphas
            .iter()
            .map(|&a| {
                acc *= a as f64;
                acc as f32
            })
            .collect();
        NoiseSchedule {
            betas,
            alphas,
            alphas_cumprod,
        }
    }

    /// `T`.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// `[T]`
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// `[T]`, `1 - betas`.
    pub fn alphas(&self) -> &[f32] {
        &self.alphas
    }

    /// `[T]`, `alpha_bar_t`.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// `alpha_bar_t`, and 1 for `t < 0` (the clean sample).
    pub fn alpha_bar(&self, t: i64) -> f32 {
        if t < 0 {
            1.0
        } else {
            self.alphas_cumprod[t as usize]
        }
    }

    pub(crate) fn check_timesteps(&self, timesteps: &[usize]) -> Result<(), DiffusionError> {
        let n = self.num_train_timesteps();
        match timesteps.iter().find(|&&t| t >= n) {
            Some(&t) => Err(DiffusionError::TimestepOutOfRange {
                t,
                num_train_timesteps: n,
            }),
            None => Ok(()),
        }
    }

    fn check_batch<const D: usize>(
        what: &'static str,
        x: &Tensor<D>,
        timesteps: &[usize],
    ) -> Result<(), DiffusionError> {
        let dims = x.dims();
        if D == 0 || dims[0] != timesteps.len() {
            return Err(DiffusionError::ShapeMismatch {
                what,
                found: dims.to_vec(),
                expected: format!("batch of {} (one timestep per sample)", timesteps.len()),
            });
        }
        Ok(())
    }

    /// A per-sample coefficient `[B, 1, .., 1]` from `f(alpha_bar_t, t)`.
    fn coef<const D: usize>(
        &self,
        timesteps: &[usize],
        device: &Device,
        f: impl Fn(f32, usize) -> f32,
    ) -> Tensor<D> {
        per_sample(
            timesteps
                .iter()
                .map(|&t| f(self.alphas_cumprod[t], t))
                .collect(),
            device,
        )
    }

    /// Forward process `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise` (diffusers `add_noise`).
    /// `x0`, `noise`: `[B, ...]`; `timesteps`: `B` values.
    pub fn q_sample<const D: usize>(
        &self,
        x0: Tensor<D>,
        noise: Tensor<D>,
        timesteps: &[usize],
    ) -> Result<Tensor<D>, DiffusionError> {
        self.check_timesteps(timesteps)?;
        Self::check_batch("q_sample x0", &x0, timesteps)?;
        same_shape("q_sample noise", &noise, &x0)?;
        let device = x0.device();
        let a: Tensor<D> = self.coef(timesteps, &device, |a, _| a.sqrt());
        let s: Tensor<D> = self.coef(timesteps, &device, |a, _| (1.0 - a).sqrt());
        Ok(x0 * a + noise * s)
    }

    /// Coefficients of the true posterior `q(x_{t-1} | x_t, x0)` at training timestep `t`
    /// (the full schedule, `t-1` the previous step).
    pub fn posterior(&self, t: usize) -> Posterior {
        let a_bar = self.alphas_cumprod[t] as f64;
        let a_bar_prev = if t == 0 {
            1.0
        } else {
            self.alphas_cumprod[t - 1] as f64
        };
        let beta = self.betas[t] as f64;
        let alpha = self.alphas[t] as f64;
        let variance = beta * (1.0 - a_bar_prev) / (1.0 - a_bar);
        // improved DDPM: the variance at t=0 is 0; its log is clipped to the t=1 value.
        let clipped = if t == 0 && self.betas.len() > 1 {
            let a1 = self.alphas_cumprod[1] as f64;
            self.betas[1] as f64 * (1.0 - a_bar) / (1.0 - a1)
        } else {
            variance
        };
        Posterior {
            coef_x0: (beta * a_bar_prev.sqrt() / (1.0 - a_bar)) as f32,
            coef_xt: ((1.0 - a_bar_prev) * alpha.sqrt() / (1.0 - a_bar)) as f32,
            variance: variance as f32,
            log_variance_clipped: clipped.max(1e-20).ln() as f32,
            log_beta: beta.ln() as f32,
        }
    }

    /// Mean `[B, ...]` and log-variance `[B, 1, .., 1]` of `q(x_{t-1} | x_t, x0)`.
    pub fn posterior_mean_log_variance<const D: usize>(
        &self,
        x0: Tensor<D>,
        x_t: Tensor<D>,
        timesteps: &[usize],
    ) -> Result<(Tensor<D>, Tensor<D>), DiffusionError> {
        self.check_timesteps(timesteps)?;
        Self::check_batch("posterior x0", &x0, timesteps)?;
        same_shape("posterior x_t", &x_t, &x0)?;
        let device = x0.device();
        let p: Vec<Posterior> = timesteps.iter().map(|&t| self.posterior(t)).collect();
        let c0: Tensor<D> = per_sample(p.iter().map(|p| p.coef_x0).collect(), &device);
        let ct: Tensor<D> = per_sample(p.iter().map(|p| p.coef_xt).collect(), &device);
        let lv: Tensor<D> = per_sample(p.iter().map(|p| p.log_variance_clipped).collect(), &device);
        Ok((x0 * c0 + x_t * ct, lv))
    }

    /// Converts a model output of `prediction_type` at `x_t` into `(x0, eps)`.
    /// All tensors `[B, ...]`.
    pub fn to_x0_eps<const D: usize>(
        &self,
        prediction_type: PredictionType,
        model_output: Tensor<D>,
        x_t: Tensor<D>,
        timesteps: &[usize],
    ) -> Result<(Tensor<D>, Tensor<D>), DiffusionError> {
        self.check_timesteps(timesteps)?;
        Self::check_batch("x_t", &x_t, timesteps)?;
        same_shape("model output", &model_output, &x_t)?;
        let device = x_t.device();
        let sa: Tensor<D> = self.coef(timesteps, &device, |a, _| a.sqrt());
        let sb: Tensor<D> = self.coef(timesteps, &device, |a, _| (1.0 - a).sqrt());
        Ok(match prediction_type {
            PredictionType::Epsilon => {
                let x0 = (x_t - model_output.clone() * sb) / sa;
                (x0, model_output)
            }
            PredictionType::Sample => {
                let eps = (x_t - model_output.clone() * sa) / sb;
                (model_output, eps)
            }
            PredictionType::VPrediction => {
                let x0 = x_t.clone() * sa.clone() - model_output.clone() * sb.clone();
                let eps = model_output * sa + x_t * sb;
                (x0, eps)
            }
        })
    }

    /// The training target of `prediction_type` for `x0` noised with `noise` at `timesteps`:
    /// eps, x0, or `v = sqrt(a) eps - sqrt(1-a) x0`.
    pub fn target<const D: usize>(
        &self,
        prediction_type: PredictionType,
        x0: Tensor<D>,
        noise: Tensor<D>,
        timesteps: &[usize],
    ) -> Result<Tensor<D>, DiffusionError> {
        self.check_timesteps(timesteps)?;
        Self::check_batch("x0", &x0, timesteps)?;
        same_shape("noise", &noise, &x0)?;
        Ok(match prediction_type {
            PredictionType::Epsilon => noise,
            PredictionType::Sample => x0,
            PredictionType::VPrediction => {
                let device = x0.device();
                let sa: Tensor<D> = self.coef(timesteps, &device, |a, _| a.sqrt());
                let sb: Tensor<D> = self.coef(timesteps, &device, |a, _| (1.0 - a).sqrt());
                noise * sa - x0 * sb
            }
        })
    }
}

/// Scalars of `q(x_{t-1} | x_t, x0) = N(coef_x0 x0 + coef_xt x_t, variance)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Posterior {
    pub coef_x0: f32,
    pub coef_xt: f32,
    pub variance: f32,
    /// `log(variance)`, at t = 0 replaced by the t = 1 value (improved DDPM).
    pub log_variance_clipped: f32,
    /// `log(beta_t)`: the upper end of the learned range.
    pub log_beta: f32,
}

pub(crate) fn same_shape<const D: usize>(
    what: &'static str,
    x: &Tensor<D>,
    reference: &Tensor<D>,
) -> Result<(), DiffusionError> {
    if x.dims() != reference.dims() {
        return Err(DiffusionError::ShapeMismatch {
            what,
            found: x.dims().to_vec(),
            expected: format!("{:?}", reference.dims()),
        });
    }
    Ok(())
}
