//! Training losses (DDPM / improved DDPM / GLIDE):
//!
//! - [`sample_timesteps`]: uniform timesteps `t ~ U{0, .., T-1}` per sample;
//! - [`mse`]: the simple loss on the chosen target (eps, x0 or v; [`NoiseSchedule::target`]);
//! - [`LossWeighting`]: an optional per-timestep weight of the simple loss, stated as the weight
//!   of the equivalent x0 loss (so it means the same whatever the model predicts);
//! - the hybrid loss `L_simple + lambda * L_vlb` for learned-range variance
//!   ([`TrainingObjective::loss`]): the VLB term at `t > 0` is the KL between the true
//!   posterior `q(x_{t-1} | x_t, x0)` and the model's `p(x_{t-1} | x_t)`, with the model mean's
//!   gradient stopped (only the variance channels learn from it); at `t = 0` it is the negative
//!   discretized Gaussian log-likelihood of `x0` (images in [-1, 1], 256 levels), or a
//!   continuous Gaussian NLL for non-image data (the prior's embeddings). VLB terms are in bits
//!   per dimension and, as in improved DDPM, `L_vlb = T * E_t[L_t]`, so with the paper's
//!   `lambda = 0.001` and `T = 1000` the VLB weight is 1.
//!
//! Everything is differentiable with burn's autodiff (tensors on `Device::flex().autodiff()`).

use burn::tensor::Tensor;
use rand::Rng;

use crate::config::{PredictionType, SchedulerConfig, VarianceType};
use crate::error::DiffusionError;
use crate::schedule::{NoiseSchedule, per_sample, same_shape};

/// `batch` timesteps drawn uniformly from `0..num_train_timesteps` (unbiased rejection
/// sampling on `next_u64`, so a seeded generator gives the same timesteps everywhere).
pub fn sample_timesteps<R: Rng + ?Sized>(
    rng: &mut R,
    batch: usize,
    num_train_timesteps: usize,
) -> Vec<usize> {
    let n = num_train_timesteps.max(1) as u64;
    let zone = u64::MAX - (u64::MAX % n);
    (0..batch)
        .map(|_| {
            loop {
                let x = rng.next_u64();
                if x < zone {
                    break (x % n) as usize;
                }
            }
        })
        .collect()
}

/// Mean over all but the batch dimension: `[B, ...] -> [B]`.
fn mean_per_sample<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let dims = x.dims();
    let b = dims[0];
    let rest: usize = dims[1..].iter().product();
    x.reshape([b, rest.max(1)]).mean_dim(1).reshape([b])
}

/// Mean squared error over all elements: `[..] -> [1]`.
pub fn mse<const D: usize>(prediction: Tensor<D>, target: Tensor<D>) -> Tensor<1> {
    (prediction - target).square().mean()
}

/// Per-timestep weighting of the simple loss.
///
/// Every target's squared error is a multiple of the x0 error at the same `t`:
/// `|eps - eps^|^2 = SNR |x0 - x0^|^2`, `|v - v^|^2 = (1 + SNR) |x0 - x0^|^2` (Salimans & Ho
/// 2022), `SNR = a / (1 - a)`. A weighting is stated as the weight `W(t)` it puts on the x0
/// error; the simple loss of a `prediction_type` is multiplied by `W(t) / k(t)`, `k` its own
/// factor (1, SNR or 1 + SNR).
///
/// ```
/// use unclip_diffusion::LossWeighting;
/// let w: LossWeighting = serde_json::from_str(r#"{"type": "snr_plus_one", "max_snr": 20.0}"#).unwrap();
/// assert_eq!(w, LossWeighting::SnrPlusOne { max_snr: 20.0 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LossWeighting {
    /// The plain MSE of the prediction target (DDPM's `L_simple`; GLIDE, Karlo).
    #[default]
    Uniform,
    /// `W(t) = 1 + min(SNR(t), max_snr)`: v-prediction's x0 weighting, capped as in min-SNR
    /// weighting (Hang et al. 2023). Against plain x0 prediction (`W = 1`) it adds weight where
    /// the noise is low (`SNR > 1`), where an x0 loss is tiny and a model that returns a
    /// slightly blurred `x_t` is barely penalised; against eps prediction (`W = SNR`) it caps the
    /// low-noise end and keeps weight 1 at the high-noise end.
    SnrPlusOne { max_snr: f32 },
}

