//! `UnCLIPScheduler` (diffusers 0.42 `scheduling_unclip.py`), plus DDIM steps and DDIM inversion
//! on the same schedule.
//!
//! Scalars (cumulative alphas, betas re-derived for skipped steps, coefficients) are computed on
//! the host in f32 with the operation order of the torch code, so the traces of the reference
//! implementation are matched to float32 rounding.

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing, VarianceType};
use crate::error::DiffusionError;
use crate::noise::{NoiseSource, randn};
use crate::schedule::NoiseSchedule;

/// The result of one reverse step.
#[derive(Debug, Clone)]
pub struct StepOutput<const D: usize> {
    /// `x_{prev}`: `[B, C, ...]`, the next step's sample.
    pub prev_sample: Tensor<D>,
    /// The predicted `x0` after clipping / thresholding: `[B, C, ...]`.
    pub pred_original_sample: Tensor<D>,
}

/// Which reverse update [`UnCLIPScheduler::denoise`] and
/// [`UnCLIPScheduler::step_with`] apply.
///
/// In JSON (a model folder's `unclip_settings.json`): `"ancestral"` or `{"ddim": {"eta": 0.0}}`.
/// On a command line ([`Sampler::parse`]): `ancestral`, `ddim` (eta 0) or `ddim:<eta>`.
///
/// ```
/// use unclip_diffusion::Sampler;
/// assert_eq!(Sampler::parse("ddim:0.5").unwrap(), Sampler::Ddim { eta: 0.5 });
/// assert_eq!(Sampler::parse("ancestral").unwrap(), Sampler::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// [`UnCLIPScheduler::step`]: Karlo's ancestral (DDPM-style) step.
    #[default]
    Ancestral,
    /// [`UnCLIPScheduler::ddim_step`] with this `eta` (0: deterministic).
    Ddim { eta: f32 },
}

impl Sampler {
    /// Parses `ancestral`, `ddim` (eta 0) or `ddim:<eta>` (`eta` finite and >= 0).
    pub fn parse(text: &str) -> Result<Sampler, DiffusionError> {
        let bad = |message: String| DiffusionError::InvalidArgument {
            what: "sampler",
            message,
        };
        match text.split_once(':') {
            None if text == "ancestral" => Ok(Sampler::Ancestral),
            None if text == "ddim" => Ok(Sampler::Ddim { eta: 0.0 }),
            Some(("ddim", eta)) => {
                let eta: f32 = eta
                    .parse()
                    .map_err(|_| bad(format!("`{eta}` in `{text}` is not a number")))?;
                if eta.is_finite() && eta >= 0.0 {
                    Ok(Sampler::Ddim { eta })
                } else {
                    Err(bad(format!("eta must be finite and >= 0, got {eta}")))
                }
            }
            _ => Err(bad(format!(
                "`{text}`: expected `ancestral`, `ddim` or `ddim:<eta>`"
            ))),
        }
    }
}

impl std::fmt::Display for Sampler {
    /// The form [`Sampler::parse`] reads back: `ancestral` or `ddim:<eta>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sampler::Ancestral => write!(f, "ancestral"),
            Sampler::Ddim { eta } => write!(f, "ddim:{eta}"),
        }
    }
}

impl std::str::FromStr for Sampler {
    type Err = DiffusionError;

    /// [`Sampler::parse`] (so command-line parsers such as clap take a `Sampler` directly).
    fn from_str(text: &str) -> Result<Sampler, DiffusionError> {
        Sampler::parse(text)
    }
}

/// The scalars of one step from `t` to `prev_timestep` (f32, as torch computes them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoefficients {
    pub t: usize,
    /// `-1` for the clean sample.
    pub prev_timestep: i64,
    pub alpha_prod_t: f32,
    pub alpha_prod_t_prev: f32,
    pub beta_prod_t: f32,
    pub beta_prod_t_prev: f32,
    /// `betas[t]` for a single step, else `1 - alpha_prod_t / alpha_prod_t_prev`.
    pub beta: f32,
    pub alpha: f32,
}

