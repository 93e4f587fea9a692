//! Sampling image embeddings from the prior: the prior stage of diffusers'
//! `UnCLIPPipeline.__call__` (`pipelines/deprecated/unclip/pipeline_unclip.py`) with the
//! `UnCLIPScheduler` of `unclip-diffusion` (`prediction_type = "sample"`,
//! `fixed_small_log`), classifier-free guidance, and DALL-E 2's reranking of candidates.
//!
//! Per prompt, `num_candidates` latents are denoised in one batch; with guidance the batch is
//! `[uncond rows; cond rows]` and the output is `uncond + scale * (cond - uncond)` (guidance is on
//! when `guidance_scale > 1`, as in diffusers). The final latents are mapped to CLIP space with
//! [`PriorTransformer::post_process_latents`]; when there are several candidates, the one with
//! the largest dot product with the prompt's text embedding is kept (DALL-E 2 §2.3 samples two
//! and keeps the better one). With one candidate and the same noise this is exactly the
//! pipeline's prior stage.

use std::ops::ControlFlow;

use burn::tensor::{Device, Int, Tensor, TensorData};
use unclip_diffusion::{NoiseSource, UnCLIPScheduler, classifier_free_guidance, randn};

use crate::{PriorConditioning, PriorError, PriorTransformer};

/// Settings of one sampling call.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorSampleConfig {
    /// Denoising steps (`prior_num_inference_steps`; Karlo's default 25).
    pub num_inference_steps: usize,
    /// `prior_guidance_scale` (Karlo's default 4.0); `<= 1` disables guidance.
    pub guidance_scale: f32,
    /// Candidates sampled per prompt and reranked (1 = no reranking).
    pub num_candidates: usize,
}

impl Default for PriorSampleConfig {
    fn default() -> Self {
        PriorSampleConfig {
            num_inference_steps: 25,
            guidance_scale: 4.0,
            num_candidates: 1,
        }
    }
}

/// What the progress callback sees after each scheduler step.
#[derive(Debug)]
pub struct PriorStep<'a> {
    /// 0-based step index.
    pub index: usize,
    /// Number of steps.
    pub total: usize,
    /// The timestep just denoised.
    pub timestep: usize,
    /// The latents after the step (normalised space) `[B * num_candidates, E]`.
    pub latents: &'a Tensor<2>,
    /// The scheduler's predicted `x_0` at this step (normalised space, before
    /// [`PriorTransformer::post_process_latents`]) `[B * num_candidates, E]`.
    pub pred_original: &'a Tensor<2>,
}

/// The result of [`sample`].
#[derive(Debug, Clone)]
pub struct PriorSample {
    /// The chosen image embedding per prompt (CLIP space) `[B, E]`.
    pub image_embeddings: Tensor<2>,
    /// Every candidate (CLIP space) `[B, num_candidates, E]`.
    pub candidates: Tensor<3>,
    /// Dot product of each candidate with its prompt's text embedding `[B, num_candidates]`.
    pub scores: Tensor<2>,
    /// Index of the chosen candidate per prompt.
    pub chosen: Vec<usize>,
}