impl LossWeighting {
    /// The x0-loss weight `W(t)` at signal-to-noise ratio `snr`.
    pub fn x0_weight(&self, snr: f32) -> f32 {
        match *self {
            LossWeighting::Uniform => 1.0,
            LossWeighting::SnrPlusOne { max_snr } => 1.0 + snr.min(max_snr),
        }
    }

    /// The multiplier of the simple loss on `prediction_type` at `snr`: `W(t) / k(t)`, or 1
    /// for [`LossWeighting::Uniform`] (whatever the target).
    pub fn target_weight(&self, prediction_type: PredictionType, snr: f32) -> f32 {
        if *self == LossWeighting::Uniform {
            return 1.0;
        }
        let k = match prediction_type {
            PredictionType::Sample => 1.0,
            PredictionType::Epsilon => snr,
            PredictionType::VPrediction => 1.0 + snr,
        };
        self.x0_weight(snr) / k.max(f32::MIN_POSITIVE)
    }

    /// Checks the weighting's parameters.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        match *self {
            LossWeighting::Uniform => Ok(()),
            LossWeighting::SnrPlusOne { max_snr } if max_snr.is_finite() && max_snr >= 0.0 => {
                Ok(())
            }
            LossWeighting::SnrPlusOne { max_snr } => Err(DiffusionError::InvalidArgument {
                what: "loss weighting snr_plus_one",
                message: format!("max_snr {max_snr} is not a non-negative number"),
            }),
        }
    }
}

/// Mean over the batch of per-sample weights times each sample's mean squared error:
/// `prediction`, `target` `[B, ...]`, `weights` `B` values -> `[1]`.
pub fn weighted_mse<const D: usize>(
    prediction: Tensor<D>,
    target: Tensor<D>,
    weights: &[f32],
) -> Tensor<1> {
    weighted_mean(mean_per_sample((prediction - target).square()), weights)
}

/// `mean_b(per_sample[b] * weights[b])`: `[B] -> [1]`.
fn weighted_mean(per_sample: Tensor<1>, weights: &[f32]) -> Tensor<1> {
    let device = per_sample.device();
    let b = weights.len();
    let w = Tensor::<1>::from_data(
        burn::tensor::TensorData::new(weights.to_vec(), [b]),
        &device,
    );
    (per_sample * w).mean()
}

/// Per-sample MSE with a per-position weight map, normalised by the weights:
/// `sum(w * (p - t)^2) / (C * sum(w))` per sample, `[B]`. `prediction`, `target`: `[B, C, ...]`;
/// `pixel_weights`: `[B, 1, ...]` (one weight per position, shared by the channels), all
/// finite and >= 0 with a positive sum per sample. With every weight equal it is the
/// per-sample MSE.
fn pixel_weighted_per_sample<const D: usize>(
    prediction: Tensor<D>,
    target: Tensor<D>,
    pixel_weights: Tensor<D>,
) -> Tensor<1> {
    let dims = prediction.dims();
    let (b, c) = (dims[0], dims[1].max(1));
    let rest: usize = dims[1..].iter().product();
    let positions: usize = dims[2..].iter().product();
    let num = ((prediction - target).square() * pixel_weights.clone()) // [B, C, ...]
        .reshape([b, rest.max(1)])
        .sum_dim(1)
        .reshape([b]);
    let den = pixel_weights
        .reshape([b, positions.max(1)])
        .sum_dim(1)
        .reshape([b])
        .mul_scalar(c as f32);
    num / den
}

/// Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats (broadcasting).
pub fn normal_kl<const D: usize>(
    mean1: Tensor<D>,
    logvar1: Tensor<D>,
    mean2: Tensor<D>,
    logvar2: Tensor<D>,
) -> Tensor<D> {
    let diff = logvar1.clone() - logvar2.clone();
    ((logvar2.clone() - logvar1).add_scalar(-1.0)
        + diff.exp()
        + (mean1 - mean2).square() * logvar2.neg().exp())
    .mul_scalar(0.5)
}

/// `0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`: the CDF approximation of improved DDPM.
fn approx_standard_normal_cdf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let k = (2.0 / std::f32::consts::PI).sqrt();
    (x.clone() + x.powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar(k)
        .tanh()
        .add_scalar(1.0)
        .mul_scalar(0.5)
}