/// Karlo's modified DDPM scheduler, as diffusers' `UnCLIPScheduler`.
///
/// - [`set_timesteps`](Self::set_timesteps)`(N)`: `round_half_even(arange(N) * (T-1)/(N-1))`
///   reversed; `N < 2` (diffusers divides by zero) and `N > T` are errors.
/// - [`step`](Self::step): one ancestral step from `t` to `prev_timestep` (`None`: `t - 1`),
///   with beta re-derived for skipped steps, `fixed_small_log` or `learned_range` variance,
///   clipping (or dynamic thresholding) of the predicted x0, and no noise at `t == 0`.
/// - [`ddim_step`](Self::ddim_step) / [`ddim_invert`](Self::ddim_invert): DDIM on the same schedule.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use unclip_diffusion::{SchedulerConfig, SeededNoise, UnCLIPScheduler, VarianceType};
///
/// let device = Device::flex();
/// let config = SchedulerConfig { variance_type: VarianceType::LearnedRange, ..Default::default() };
/// let mut scheduler = UnCLIPScheduler::new(config);
/// scheduler.set_timesteps(5).unwrap();
/// assert_eq!(scheduler.timesteps(), &[999, 749, 500, 250, 0]);
///
/// let mut noise = SeededNoise::new(0);
/// // x_T: [B, C, H, W]
/// let mut sample = unclip_diffusion::randn(&mut noise, [1, 3, 8, 8], &device).unwrap();
/// for (t, prev) in scheduler.timestep_pairs() {
///     // a model would predict eps (3 channels) + variance values in [-1, 1] (3 channels)
///     let model_output = Tensor::<4>::zeros([1, 6, 8, 8], &device);
///     sample = scheduler.step(model_output, t, sample, prev, &mut noise).unwrap().prev_sample;
/// }
/// assert_eq!(sample.dims(), [1, 3, 8, 8]);
/// ```
#[derive(Debug, Clone)]
pub struct UnCLIPScheduler {
    config: SchedulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
}

impl UnCLIPScheduler {
    /// A scheduler for `config`; its timesteps are the whole training schedule until
    /// [`set_timesteps`](Self::set_timesteps) is called.
    pub fn new(config: SchedulerConfig) -> Self {
        let schedule = NoiseSchedule::from_config(&config);
        let timesteps = (0..config.num_train_timesteps).rev().collect();
        UnCLIPScheduler {
            config,
            schedule,
            timesteps,
        }
    }

