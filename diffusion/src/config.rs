//! `SchedulerConfig`: diffusers' `scheduler_config.json` (UnCLIPScheduler / DDPMScheduler /
//! DDIMScheduler keys), validated field by field.
//!
//! Unknown keys (`_class_name`, `_diffusers_version`, `timestep_spacing`, ...) are ignored; a
//! known key with a value this crate does not implement is a [`ConfigError`] naming the field.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use unclip_nn::LoadError;

use crate::error::ConfigError;

/// How the betas are laid out over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Nichol & Dhariwal's cosine schedule (`betas_for_alpha_bar`, max beta 0.999). Karlo's.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
    /// `linspace(beta_start, beta_end, T)` in float32.
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), T)^2` in float32.
    ScaledLinear,
}

/// The variance of the reverse step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// The posterior variance (clamped at 1e-20, through log/exp as diffusers does).
    FixedSmallLog,
    /// Interpolation in log space between the posterior variance and beta, driven by extra
    /// model output channels in [-1, 1] (improved DDPM / Karlo's decoder).
    LearnedRange,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise `eps`.
    Epsilon,
    /// The clean sample `x0` (Karlo's prior).
    Sample,
    /// `v = sqrt(a) eps - sqrt(1-a) x0` (Salimans & Ho). An extension: diffusers' UnCLIPScheduler
    /// rejects it, DDPM/DDIM accept it.
    #[serde(rename = "v_prediction")]
    VPrediction,
}

/// Where the inference timesteps of `set_timesteps(n)` lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// diffusers' UnCLIPScheduler: `linspace(0, T - 1, n)` rounded, descending; always starts
    /// at `T - 1`.
    #[default]
    Linspace,
    /// diffusers' `"leading"` spacing (DDPM/DDIM): `(0..n) * (T / n)` descending, so the first
    /// step is `T - T / n` (e.g. 960 for 25 of 1000 steps). An extension of unclip for the
    /// UnCLIPScheduler (diffusers' ignores the key): it skips `t = T - 1`, where an
    /// eps model's x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a) divides by sqrt(a_999) = 4.9e-5
    /// (cosine schedule) and an x_0 model sees the least training.
    Leading,
}

/// A diffusers scheduler configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    /// Used by the linear schedules only.
    pub beta_start: f64,
    /// Used by the linear schedules only.
    pub beta_end: f64,
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub clip_sample_range: f32,
    pub prediction_type: PredictionType,
    /// Imagen-style dynamic thresholding of the predicted x0 (replaces `clip_sample` when on).
    pub thresholding: bool,
    /// Percentile of |x0| per sample used by thresholding.
    pub dynamic_thresholding_ratio: f32,
    /// Upper bound of the threshold.
    pub sample_max_value: f32,
    /// Where `set_timesteps` puts the inference timesteps (`timestep_spacing`).
    pub timestep_spacing: TimestepSpacing,
}

impl Default for SchedulerConfig {
    /// diffusers' `UnCLIPScheduler()` defaults.
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            beta_start: 0.0001,
            beta_end: 0.02,
            variance_type: VarianceType::FixedSmallLog,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
        }
    }
}

fn enum_field<T: Copy>(
    map: &Map<String, Value>,
    field: &'static str,
    default: T,
    options: &[(&str, T)],
    supported: &'static str,
) -> Result<T, ConfigError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => options
            .iter()
            .find(|(name, _)| name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| ConfigError::Unsupported {
                field,
                value: format!("{s:?}"),
                supported,
            }),
        Some(other) => Err(ConfigError::Unsupported {
            field,
            value: other.to_string(),
            supported,
        }),
    }
}

fn f64_field(
    map: &Map<String, Value>,
    field: &'static str,
    default: f64,
) -> Result<f64, ConfigError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| ConfigError::Invalid {
                field,
                message: format!("expected a finite number, found {v}"),
            }),
    }
}

fn bool_field(
    map: &Map<String, Value>,
    field: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ConfigError::Invalid {
            field,
            message: format!("expected true or false, found {v}"),
        }),
    }
}

impl SchedulerConfig {
    /// Parses the text of a `scheduler_config.json`.
    ///
    /// ```
    /// use unclip_diffusion::{SchedulerConfig, VarianceType};
    /// let cfg = SchedulerConfig::from_json_str(
    ///     r#"{"_class_name": "UnCLIPScheduler", "variance_type": "learned_range"}"#,
    /// ).unwrap();
    /// assert_eq!(cfg.variance_type, VarianceType::LearnedRange);
    /// assert!(SchedulerConfig::from_json_str(r#"{"variance_type": "fixed_large"}"#).is_err());
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text)?;
        Self::from_json_value(&value)
    }

    /// Validates an already parsed JSON object.
    pub fn from_json_value(value: &Value) -> Result<Self, ConfigError> {
        let map = value.as_object().ok_or(ConfigError::NotAnObject)?;
        let d = SchedulerConfig::default();

        let num_train_timesteps = match map.get("num_train_timesteps") {
            None | Some(Value::Null) => d.num_train_timesteps,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 2 => n as usize,
                _ => {
                    return Err(ConfigError::Invalid {
                        field: "num_train_timesteps",
                        message: format!("expected an integer >= 2, found {v}"),
                    });
                }
            },
        };
        let beta_schedule = enum_field(
            map,
            "beta_schedule",
            d.beta_schedule,
            &[
                ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2),
                ("linear", BetaSchedule::Linear),
                ("scaled_linear", BetaSchedule::ScaledLinear),
            ],
            "\"squaredcos_cap_v2\", \"linear\", \"scaled_linear\"",
        )?;
        let variance_type = enum_field(
            map,
            "variance_type",
            d.variance_type,
            &[
                ("fixed_small_log", VarianceType::FixedSmallLog),
                ("learned_range", VarianceType::LearnedRange),
            ],
            "\"fixed_small_log\", \"learned_range\"",
        )?;
        let prediction_type = enum_field(
            map,
            "prediction_type",
            d.prediction_type,
            &[
                ("epsilon", PredictionType::Epsilon),
                ("sample", PredictionType::Sample),
                ("v_prediction", PredictionType::VPrediction),
            ],
            "\"epsilon\", \"sample\", \"v_prediction\"",
        )?;
        let timestep_spacing = enum_field(
            map,
            "timestep_spacing",
            d.timestep_spacing,
            &[
                ("linspace", TimestepSpacing::Linspace),
                ("leading", TimestepSpacing::Leading),
            ],
            "\"linspace\", \"leading\"",
        )?;
        let beta_start = f64_field(map, "beta_start", d.beta_start)?;
        let beta_end = f64_field(map, "beta_end", d.beta_end)?;
        let clip_sample = bool_field(map, "clip_sample", d.clip_sample)?;
        let clip_sample_range = f64_field(map, "clip_sample_range", d.clip_sample_range as f64)?;
        if clip_sample_range <= 0.0 {
            return Err(ConfigError::Invalid {
                field: "clip_sample_range",
                message: format!("must be positive, found {clip_sample_range}"),
            });
        }
        let thresholding = bool_field(map, "thresholding", d.thresholding)?;
        let ratio = f64_field(
            map,
            "dynamic_thresholding_ratio",
            d.dynamic_thresholding_ratio as f64,
        )?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::Invalid {
                field: "dynamic_thresholding_ratio",
                message: format!("must lie in [0, 1], found {ratio}"),
            });
        }
        let sample_max_value = f64_field(map, "sample_max_value", d.sample_max_value as f64)?;
        if sample_max_value < 1.0 {
            return Err(ConfigError::Invalid {
                field: "sample_max_value",
                message: format!(
                    "must be >= 1 (the threshold is clamped to [1, sample_max_value]), found {sample_max_value}"
                ),
            });
        }
        match map.get("trained_betas") {
            None | Some(Value::Null) => {}
            Some(v) => {
                return Err(ConfigError::Unsupported {
                    field: "trained_betas",
                    value: v.to_string(),
                    supported: "null",
                });
            }
        }
        if matches!(
            beta_schedule,
            BetaSchedule::Linear | BetaSchedule::ScaledLinear
        ) && !(beta_start > 0.0 && beta_end > beta_start && beta_end < 1.0)
        {
            return Err(ConfigError::Invalid {
                field: "beta_end",
                message: format!(
                    "linear schedules need 0 < beta_start < beta_end < 1, found {beta_start}, {beta_end}"
                ),
            });
        }
        Ok(SchedulerConfig {
            num_train_timesteps,
            beta_schedule,
            beta_start,
            beta_end,
            variance_type,
            clip_sample,
            clip_sample_range: clip_sample_range as f32,
            prediction_type,
            thresholding,
            dynamic_thresholding_ratio: ratio as f32,
            sample_max_value: sample_max_value as f32,
            timestep_spacing,
        })
    }

    /// Reads `scheduler_config.json` (a file, or a folder holding one).
    ///
    /// Errors: [`LoadError::Io`], [`LoadError::Json`], and [`LoadError::UnsupportedConfig`] whose
    /// message names the field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("scheduler_config.json");
        }
        let value: Value = unclip_nn::read_json(&path)?;
        Self::from_json_value(&value).map_err(|e| LoadError::UnsupportedConfig {
            path,
            message: e.to_string(),
        })
    }
}