/// Samples image embeddings for `cond` (`B` prompts).
///
/// - `uncond`: the empty prompt's conditioning (`[1, ..]` or `[B, ..]`); required when
///   `guidance_scale > 1`.
/// - `latents`: initial `x_T` `[B * num_candidates, E]` (rows grouped by prompt), else drawn from
///   `noise` (first draw); the scheduler's variance noise is drawn from `noise` afterwards, one
///   `[B * num_candidates, E]` draw per step with `t > 0` (the pipeline's order).
/// - `progress`: called after every step; returning [`ControlFlow::Break`] stops sampling with
///   [`PriorError::Cancelled`] (no further steps run and no more noise is drawn).
///
/// The crate-level example runs this on a tiny prior; with Karlo's folder:
///
/// ```no_run
/// # fn demo(cond: unclip_prior::PriorConditioning, uncond: unclip_prior::PriorConditioning)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// use std::ops::ControlFlow;
/// use burn::tensor::Device;
/// use unclip_diffusion::{SeededNoise, UnCLIPScheduler};
/// use unclip_prior::PriorTransformer;
/// use unclip_prior::sample::{PriorSampleConfig, sample};
///
/// let device = Device::flex();
/// let prior = PriorTransformer::from_pretrained("karlo-v1-alpha/prior", &device)?;
/// let mut scheduler = UnCLIPScheduler::from_file("karlo-v1-alpha/prior_scheduler")?;
/// // `cond` / `uncond`: the prompts' and the empty prompt's CLIP text encodings.
/// let out = sample(
///     &prior, &mut scheduler, &cond, Some(&uncond), &PriorSampleConfig::default(), None,
///     &mut SeededNoise::new(0), &mut |step| {
///         println!("prior step {}/{}", step.index + 1, step.total);
///         ControlFlow::Continue(())
///     },
/// )?;
/// let image_embeddings = out.image_embeddings; // [B, 768], for the decoder
/// # Ok(()) }
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sample<N: NoiseSource + ?Sized>(
    prior: &PriorTransformer,
    scheduler: &mut UnCLIPScheduler,
    cond: &PriorConditioning,
    uncond: Option<&PriorConditioning>,
    config: &PriorSampleConfig,
    latents: Option<Tensor<2>>,
    noise: &mut N,
    progress: &mut dyn FnMut(&PriorStep<'_>) -> ControlFlow<()>,
) -> Result<PriorSample, PriorError> {
    let b = cond.batch();
    let n = config.num_candidates;
    if b == 0 {
        return Err(PriorError::InvalidArgument {
            name: "cond",
            message: "empty batch".into(),
        });
    }
    if n == 0 {
        return Err(PriorError::InvalidArgument {
            name: "num_candidates",
            message: "must be at least 1".into(),
        });
    }
    if !config.guidance_scale.is_finite() {
        return Err(PriorError::InvalidArgument {
            name: "guidance_scale",
            message: format!("{} is not finite", config.guidance_scale),
        });
    }
    let rows = b * n;
    let e = prior.config().embedding_dim;
    let device: Device = cond.proj_embedding.device();

    // Conditioning for B*N rows, [uncond; cond] with guidance.
    let cond_n = cond.repeat_interleave(n); // [BN, ..]
    let do_cfg = config.guidance_scale > 1.0;
    let model_cond = if do_cfg {
        let u = uncond.ok_or_else(|| PriorError::InvalidArgument {
            name: "uncond",
            message: format!(
                "guidance_scale {} > 1 needs the unconditional conditioning",
                config.guidance_scale
            ),
        })?;
        let u = match u.batch() {
            1 => u.repeat_interleave(rows),
            ub if ub == b => u.repeat_interleave(n),
            ub => {
                return Err(PriorError::shape(
                    "uncond.proj_embedding",
                    format!("[1, ..] or [{b}, ..]"),
                    &[ub],
                ));
            }
        };
        u.cat(&cond_n)? // [2BN, ..]
    } else {
        cond_n.clone()
    };

    scheduler.set_timesteps(config.num_inference_steps)?;
    let mut x = match latents {
        Some(l) => {
            let d = l.dims();
            if d != [rows, e] {
                return Err(PriorError::shape("latents", format!("[{rows}, {e}]"), &d));
            }
            l
        }
        None => randn(noise, [rows, e], &device).map_err(unclip_diffusion::DiffusionError::from)?,
    };
    x = x * scheduler.init_noise_sigma(); // [BN, E]

    let pairs = scheduler.timestep_pairs();
    let total = pairs.len();
    for (index, (t, prev)) in pairs.into_iter().enumerate() {
        let input = if do_cfg {
            Tensor::cat(vec![x.clone(), x.clone()], 0)
        } else {
            x.clone()
        }; // [2BN | BN, E]
        let tt = Tensor::<1>::from_data(TensorData::new(vec![t as f32], [1]), &device);
        let pred = prior.forward(input, tt, &model_cond)?;
        let pred = if do_cfg {
            classifier_free_guidance(pred, config.guidance_scale, None)?
        } else {
            pred
        };
        let out = scheduler.step(pred, t, x, prev, noise)?;
        x = out.prev_sample;
        let flow = progress(&PriorStep {
            index,
            total,
            timestep: t,
            latents: &x,
            pred_original: &out.pred_original_sample,
        });
        if flow.is_break() {
            return Err(PriorError::Cancelled {
                step: index + 1,
                total,
            });
        }
    }

    // Rerank in CLIP space by the dot product with the text embedding.
    let clip = prior.config().clip_embed_dim();
    let emb = prior.post_process_latents(x); // [BN, clip]
    let text = cond_n.proj_embedding.clone(); // [BN, Ep]
    if text.dims()[1] != clip {
        return Err(PriorError::shape(
            "cond.proj_embedding",
            format!("[B, {clip}] to rerank candidates"),
            &text.dims(),
        ));
    }
    let scores = (emb.clone() * text).sum_dim(1).reshape([b, n]); // [B, N]
    let chosen: Vec<usize> = host_argmax(scores.clone(), b, n)?;
    let indices: Vec<i64> = chosen
        .iter()
        .enumerate()
        .map(|(i, &c)| (i * n + c) as i64)
        .collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(indices, [b]), &device);
    let image_embeddings = emb.clone().select(0, idx); // [B, clip]
    Ok(PriorSample {
        image_embeddings,
        candidates: emb.reshape([b, n, clip]),
        scores,
        chosen,
    })
}

/// Row-wise argmax of `[B, N]` on the host (first maximum wins).
fn host_argmax(scores: Tensor<2>, b: usize, n: usize) -> Result<Vec<usize>, PriorError> {
    let v: Vec<f32> = scores
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| PriorError::InvalidArgument {
            name: "scores",
            message: format!("cannot read candidate scores: {e:?}"),
        })?;
    if v.len() != b * n {
        return Err(PriorError::shape(
            "scores",
            format!("[{b}, {n}]"),
            &[v.len()],
        ));
    }
    Ok(v.chunks(n)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &s)| {
                    if s > bv { (i, s) } else { (bi, bv) }
                })
                .0
        })
        .collect())
}