/// Elementwise log-likelihood (nats) of data `x` in [-1, 1] quantised to 256 levels under
/// `N(means, exp(2 log_scales))`, the edge bins extended to infinity (improved DDPM).
pub fn discretized_gaussian_log_likelihood<const D: usize>(
    x: Tensor<D>,
    means: Tensor<D>,
    log_scales: Tensor<D>,
) -> Tensor<D> {
    let centered = x.clone() - means;
    let inv_stdv = log_scales.neg().exp();
    let cdf_plus =
        approx_standard_normal_cdf(centered.clone().add_scalar(1.0 / 255.0) * inv_stdv.clone());
    let cdf_min = approx_standard_normal_cdf(centered.add_scalar(-1.0 / 255.0) * inv_stdv);
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    let log_one_minus_cdf_min = cdf_min.clone().neg().add_scalar(1.0).clamp_min(1e-12).log();
    let log_cdf_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    log_cdf_delta
        .mask_where(x.clone().lower_elem(-0.999), log_cdf_plus)
        .mask_where(x.greater_elem(0.999), log_one_minus_cdf_min)
}

/// Elementwise continuous Gaussian log-likelihood (nats).
pub fn gaussian_log_likelihood<const D: usize>(
    x: Tensor<D>,
    means: Tensor<D>,
    log_var: Tensor<D>,
) -> Tensor<D> {
    let ln_2pi = (2.0 * std::f32::consts::PI).ln();
    ((x - means).square() * log_var.clone().neg().exp() + log_var)
        .add_scalar(ln_2pi)
        .mul_scalar(-0.5)
}

/// The likelihood term of the VLB at `t = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum T0Likelihood {
    /// Images in [-1, 1] with 256 levels (decoder, upsamplers).
    #[default]
    DiscretizedGaussian,
    /// Continuous data (the prior's embeddings).
    Gaussian,
}

/// Settings of the hybrid loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridLossConfig {
    /// Weight of `L_vlb = T * E_t[L_t]` (improved DDPM: 0.001).
    pub lambda: f32,
    pub t0_likelihood: T0Likelihood,
}

impl Default for HybridLossConfig {
    fn default() -> Self {
        HybridLossConfig {
            lambda: 0.001,
            t0_likelihood: T0Likelihood::DiscretizedGaussian,
        }
    }
}

/// The terms of a training loss (each `[1]`).
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// What to call `backward()` on: `mse + lambda * T * vlb` (or `mse` alone).
    pub loss: Tensor<1>,
    /// The simple loss on the prediction channels.
    pub mse: Tensor<1>,
    /// Mean VLB term `E_t[L_t]` in bits per dimension (learned-range variance only).
    pub vlb: Option<Tensor<1>>,
}

/// The VLB terms `L_t` per sample, `[B]`, in bits per dimension.
///
/// - `prediction`: `[B, C, ...]` model prediction of `prediction_type` (its gradient is stopped
///   here);
/// - `variance_values`: `[B, C, ...]` learned-range values in [-1, 1] (gradients flow);
/// - `x0`, `x_t`: `[B, C, ...]`; `timesteps`: `B` training timesteps.
#[allow(clippy::too_many_arguments)]
pub fn vlb_terms<const D: usize>(
    schedule: &NoiseSchedule,
    prediction_type: PredictionType,
    prediction: Tensor<D>,
    variance_values: Tensor<D>,
    x0: Tensor<D>,
    x_t: Tensor<D>,
    timesteps: &[usize],
    t0_likelihood: T0Likelihood,
) -> Result<Tensor<1>, DiffusionError> {
    same_shape("variance_values", &variance_values, &x0)?;
    let device = x0.device();
    let (true_mean, true_log_var) =
        schedule.posterior_mean_log_variance(x0.clone(), x_t.clone(), timesteps)?;
    let (x0_pred, _) =
        schedule.to_x0_eps(prediction_type, prediction.detach(), x_t.clone(), timesteps)?;
    let (model_mean, _) = schedule.posterior_mean_log_variance(x0_pred, x_t, timesteps)?;
    let post: Vec<_> = timesteps.iter().map(|&t| schedule.posterior(t)).collect();
    let min_log: Tensor<D> = per_sample(
        post.iter().map(|p| p.log_variance_clipped).collect(),
        &device,
    );
    let max_log: Tensor<D> = per_sample(post.iter().map(|p| p.log_beta).collect(), &device);
    let frac = variance_values.add_scalar(1.0).mul_scalar(0.5);
    let model_log_var = frac.clone() * max_log + frac.neg().add_scalar(1.0) * min_log;

    let ln2 = std::f32::consts::LN_2;
    let kl = mean_per_sample(normal_kl(
        true_mean,
        true_log_var,
        model_mean.clone(),
        model_log_var.clone(),
    ))
    .div_scalar(ln2);
    let nll = match t0_likelihood {
        T0Likelihood::DiscretizedGaussian => {
            discretized_gaussian_log_likelihood(x0, model_mean, model_log_var.mul_scalar(0.5))
        }
        T0Likelihood::Gaussian => gaussian_log_likelihood(x0, model_mean, model_log_var),
    };
    let nll = mean_per_sample(nll).neg().div_scalar(ln2);
    let is_t0: Tensor<1> = per_sample(
        timesteps
            .iter()
            .map(|&t| if t == 0 { 1.0 } else { 0.0 })
            .collect(),
        &device,
    );
    Ok(nll * is_t0.clone() + kl * is_t0.neg().add_scalar(1.0))
}