/// The noise schedule of a training run (the betas of its [`SchedulerConfig`]); shared by the
/// decoder and super-resolution trainers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TrainSchedule {
    /// `squaredcos_cap_v2` (Karlo's decoder and super-resolution schedulers; DALL-E 2's base
    /// and 64 -> 256 stages).
    #[default]
    SquaredcosCapV2,
    /// `linspace(beta_start, beta_end, T)` (DALL-E 2's 256 -> 1024 stage; DDPM's 1e-4 .. 0.02).
    /// It destroys an image's low frequencies at much smaller `t` than the cosine schedule,
    /// which matters for small, flat images (see `unclip_decoder::train::DecoderTrainConfig`).
    Linear { beta_start: f64, beta_end: f64 },
}

impl TrainSchedule {
    /// `(beta_schedule, beta_start, beta_end)` as [`SchedulerConfig`] spells them (the cosine
    /// schedule ignores the two betas; they keep diffusers' defaults).
    pub fn betas(&self) -> (BetaSchedule, f64, f64) {
        match *self {
            TrainSchedule::SquaredcosCapV2 => (BetaSchedule::SquaredcosCapV2, 0.0001, 0.02),
            TrainSchedule::Linear {
                beta_start,
                beta_end,
            } => (BetaSchedule::Linear, beta_start, beta_end),
        }
    }