    /// Reads `scheduler_config.json` (file or folder).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, unclip_nn::LoadError> {
        Ok(Self::new(SchedulerConfig::from_file(path)?))
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The standard deviation of the initial noise (1 for this scheduler).
    pub fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// Sets `N` inference timesteps: `round_half_even(i * (T-1)/(N-1))` for `i` in `0..N`,
    /// in descending order.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), DiffusionError> {
        self.timesteps = match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                unclip_timesteps(self.config.num_train_timesteps, num_inference_steps)?
            }
            TimestepSpacing::Leading => {
                leading_timesteps(self.config.num_train_timesteps, num_inference_steps)?
            }
        };
        Ok(())
    }

    /// The current timesteps, descending.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// `(t_i, t_{i+1})` pairs of the current timesteps, `None` for the last one: exactly the
    /// `timestep` / `prev_timestep` arguments the Karlo pipeline passes to [`step`](Self::step).
    pub fn timestep_pairs(&self) -> Vec<(usize, Option<usize>)> {
        let ts = &self.timesteps;
        (0..ts.len())
            .map(|i| (ts[i], ts.get(i + 1).copied()))
            .collect()
    }

    /// The scalars of a step from `t` to `prev_timestep` (`None`: `t - 1`).
    pub fn coefficients(
        &self,
        t: usize,
        prev_timestep: Option<usize>,
    ) -> Result<StepCoefficients, DiffusionError> {
        let n = self.schedule.num_train_timesteps();
        if t >= n {
            return Err(DiffusionError::TimestepOutOfRange {
                t,
                num_train_timesteps: n,
            });
        }
        if let Some(prev) = prev_timestep
            && prev >= t
        {
            return Err(DiffusionError::InvalidPrevTimestep { t, prev });
        }
        let prev = prev_timestep.map(|p| p as i64).unwrap_or(t as i64 - 1);
        let alpha_prod_t = self.schedule.alphas_cumprod()[t];
        let alpha_prod_t_prev = self.schedule.alpha_bar(prev);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let (beta, alpha) = if prev == t as i64 - 1 {
            (self.schedule.betas()[t], self.schedule.alphas()[t])
        } else {
            let beta = 1.0 - alpha_prod_t / alpha_prod_t_prev;
            (beta, 1.0 - beta)
        };
        Ok(StepCoefficients {
            t,
            prev_timestep: prev,
            alpha_prod_t,
            alpha_prod_t_prev,
            beta_prod_t,
            beta_prod_t_prev,
            beta,
            alpha,
        })
    }

    /// Splits `model_output` `[B, 2C, ...]` into `[B, C, ...]` prediction and `[B, C, ...]`
    /// variance values when the channel count is twice the sample's; checks shapes.
    fn split_output<const D: usize>(
        &self,
        model_output: Tensor<D>,
        sample: &Tensor<D>,
    ) -> Result<(Tensor<D>, Option<Tensor<D>>), DiffusionError> {
        let mo = model_output.dims();
        let s = sample.dims();
        let mismatch = |expected: String| DiffusionError::ShapeMismatch {
            what: "model_output",
            found: mo.to_vec(),
            expected,
        };
        if mo == s {
            return Ok((model_output, None));
        }
        let doubled = D >= 2 && mo[0] == s[0] && mo[1] == 2 * s[1] && mo[2..] == s[2..];
        if doubled {
            let c = s[1];
            let pred = model_output.clone().narrow(1, 0, c);
            let var = model_output.narrow(1, c, c);
            return Ok((pred, Some(var)));
        }
        Err(mismatch(format!(
            "the sample's shape {s:?}, or twice its channels (learned variance)"
        )))
    }

    fn check_sample<const D: usize>(sample: &Tensor<D>) -> Result<(), DiffusionError> {
        if D == 0 || sample.dims().contains(&0) {
            return Err(DiffusionError::ShapeMismatch {
                what: "sample",
                found: sample.dims().to_vec(),
                expected: "a non-empty [B, ...] tensor".into(),
            });
        }
        Ok(())
    }

    /// Clips (`clip_sample`) or dynamically thresholds (`thresholding`) a predicted x0.
    fn clip_x0<const D: usize>(&self, x0: Tensor<D>) -> Result<Tensor<D>, DiffusionError> {
        if self.config.thresholding {
            dynamic_threshold(
                x0,
                self.config.dynamic_thresholding_ratio,
                self.config.sample_max_value,
            )
        } else if self.config.clip_sample {
            let r = self.config.clip_sample_range;
            Ok(x0.clamp(-r, r))
        } else {
            Ok(x0)
        }
    }

    /// One reverse step `x_t -> x_{prev}` (diffusers `UnCLIPScheduler.step`).
    ///
    /// - `model_output`: `[B, C, ...]`, or `[B, 2C, ...]` with `learned_range` (prediction
    ///   channels first, then variance values in [-1, 1]);
    /// - `t`: the current timestep; `prev_timestep`: the next (smaller) timestep of the schedule,
    ///   `None` for `t - 1` (the single-step branch that uses `betas[t]`);
    /// - `sample`: `x_t`, `[B, C, ...]`;
    /// - `noise`: one `[B, C, ...]` draw when `t > 0`, none at `t == 0`.
    pub fn step<const D: usize, N: NoiseSource + ?Sized>(
        &self,
        model_output: Tensor<D>,
        t: usize,
        sample: Tensor<D>,
        prev_timestep: Option<usize>,
        noise: &mut N,
    ) -> Result<StepOutput<D>, DiffusionError> {
        Self::check_sample(&sample)?;
        let c = self.coefficients(t, prev_timestep)?;
        let output_dims = model_output.dims().to_vec();
        let (model_output, predicted_variance) = self.split_output(model_output, &sample)?;
        let predicted_variance = match self.config.variance_type {
            VarianceType::LearnedRange => match predicted_variance {
                Some(v) => Some(v),
                None if t == 0 => None,
                None => {
                    return Err(DiffusionError::ShapeMismatch {
                        what: "model_output",
                        found: model_output.dims().to_vec(),
                        expected: format!(
                            "twice the sample's {} channels: learned_range needs variance channels",
                            sample.dims().get(1).copied().unwrap_or(0)
                        ),
                    });
                }
            },
            VarianceType::FixedSmallLog => {
                if predicted_variance.is_some() {
                    return Err(DiffusionError::ShapeMismatch {
                        what: "model_output",
                        found: output_dims,
                        expected: format!(
                            "the sample's shape {:?} (fixed_small_log has no variance channels)",
                            sample.dims()
                        ),
                    });
                }
                None
            }
        };

        // 2. predicted x0
        let pred_original_sample = match self.config.prediction_type {
            PredictionType::Epsilon => (sample.clone()
                - model_output.mul_scalar(c.beta_prod_t.sqrt()))
            .div_scalar(c.alpha_prod_t.sqrt()),
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => {
                sample.clone().mul_scalar(c.alpha_prod_t.sqrt())
                    - model_output.mul_scalar(c.beta_prod_t.sqrt())
            }
        };
        // 3. clip
        let pred_original_sample = self.clip_x0(pred_original_sample)?;

        // 4-5. posterior mean
        let x0_coeff = (c.alpha_prod_t_prev.sqrt() * c.beta) / c.beta_prod_t;
        let xt_coeff = c.alpha.sqrt() * c.beta_prod_t_prev / c.beta_prod_t;
        let mut prev_sample =
            pred_original_sample.clone().mul_scalar(x0_coeff) + sample.clone().mul_scalar(xt_coeff);

        // 6. noise
        if t > 0 {
            let device = sample.device();
            let variance_noise: Tensor<D> = randn(noise, sample.dims(), &device)?;
            let variance = c.beta_prod_t_prev / c.beta_prod_t * c.beta;
            let scaled = match (self.config.variance_type, predicted_variance) {
                (VarianceType::LearnedRange, Some(v)) => {
                    let min_log = variance.ln();
                    let max_log = c.beta.ln();
                    let frac = v.add_scalar(1.0).div_scalar(2.0);
                    let log_var = frac.clone().mul_scalar(max_log)
                        + frac.neg().add_scalar(1.0).mul_scalar(min_log);
                    log_var.mul_scalar(0.5).exp() * variance_noise
                }
                _ => {
                    let std = (0.5 * variance.max(1e-20).ln()).exp();
                    variance_noise.mul_scalar(std)
                }
            };
            prev_sample = prev_sample + scaled;
        }
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }

    /// One DDIM step `x_t -> x_{prev}` (diffusers `DDIMScheduler.step` with
    /// `set_alpha_to_one` and `use_clipped_model_output = true`, GLIDE's choice): deterministic
    /// for `eta == 0`, one `[B, C, ...]` noise draw when `eta > 0`. Variance channels of a
    /// learned-variance output are ignored. `prev_timestep`: `None` for `t - 1` (`-1`: the
    /// clean sample).
    ///
    /// The noise direction is re-derived from the clipped (or thresholded) `x_0`,
    /// `eps = (x_t - sqrt(a_t) x_0) / sqrt(1 - a_t)`, so that `x_t`, `x_0` and `eps` stay
    /// consistent, as in the ancestral [`step`](Self::step), whose posterior mean uses the
    /// clipped `x_0`. diffusers' default (`use_clipped_model_output = false`) keeps the
    /// unclipped eps: under classifier-free guidance the guided `x_0` overshoots [-1, 1], the
    /// clip removes the overshoot from `x_0` but the eps term carries it into `x_prev`, and the
    /// samples fill with noise (the shapes decoder: oracle position 25% instead of 100%,
    /// docs/shapes.md). Without clipping both choices are the same.
    pub fn ddim_step<const D: usize, N: NoiseSource + ?Sized>(
        &self,
        model_output: Tensor<D>,
        t: usize,
        sample: Tensor<D>,
        prev_timestep: Option<usize>,
        eta: f32,
        noise: &mut N,
    ) -> Result<StepOutput<D>, DiffusionError> {
        Self::check_sample(&sample)?;
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(DiffusionError::InvalidArgument {
                what: "ddim_step eta",
                message: format!("must be a finite number >= 0, got {eta}"),
            });
        }
        let c = self.coefficients(t, prev_timestep)?;
        let (model_output, _) = self.split_output(model_output, &sample)?;
        let (x0, eps) = to_x0_eps_scalar(
            self.config.prediction_type,
            model_output,
            sample.clone(),
            c.alpha_prod_t,
        );
        let x0 = self.clip_x0(x0)?;
        // eps consistent with the clipped x_0 (see the doc above); [B, C, ...]. Unclipped, the
        // model's own eps is the same quantity without the division's rounding.
        let eps = if self.config.thresholding || self.config.clip_sample {
            (sample.clone() - x0.clone().mul_scalar(c.alpha_prod_t.sqrt()))
                .div_scalar(c.beta_prod_t.max(1e-20).sqrt())
        } else {
            eps
        };
        let variance =
            (c.beta_prod_t_prev / c.beta_prod_t) * (1.0 - c.alpha_prod_t / c.alpha_prod_t_prev);
        let std = eta * variance.max(0.0).sqrt();
        let dir_coeff = (1.0 - c.alpha_prod_t_prev - std * std).max(0.0).sqrt();
        let mut prev_sample =
            x0.clone().mul_scalar(c.alpha_prod_t_prev.sqrt()) + eps.mul_scalar(dir_coeff);
        if eta > 0.0 {
            let device = sample.device();
            let z: Tensor<D> = randn(noise, sample.dims(), &device)?;
            prev_sample = prev_sample + z.mul_scalar(std);
        }
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }

    /// DDIM inversion (eta = 0): maps a clean `x0` `[B, C, ...]` to `x_T` by running the DDIM
    /// update backwards through `timesteps` (given in sampling order, descending, e.g.
    /// [`timesteps`](Self::timesteps); walked from the last to the first).
    ///
    /// `model(x, t)` returns the model output for `x` at timestep `t` (its variance channels, if
    /// any, are ignored). As in diffusers' `DDIMInverseScheduler`, the model is evaluated at the
    /// target timestep `t` with the current (less noisy) `x`; no clipping is applied. Sampling
    /// back with [`ddim_step`](Self::ddim_step) (eta 0, same timesteps) recovers `x0` up to the
    /// discretisation error of that approximation.
    pub fn ddim_invert<const D: usize, E, F>(
        &self,
        x0: Tensor<D>,
        timesteps: &[usize],
        mut model: F,
    ) -> Result<Tensor<D>, E>
    where
        E: From<DiffusionError>,
        F: FnMut(Tensor<D>, usize) -> Result<Tensor<D>, E>,
    {
        Self::check_sample(&x0)?;
        self.schedule.check_timesteps(timesteps)?;
        if timesteps.windows(2).any(|w| w[1] >= w[0]) {
            return Err(DiffusionError::InvalidArgument {
                what: "ddim_invert timesteps",
                message: "must be strictly descending (sampling order)".into(),
            }
            .into());
        }
        let mut x = x0;
        let mut alpha_cur = 1.0f32;
        // x: [B, C, ...] at noise level alpha_cur (1: clean)
        for &t in timesteps.iter().rev() {
            let alpha_next = self.schedule.alphas_cumprod()[t];
            let output = model(x.clone(), t)?;
            let (output, _) = self.split_output(output, &x)?;
            let (_, eps) =
                to_x0_eps_scalar(self.config.prediction_type, output, x.clone(), alpha_next);
            let x0_pred =
                (x - eps.clone().mul_scalar((1.0 - alpha_cur).sqrt())).div_scalar(alpha_cur.sqrt());
            x = x0_pred.mul_scalar(alpha_next.sqrt()) + eps.mul_scalar((1.0 - alpha_next).sqrt());
            alpha_cur = alpha_next;
        }
        Ok(x)
    }

    /// `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise` per sample (diffusers `add_noise`);
    /// `x0`, `noise`: `[B, ...]`, `timesteps`: `B` values.
    pub fn add_noise<const D: usize>(
        &self,
        x0: Tensor<D>,
        noise: Tensor<D>,
        timesteps: &[usize],
    ) -> Result<Tensor<D>, DiffusionError> {
        self.schedule.q_sample(x0, noise, timesteps)
    }

    /// Runs the whole reverse process over the current [`timesteps`](Self::timesteps) from
    /// `x_T` `[B, C, ...]`: `model(x_t, t)` gives the (already guided) model output, `sampler`
    /// picks [`step`](Self::step) (ancestral, Karlo) or [`ddim_step`](Self::ddim_step).
    /// With `set_timesteps(T)` the ancestral sampler is plain DDPM over the full schedule.
    pub fn denoise<const D: usize, E, F, N>(
        &self,
        x_t: Tensor<D>,
        sampler: Sampler,
        noise: &mut N,
        mut model: F,
    ) -> Result<Tensor<D>, E>
    where
        E: From<DiffusionError>,
        F: FnMut(Tensor<D>, usize) -> Result<Tensor<D>, E>,
        N: NoiseSource + ?Sized,
    {
        let mut x = x_t;
        for (t, prev) in self.timestep_pairs() {
            let output = model(x.clone(), t)?;
            x = self
                .step_with(sampler, output, t, x, prev, noise)?
                .prev_sample;
        }
        Ok(x)
    }

    /// One reverse step with the given sampler: [`step`](Self::step) or
    /// [`ddim_step`](Self::ddim_step).
    pub fn step_with<const D: usize, N: NoiseSource + ?Sized>(
        &self,
        sampler: Sampler,
        model_output: Tensor<D>,
        t: usize,
        sample: Tensor<D>,
        prev_timestep: Option<usize>,
        noise: &mut N,
    ) -> Result<StepOutput<D>, DiffusionError> {
        match sampler {
            Sampler::Ancestral => self.step(model_output, t, sample, prev_timestep, noise),
            Sampler::Ddim { eta } => {
                self.ddim_step(model_output, t, sample, prev_timestep, eta, noise)
            }
        }
    }
}