/// A training objective: the schedule, the prediction target and the variance model of a
/// scheduler configuration.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use unclip_diffusion::{NoiseSource, SchedulerConfig, SeededNoise, TrainingObjective, VarianceType};
///
/// let device = Device::flex().autodiff();
/// let cfg = SchedulerConfig { variance_type: VarianceType::LearnedRange, ..Default::default() };
/// let objective = TrainingObjective::new(&cfg);
/// let mut rng = SeededNoise::new(0);
/// let x0 = Tensor::<4>::zeros([2, 3, 4, 4], &device);               // [B, C, H, W] in [-1, 1]
/// let noise = rng.randn([2, 3, 4, 4], &device).unwrap();
/// let t = objective.sample_timesteps(rng.rng_mut(), 2);
/// let x_t = objective.noisy_input(x0.clone(), noise.clone(), &t).unwrap();
/// let model_output = Tensor::<4>::zeros([2, 6, 4, 4], &device).require_grad(); // eps + variance
/// let terms = objective.loss(model_output, x0, noise, x_t, &t).unwrap();
/// let _grads = terms.loss.backward();
/// ```
#[derive(Debug, Clone)]
pub struct TrainingObjective {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    variance_type: VarianceType,
    hybrid: HybridLossConfig,
    weighting: LossWeighting,
}

impl TrainingObjective {
    pub fn new(config: &SchedulerConfig) -> Self {
        TrainingObjective {
            schedule: NoiseSchedule::from_config(config),
            prediction_type: config.prediction_type,
            variance_type: config.variance_type,
            hybrid: HybridLossConfig::default(),
            weighting: LossWeighting::Uniform,
        }
    }

    /// Sets the per-timestep weighting of the simple loss (default [`LossWeighting::Uniform`]).
    pub fn with_weighting(mut self, weighting: LossWeighting) -> Result<Self, DiffusionError> {
        weighting.validate()?;
        self.weighting = weighting;
        Ok(self)
    }

    pub fn weighting(&self) -> LossWeighting {
        self.weighting
    }

    /// The simple loss: plain MSE, or the weighted per-sample MSE (per timestep and/or per
    /// position).
    fn simple_loss<const D: usize>(
        &self,
        prediction: Tensor<D>,
        target: Tensor<D>,
        timesteps: &[usize],
        pixel_weights: Option<Tensor<D>>,
    ) -> Tensor<1> {
        if self.weighting == LossWeighting::Uniform {
            return match pixel_weights {
                None => mse(prediction, target),
                Some(w) => pixel_weighted_per_sample(prediction, target, w).mean(),
            };
        }
        let weights: Vec<f32> = timesteps
            .iter()
            .map(|&t| {
                let a = self.schedule.alpha_bar(t as i64);
                let snr = a / (1.0 - a).max(f32::MIN_POSITIVE);
                self.weighting.target_weight(self.prediction_type, snr)
            })
            .collect();
        match pixel_weights {
            None => weighted_mse(prediction, target, &weights),
            Some(pw) => weighted_mean(pixel_weighted_per_sample(prediction, target, pw), &weights),
        }
    }

    /// Overrides the hybrid-loss settings (used with learned-range variance).
    pub fn with_hybrid(mut self, hybrid: HybridLossConfig) -> Self {
        self.hybrid = hybrid;
        self
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }

    /// Whether the model must output `2C` channels (prediction + variance values).
    pub fn learns_variance(&self) -> bool {
        self.variance_type == VarianceType::LearnedRange
    }

    /// Uniform training timesteps for a batch.
    pub fn sample_timesteps<R: Rng + ?Sized>(&self, rng: &mut R, batch: usize) -> Vec<usize> {
        sample_timesteps(rng, batch, self.schedule.num_train_timesteps())
    }