    /// Checks the betas: `0 < beta_start <= beta_end < 1`; the error says why not.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            TrainSchedule::Linear {
                beta_start,
                beta_end,
            } if !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) => Err(format!(
                "linear betas {beta_start} .. {beta_end} are not in (0, 1)"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karlo_decoder_config() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "UnCLIPScheduler", "_diffusers_version": "0.42.1",
                "beta_schedule": "squaredcos_cap_v2", "clip_sample": true, "clip_sample_range": 1.0,
                "num_train_timesteps": 1000, "prediction_type": "epsilon", "variance_type": "learned_range"}"#,
        )
        .unwrap();
        assert_eq!(cfg.variance_type, VarianceType::LearnedRange);
        assert_eq!(cfg.prediction_type, PredictionType::Epsilon);
        assert_eq!(cfg.num_train_timesteps, 1000);
    }

    #[test]
    fn unsupported_values_name_the_field() {
        for (json, field) in [
            (r#"{"variance_type": "fixed_large"}"#, "variance_type"),
            (r#"{"beta_schedule": "sigmoid"}"#, "beta_schedule"),
            (r#"{"prediction_type": "flow"}"#, "prediction_type"),
            (r#"{"num_train_timesteps": "many"}"#, "num_train_timesteps"),
            (r#"{"clip_sample": 3}"#, "clip_sample"),
            (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
        ] {
            let err = SchedulerConfig::from_json_str(json).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(matches!(
            SchedulerConfig::from_json_str("[1]"),
            Err(ConfigError::NotAnObject)
        ));
        assert!(matches!(
            SchedulerConfig::from_json_str("{"),
            Err(ConfigError::Json(_))
        ));
    }

    #[test]
    fn from_file_reports_the_path() {
        let err = SchedulerConfig::from_file("/nonexistent/scheduler_config.json").unwrap_err();
        assert!(matches!(err, LoadError::Io { .. }));
    }

    #[test]
    fn train_schedule_betas_check_and_json() {
        let lin = TrainSchedule::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
        };
        assert_eq!(lin.betas(), (BetaSchedule::Linear, 1e-4, 0.02));
        assert_eq!(
            TrainSchedule::default().betas().0,
            BetaSchedule::SquaredcosCapV2
        );
        assert!(lin.check().is_ok());
        let bad = TrainSchedule::Linear {
            beta_start: 0.0,
            beta_end: 0.02,
        };
        assert!(bad.check().unwrap_err().contains("0 .. 0.02"));
        let json = serde_json::to_value(lin).expect("json");
        assert_eq!(json["type"], "linear");
        let back: TrainSchedule = serde_json::from_value(json).expect("back");
        assert_eq!(back, lin);
    }
}