/// `(x0, eps)` from a model output at a noise level `alpha_prod` (one scalar for the batch).
fn to_x0_eps_scalar<const D: usize>(
    prediction_type: PredictionType,
    model_output: Tensor<D>,
    sample: Tensor<D>,
    alpha_prod: f32,
) -> (Tensor<D>, Tensor<D>) {
    let sa = alpha_prod.sqrt();
    let sb = (1.0 - alpha_prod).sqrt();
    match prediction_type {
        PredictionType::Epsilon => {
            let x0 = (sample - model_output.clone().mul_scalar(sb)).div_scalar(sa);
            (x0, model_output)
        }
        PredictionType::Sample => {
            let eps = (sample - model_output.clone().mul_scalar(sa)).div_scalar(sb);
            (model_output, eps)
        }
        PredictionType::VPrediction => {
            let x0 = sample.clone().mul_scalar(sa) - model_output.clone().mul_scalar(sb);
            let eps = model_output.mul_scalar(sa) + sample.mul_scalar(sb);
            (x0, eps)
        }
    }
}

/// `round_half_even(arange(N) * (T-1)/(N-1))`, descending (UnCLIPScheduler.set_timesteps).
/// diffusers' `"leading"` timesteps: `(0..n) * (T / n)`, descending (`T / n` integer division).
pub fn leading_timesteps(
    num_train_timesteps: usize,
    num_inference_steps: usize,
) -> Result<Vec<usize>, DiffusionError> {
    unclip_timesteps(num_train_timesteps, num_inference_steps)?; // the same bounds
    let ratio = num_train_timesteps / num_inference_steps;
    Ok((0..num_inference_steps).rev().map(|i| i * ratio).collect())
}