    /// `x_t = sqrt(a_t) x0 + sqrt(1-a_t) noise`, `[B, C, ...]`.
    pub fn noisy_input<const D: usize>(
        &self,
        x0: Tensor<D>,
        noise: Tensor<D>,
        timesteps: &[usize],
    ) -> Result<Tensor<D>, DiffusionError> {
        self.schedule.q_sample(x0, noise, timesteps)
    }

    /// The loss of a model output at `x_t` (`[B, C, ...]`, or `[B, 2C, ...]` with learned-range
    /// variance: prediction channels first). `x0`, `noise`, `x_t`: `[B, C, ...]`.
    pub fn loss<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x0: Tensor<D>,
        noise: Tensor<D>,
        x_t: Tensor<D>,
        timesteps: &[usize],
    ) -> Result<LossTerms, DiffusionError> {
        self.loss_with_pixel_weights(model_output, x0, noise, x_t, timesteps, None)
    }

    /// [`TrainingObjective::loss`] with the simple loss weighted per position:
    /// `pixel_weights` `[B, 1, ...]` (finite, >= 0, a positive sum per sample) multiplies each
    /// position's squared error in all channels, and each sample's error is divided by its
    /// weights' sum, so uniform weights give the plain loss. Lets a trainer spend the loss
    /// where the content is (e.g. a small object on a flat background) instead of in proportion
    /// to its area. The VLB term (learned variance) is not weighted. `None` is
    /// [`TrainingObjective::loss`].
    pub fn loss_with_pixel_weights<const D: usize>(
        &self,
        model_output: Tensor<D>,
        x0: Tensor<D>,
        noise: Tensor<D>,
        x_t: Tensor<D>,
        timesteps: &[usize],
        pixel_weights: Option<Tensor<D>>,
    ) -> Result<LossTerms, DiffusionError> {
        if let Some(w) = &pixel_weights {
            let (wd, xd) = (w.dims(), x0.dims());
            if D < 2 || wd[0] != xd[0] || wd[1] != 1 || wd[2..] != xd[2..] {
                return Err(DiffusionError::ShapeMismatch {
                    what: "pixel_weights",
                    found: wd.to_vec(),
                    expected: format!("{xd:?} with one channel"),
                });
            }
            let host: Vec<f32> = w
                .clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| DiffusionError::InvalidArgument {
                    what: "pixel_weights",
                    message: format!("{e:?}"),
                })?;
            let per = host.len() / xd[0].max(1);
            let bad = host.iter().any(|v| !v.is_finite() || *v < 0.0)
                || host
                    .chunks(per.max(1))
                    .any(|c| c.iter().sum::<f32>() <= 0.0);
            if bad {
                return Err(DiffusionError::InvalidArgument {
                    what: "pixel_weights",
                    message: "weights must be finite and >= 0 with a positive sum per sample"
                        .into(),
                });
            }
        }
        let target = self
            .schedule
            .target(self.prediction_type, x0.clone(), noise, timesteps)?;
        let dims = x0.dims();
        let out = model_output.dims();
        match self.variance_type {
            VarianceType::FixedSmallLog => {
                same_shape("model_output", &model_output, &x0)?;
                let mse = self.simple_loss(model_output, target, timesteps, pixel_weights);
                Ok(LossTerms {
                    loss: mse.clone(),
                    mse,
                    vlb: None,
                })
            }
            VarianceType::LearnedRange => {
                if D < 2 || out[0] != dims[0] || out[1] != 2 * dims[1] || out[2..] != dims[2..] {
                    return Err(DiffusionError::ShapeMismatch {
                        what: "model_output",
                        found: out.to_vec(),
                        expected: format!(
                            "{dims:?} with twice the channels (learned_range variance)"
                        ),
                    });
                }
                let c = dims[1];
                let prediction = model_output.clone().narrow(1, 0, c);
                let variance_values = model_output.narrow(1, c, c);
                let mse = self.simple_loss(prediction.clone(), target, timesteps, pixel_weights);
                let vlb = vlb_terms(
                    &self.schedule,
                    self.prediction_type,
                    prediction,
                    variance_values,
                    x0,
                    x_t,
                    timesteps,
                    self.hybrid.t0_likelihood,
                )?
                .mean();
                let weight = self.hybrid.lambda * self.schedule.num_train_timesteps() as f32;
                let loss = mse.clone() + vlb.clone().mul_scalar(weight);
                Ok(LossTerms {
                    loss,
                    mse,
                    vlb: Some(vlb),
                })
            }
        }
    }
}