pub fn unclip_timesteps(
    num_train_timesteps: usize,
    num_inference_steps: usize,
) -> Result<Vec<usize>, DiffusionError> {
    if num_inference_steps < 2 {
        return Err(DiffusionError::TooFewInferenceSteps {
            requested: num_inference_steps,
        });
    }
    if num_inference_steps > num_train_timesteps {
        return Err(DiffusionError::TooManyInferenceSteps {
            requested: num_inference_steps,
            train: num_train_timesteps,
        });
    }
    let ratio = (num_train_timesteps - 1) as f64 / (num_inference_steps - 1) as f64;
    Ok((0..num_inference_steps)
        .rev()
        .map(|i| (i as f64 * ratio).round_ties_even() as usize)
        .collect())
}

/// Imagen's dynamic thresholding of a predicted x0 `[B, ...]`: per sample,
/// `s = clamp(quantile(|x0|, ratio), 1, max_value)`, `x0 = clamp(x0, -s, s) / s`
/// (torch.quantile's linear interpolation). Computed on the host.
pub fn dynamic_threshold<const D: usize>(
    x0: Tensor<D>,
    ratio: f32,
    max_value: f32,
) -> Result<Tensor<D>, DiffusionError> {
    let dims = x0.dims();
    let device: Device = x0.device();
    let mut values: Vec<f32> =
        x0.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| DiffusionError::InvalidArgument {
                what: "dynamic_threshold",
                message: format!("{e:?}"),
            })?;
    let b = dims.first().copied().unwrap_or(1).max(1);
    let row = values.len() / b;
    if row == 0 {
        return Ok(Tensor::from_data(TensorData::new(values, dims), &device));
    }
    let mut abs = vec![0f32; row];
    for chunk in values.chunks_mut(row) {
        for (a, v) in abs.iter_mut().zip(chunk.iter()) {
            *a = v.abs();
        }
        abs.sort_by(f32::total_cmp);
        let pos = ratio as f64 * (row - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(row - 1);
        let w = (pos - lo as f64) as f32;
        let q = abs[lo] + (abs[hi] - abs[lo]) * w;
        let s = q.clamp(1.0, max_value);
        for v in chunk.iter_mut() {
            *v = v.clamp(-s, s) / s;
        }
    }
    Ok(Tensor::from_data(TensorData::new(values, dims), &device))
}

#[cfg(test)]
mod tests {

    #[test]
    fn leading_spacing_skips_the_last_training_step() {
        let ts = leading_timesteps(1000, 25).unwrap();
        assert_eq!(ts.len(), 25);
        assert_eq!((ts[0], ts[1], ts[24]), (960, 920, 0));
        let cfg = SchedulerConfig::from_json_str(r#"{"timestep_spacing": "leading"}"#).unwrap();
        let mut s = UnCLIPScheduler::new(cfg);
        s.set_timesteps(25).unwrap();
        assert_eq!(s.timesteps(), ts.as_slice());
        // The default keeps diffusers' UnCLIPScheduler timesteps (from 999).
        let mut d = UnCLIPScheduler::new(SchedulerConfig::default());
        d.set_timesteps(25).unwrap();
        assert_eq!(d.timesteps()[0], 999);
        assert!(SchedulerConfig::from_json_str(r#"{"timestep_spacing": "trailing"}"#).is_err());
        assert!(leading_timesteps(1000, 1).is_err());
    }

    use super::*;

    #[test]
    fn timesteps_match_numpy_rounding() {
        assert_eq!(unclip_timesteps(1000, 2).unwrap(), vec![999, 0]);
        assert_eq!(unclip_timesteps(1000, 4).unwrap(), vec![999, 666, 333, 0]);
        assert_eq!(
            unclip_timesteps(1000, 7).unwrap(),
            vec![999, 832, 666, 500, 333, 166, 0]
        );
        assert_eq!(
            unclip_timesteps(1000, 1000).unwrap(),
            (0..1000).rev().collect::<Vec<_>>()
        );
        assert!(matches!(
            unclip_timesteps(1000, 1),
            Err(DiffusionError::TooFewInferenceSteps { requested: 1 })
        ));
        assert!(matches!(
            unclip_timesteps(1000, 0),
            Err(DiffusionError::TooFewInferenceSteps { .. })
        ));
        assert!(matches!(
            unclip_timesteps(10, 11),
            Err(DiffusionError::TooManyInferenceSteps { .. })
        ));
    }

    #[test]
    fn step_rejects_bad_inputs() {
        let device = Device::flex();
        let s = UnCLIPScheduler::new(SchedulerConfig::default());
        let mut noise = crate::SeededNoise::new(0);
        let x = Tensor::<4>::zeros([1, 3, 4, 4], &device);
        let bad = Tensor::<4>::zeros([1, 6, 4, 4], &device);
        assert!(matches!(
            s.step(bad, 10, x.clone(), None, &mut noise),
            Err(DiffusionError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            s.step(x.clone(), 1000, x.clone(), None, &mut noise),
            Err(DiffusionError::TimestepOutOfRange { t: 1000, .. })
        ));
        assert!(matches!(
            s.step(x.clone(), 10, x.clone(), Some(10), &mut noise),
            Err(DiffusionError::InvalidPrevTimestep { .. })
        ));
        let lr = UnCLIPScheduler::new(SchedulerConfig {
            variance_type: VarianceType::LearnedRange,
            ..Default::default()
        });
        assert!(matches!(
            lr.step(x.clone(), 10, x.clone(), None, &mut noise),
            Err(DiffusionError::ShapeMismatch { .. })
        ));
        let mut empty = crate::ReplayNoise::new();
        assert!(matches!(
            s.step(x.clone(), 10, x.clone(), None, &mut empty),
            Err(DiffusionError::Noise(crate::NoiseError::Exhausted { .. }))
        ));
        // t == 0 draws nothing
        assert!(s.step(x.clone(), 0, x, None, &mut empty).is_ok());
    }

    #[test]
    fn sampler_parses_and_round_trips_through_json() {
        assert_eq!(Sampler::parse("ancestral").unwrap(), Sampler::Ancestral);
        assert_eq!(Sampler::parse("ddim").unwrap(), Sampler::Ddim { eta: 0.0 });
        assert_eq!(
            "ddim:0.25".parse::<Sampler>().unwrap(),
            Sampler::Ddim { eta: 0.25 }
        );
        assert_eq!(
            Sampler::parse("ddim:1").unwrap(),
            Sampler::Ddim { eta: 1.0 }
        );
        // Display writes what parse reads.
        for s in [
            Sampler::Ancestral,
            Sampler::Ddim { eta: 0.0 },
            Sampler::Ddim { eta: 0.25 },
        ] {
            assert_eq!(Sampler::parse(&s.to_string()).unwrap(), s);
        }
        assert_eq!(Sampler::Ddim { eta: 0.5 }.to_string(), "ddim:0.5");
        for bad in [
            "",
            "euler",
            "ddim:",
            "ddim:x",
            "ddim:-1",
            "ddim:inf",
            "ancestral:1",
        ] {
            let err = Sampler::parse(bad).expect_err(bad);
            assert!(
                matches!(
                    err,
                    DiffusionError::InvalidArgument {
                        what: "sampler",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
        for (s, json) in [
            (Sampler::Ancestral, r#""ancestral""#),
            (Sampler::Ddim { eta: 0.5 }, r#"{"ddim":{"eta":0.5}}"#),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), json);
            assert_eq!(serde_json::from_str::<Sampler>(json).unwrap(), s);
        }
    }

    #[test]
    fn dynamic_thresholding_scales_rows() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![0.5, -0.2, 0.1, 0.3, 4.0, -4.0, 2.0, 1.0], [2, 4]),
            &device,
        );
        let y = dynamic_threshold(x, 1.0, 3.0)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // row 0: quantile(1.0) = 0.5 -> s = 1: unchanged
        assert_eq!(&y[..4], &[0.5, -0.2, 0.1, 0.3]);
        // row 1: s = min(4, 3) = 3
        let expect = [1.0, -1.0, 2.0 / 3.0, 1.0 / 3.0];
        for (a, b) in y[4..].iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
