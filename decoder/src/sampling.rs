//! The decoder stage of diffusers' `pipelines/deprecated/unclip/pipeline_unclip.py`
//! (`UnCLIPPipeline.__call__`, between the prior and the super-resolution stage):
//!
//! 1. `text_proj(image_embeddings, prompt_embeds, text hidden states, do_cfg)` -> context tokens
//!    `[B', K + T, Dc]` and the additive time embedding `[B', Dt]` (B' = 2B with guidance:
//!    unconditional rows first);
//! 2. the decoder mask = the text mask with K `true` columns prepended;
//! 3. `x_T [B, C, H, W]` (given, or drawn from the noise source) times `init_noise_sigma`;
//! 4. for every `(t, prev_t)` of the decoder scheduler: `out = unet(cat([x] * 2), t, ...)`,
//!    guidance on the first C (eps) channels, the variance channels taken from the conditional
//!    half, then `scheduler.step(out, t, x, prev_t)` (learned-range variance, clipped x0);
//!    with a `fixed_small_log` scheduler the variance channels of a learned-variance UNet are
//!    dropped first, so such a decoder can be sampled with the posterior variance (diffusers'
//!    pipeline would fail on the channel count there; this is unclip's choice);
//! 5. `clamp(-1, 1)`: the 64x64 `image_small` the super-resolution stage upsamples.
//!
//! After every step a progress callback sees a [`StepInfo`] (with the step's `x_0` prediction, a
//! cheap preview) and may stop the call ([`ControlFlow::Break`] -> [`DecoderError::Cancelled`]).

use std::ops::ControlFlow;

use burn::tensor::{Bool, Tensor};
use unclip_diffusion::{
    GradientGuide, NoiseSource, Sampler, UnCLIPScheduler, VarianceType, apply_gradient_guidance,
    classifier_free_guidance,
};

use crate::{DecoderError, UNet2DConditionModel, UnCLIPTextProjModel};

/// CLIP text conditioning of one batch of captions.
#[derive(Debug, Clone)]
pub struct TextConditioning {
    /// `[B, E]`: CLIP text embeddings (`text_embeds`, the projected pooled output).
    pub prompt_embeds: Tensor<2>,
    /// `[B, T, E]`: CLIP `last_hidden_state`.
    pub hidden_states: Tensor<3>,
    /// `[B, T]`: the tokenizer's attention mask (true = token).
    pub mask: Tensor<2, Bool>,
}

impl TextConditioning {
    /// Checks that the three tensors agree (`[B, E]`, `[B, T, E]`, `[B, T]`).
    pub fn check(&self, name: &str) -> Result<(), DecoderError> {
        let [b, e] = self.prompt_embeds.dims();
        let [hb, t, he] = self.hidden_states.dims();
        if hb != b || he != e {
            return Err(DecoderError::shape(
                &format!("{name}.hidden_states"),
                format!("[{b}, T, {e}] (rows and width of {name}.prompt_embeds)"),
                &self.hidden_states.dims(),
            ));
        }
        if self.mask.dims() != [b, t] {
            return Err(DecoderError::shape(
                &format!("{name}.mask"),
                format!("[{b}, {t}]"),
                &self.mask.dims(),
            ));
        }
        Ok(())
    }
}

/// One decoder sampling call.
#[derive(Debug, Clone)]
pub struct DecoderRequest {
    /// `[B, E]`: CLIP image embeddings (the prior's output, or an image's CLIP embedding).
    pub image_embeddings: Tensor<2>,
    /// The caption's conditioning. Without a caption, pass the encoding of the empty prompt, as
    /// diffusers' image-variation pipeline does.
    pub text: TextConditioning,
    /// The empty prompt's conditioning (`[B, ...]`): classifier-free guidance is applied when
    /// given (the pipeline's `do_classifier_free_guidance`), with the learned unconditional
    /// image embedding of text_proj for the unconditional rows.
    pub uncond_text: Option<TextConditioning>,
    /// Decoder guidance scale (Karlo: 8.0).
    pub guidance_scale: f32,
    /// Number of decoder steps (Karlo: 25; at least 2).
    pub num_inference_steps: usize,
    /// `x_T [B, C, H, W]`; drawn from the noise source (`[B, in_channels, S, S]` with S the
    /// config's `sample_size`) when `None`.
    pub latents: Option<Tensor<4>>,
    /// The reverse update: Karlo's ancestral step ([`Sampler::Ancestral`], the pipelines'
    /// default) or DDIM.
    pub sampler: Sampler,
    /// Image-to-image (SDEdit): start from an image noised part of the way instead of from
    /// `x_T`. `None` (the pipelines'): sample from noise. Exclusive with `latents`.
    pub init_image: Option<InitImage>,
}

/// The start of an image-to-image decoder call (SDEdit, as diffusers' img2img pipelines do it):
/// the image is noised to the timestep of the last `ceil(strength * num_inference_steps)`
/// steps' first one, and only those steps are run. Strength 1 runs every step from the image
/// noised to the first timestep (almost pure noise); small strengths keep the image's layout.
///
/// ```
/// # use burn::tensor::{Device, Tensor};
/// use unclip_decoder::InitImage;
/// # let device = Device::flex();
/// # let image = Tensor::<4>::zeros([1, 3, 32, 32], &device);
/// // Keep the picture's layout, let the decoder redraw the last 40% of the steps.
/// let start = InitImage { image, strength: 0.4 };
/// ```
#[derive(Debug, Clone)]
pub struct InitImage {
    /// `[B, C, H, W]` in `[-1, 1]`, the decoder's input layout.
    pub image: Tensor<4>,
    /// The fraction of the steps run, in `(0, 1]`.
    pub strength: f32,
}

/// What a sampling progress callback sees after each scheduler step (used by
/// [`sample_decoder`] and by the upsampler's `sample_super_res`).
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// 0-based step index.
    pub index: usize,
    /// Number of steps of the call.
    pub total: usize,
    /// The timestep just denoised.
    pub timestep: usize,
    /// The sample after the step, `x_{t-1}` `[B, C, H, W]`.
    pub sample: &'a Tensor<4>,
    /// The scheduler's predicted (clipped) `x_0` at this step `[B, C, H, W]`, roughly in
    /// `[-1, 1]`: a preview of the final image.
    pub pred_original: &'a Tensor<4>,
}

/// A progress callback that never cancels.
pub fn no_progress(_: &StepInfo<'_>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn cat2<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    Tensor::cat(vec![a, b], 0)
}

/// The decoder's conditioning for one batch, prepared once (text projection, context tokens,
/// extended mask): [`GuidedDecoder::output`] is the guided model output at `(x_t, t)` that every
/// sampler (ancestral, DDIM, DDIM inversion) calls.
pub struct GuidedDecoder<'a> {
    unet: &'a UNet2DConditionModel,
    /// `[B', K + T, Dc]`
    context: Tensor<3>,
    /// `[B', Dt]`
    time_embeddings: Tensor<2>,
    /// `[B', K + T]`
    mask: Tensor<2, Bool>,
    guidance_scale: Option<f32>,
}

impl<'a> GuidedDecoder<'a> {
    /// Projects the conditioning (`uncond_text` given: classifier-free guidance with the learned
    /// unconditional image embedding for the unconditional rows, as the pipeline does).
    pub fn new(
        unet: &'a UNet2DConditionModel,
        text_proj: &UnCLIPTextProjModel,
        image_embeddings: Tensor<2>,
        text: TextConditioning,
        uncond_text: Option<TextConditioning>,
        guidance_scale: f32,
    ) -> Result<Self, DecoderError> {
        let cfg = uncond_text.is_some();
        text.check("text")?;
        if let Some(u) = &uncond_text {
            u.check("uncond_text")?;
        }
        let (prompt_embeds, hidden, mask) = match uncond_text {
            Some(u) => {
                if u.prompt_embeds.dims()[0] != text.prompt_embeds.dims()[0] {
                    return Err(DecoderError::shape(
                        "uncond_text.prompt_embeds",
                        format!(
                            "[{}, E] (rows of text.prompt_embeds)",
                            text.prompt_embeds.dims()[0]
                        ),
                        &u.prompt_embeds.dims(),
                    ));
                }
                if u.hidden_states.dims()[1] != text.hidden_states.dims()[1] {
                    return Err(DecoderError::shape(
                        "uncond_text.hidden_states",
                        format!(
                            "[B, {}, E] (length of text.hidden_states)",
                            text.hidden_states.dims()[1]
                        ),
                        &u.hidden_states.dims(),
                    ));
                }
                (
                    cat2(u.prompt_embeds, text.prompt_embeds),
                    cat2(u.hidden_states, text.hidden_states),
                    Tensor::cat(vec![u.mask, text.mask], 0),
                )
            }
            None => (text.prompt_embeds, text.hidden_states, text.mask),
        };
        let cond = text_proj.forward(image_embeddings, prompt_embeds, hidden, cfg)?;
        let mask = text_proj.extend_attention_mask(mask); // [B', K + T]
        let l = cond.encoder_hidden_states.dims()[1];
        if mask.dims()[1] != l {
            return Err(DecoderError::shape(
                "text.mask",
                format!("[B, {}]", l - text_proj.clip_extra_context_tokens),
                &mask.dims(),
            ));
        }
        Ok(GuidedDecoder {
            unet,
            context: cond.encoder_hidden_states,
            time_embeddings: cond.additive_clip_time_embeddings,
            mask,
            guidance_scale: cfg.then_some(guidance_scale),
        })
    }

    /// The guided model output `[B, 2C, H, W]` at `x [B, C, H, W]`, timestep `t`: guidance on the
    /// eps channels, the variance channels from the conditional half.
    pub fn output(&self, x: Tensor<4>, t: usize) -> Result<Tensor<4>, DecoderError> {
        let device = x.device();
        let c = x.dims()[1];
        let input = if self.guidance_scale.is_some() {
            cat2(x.clone(), x)
        } else {
            x
        };
        let ts = Tensor::<1>::from_floats([t as f32], &device);
        let out = self.unet.forward(
            input,
            ts,
            self.context.clone(),
            Some(self.time_embeddings.clone()),
            Some(self.mask.clone()),
        )?; // [B', 2C, H, W]
        Ok(match self.guidance_scale {
            Some(scale) => classifier_free_guidance(out, scale, Some(c))?,
            None => out,
        })
    }
}

/// A second decoder that takes over the low-noise end of sampling (eDiff-I's "expert
/// denoisers", Balaji et al. 2022): the steps at timesteps `t < below` run `unet` with its own
/// `text_proj`, the others the main decoder. Both must predict the same target on the same
/// schedule (the scheduler passed to [`sample_decoder_with_expert`] serves both) and take the
/// same image and text embeddings.
///
/// ```no_run
/// # use unclip_decoder::{LowNoiseExpert, UNet2DConditionModel, UnCLIPTextProjModel};
/// # fn f(unet: &UNet2DConditionModel, text_proj: &UnCLIPTextProjModel) {
/// // A wide decoder trained for precise low-noise denoising draws the last 40% of the steps.
/// let expert = LowNoiseExpert { unet, text_proj, below: 400 };
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LowNoiseExpert<'a> {
    pub unet: &'a UNet2DConditionModel,
    pub text_proj: &'a UnCLIPTextProjModel,
    /// The expert runs the steps whose timestep is below this.
    pub below: usize,
}

/// Runs the decoder stage; returns `image_small [B, C, H, W]` clamped to `[-1, 1]`.
///
/// Noise is drawn from `noise` in diffusers' order: `x_T` first (when not given; with an
/// [`InitImage`], the noise that takes the image to its start timestep), then one
/// `[B, C, H, W]` tensor per step run except the last.
///
/// The scheduler's `variance_type` decides the step's variance: `learned_range` uses the UNet's
/// variance channels (Karlo); `fixed_small_log` uses the posterior variance and ignores them
/// when the UNet has them (a learned-variance decoder sampled without its variance head).
///
/// `progress` is called after every step; returning [`ControlFlow::Break`] stops the call with
/// [`DecoderError::Cancelled`] (pass `&mut no_progress` to run to the end silently).
///
/// The crate-level example runs this on a tiny decoder; with Karlo's folders:
///
/// ```no_run
/// # fn demo(image_embeddings: burn::tensor::Tensor<2>, text: unclip_decoder::TextConditioning,
/// #         empty_prompt: unclip_decoder::TextConditioning) -> Result<(), Box<dyn std::error::Error>> {
/// use burn::tensor::Device;
/// use unclip_decoder::{DecoderRequest, UNet2DConditionModel, UnCLIPTextProjModel, sample_decoder};
/// use unclip_diffusion::{Sampler, SeededNoise, UnCLIPScheduler};
///
/// let device = Device::flex();
/// let unet = UNet2DConditionModel::from_pretrained("karlo-v1-alpha/decoder", &device)?;
/// let text_proj = UnCLIPTextProjModel::from_pretrained("karlo-v1-alpha/text_proj", &device)?;
/// let mut scheduler = UnCLIPScheduler::from_file("karlo-v1-alpha/decoder_scheduler")?;
/// let request = DecoderRequest {
///     image_embeddings, // [B, 768] from the prior
///     text,             // the prompts' CLIP text encodings
///     uncond_text: Some(empty_prompt),
///     guidance_scale: 8.0,
///     num_inference_steps: 25,
///     latents: None,
///     sampler: Sampler::Ancestral,
///     init_image: None,
/// };
/// let mut noise = SeededNoise::new(0);
/// let image_small = sample_decoder(&unet, &text_proj, &mut scheduler, request, &mut noise,
///     &mut |step| {
///         println!("decoder step {}/{}", step.index + 1, step.total);
///         std::ops::ControlFlow::Continue(())
///     })?; // [B, 3, 64, 64] in [-1, 1]
/// # Ok(()) }
/// ```
pub fn sample_decoder<N: NoiseSource + ?Sized>(
    unet: &UNet2DConditionModel,
    text_proj: &UnCLIPTextProjModel,
    scheduler: &mut UnCLIPScheduler,
    request: DecoderRequest,
    noise: &mut N,
    progress: &mut dyn FnMut(&StepInfo<'_>) -> ControlFlow<()>,
) -> Result<Tensor<4>, DecoderError> {
    sample_decoder_with_expert(unet, text_proj, None, scheduler, request, noise, progress)
}

/// [`sample_decoder`] with an optional [`LowNoiseExpert`] drawing the steps at `t < below`
/// (`None`: [`sample_decoder`]). The expert's UNet must have the main UNet's input channels,
/// and its variance channels are used or dropped by the same rule.
pub fn sample_decoder_with_expert<N: NoiseSource + ?Sized>(
    unet: &UNet2DConditionModel,
    text_proj: &UnCLIPTextProjModel,
    expert: Option<LowNoiseExpert<'_>>,
    scheduler: &mut UnCLIPScheduler,
    request: DecoderRequest,
    noise: &mut N,
    progress: &mut dyn FnMut(&StepInfo<'_>) -> ControlFlow<()>,
) -> Result<Tensor<4>, DecoderError> {
    sample_decoder_guided(
        unet, text_proj, expert, None, scheduler, request, noise, progress,
    )
}

/// Gradient guidance of the decoder's sampling: a [`GradientGuide`] (e.g. GLIDE's noised CLIP
/// scoring `x_t` against the caption) and its scale.
#[derive(Clone, Copy)]
pub struct DecoderGuide<'a> {
    pub guide: &'a dyn GradientGuide,
    /// `0` disables the guide.
    pub scale: f32,
}

/// [`sample_decoder_with_expert`] with optional gradient guidance: at every step the model's
/// (classifier-free guided) prediction is shifted by `scale * grad log p(y | x_t)`
/// ([`unclip_diffusion::apply_gradient_guidance`]) before the scheduler's step, as GLIDE's
/// CLIP-guided sampler does. Only the prediction channels are shifted (learned variance is
/// kept).
///
/// ```no_run
/// # fn demo(unet: &unclip_decoder::UNet2DConditionModel, text_proj: &unclip_decoder::UnCLIPTextProjModel,
/// #         scheduler: &mut unclip_diffusion::UnCLIPScheduler, request: unclip_decoder::DecoderRequest,
/// #         guide: &dyn unclip_diffusion::GradientGuide) -> Result<(), unclip_decoder::DecoderError> {
/// use unclip_decoder::{DecoderGuide, sample_decoder_guided};
/// let mut noise = unclip_diffusion::SeededNoise::new(0);
/// let images = sample_decoder_guided(
///     unet, text_proj, None, Some(DecoderGuide { guide, scale: 100.0 }),
///     scheduler, request, &mut noise, &mut |_| std::ops::ControlFlow::Continue(()),
/// )?; // [B, 3, H, W] in [-1, 1]
/// # Ok(()) }
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sample_decoder_guided<N: NoiseSource + ?Sized>(
    unet: &UNet2DConditionModel,
    text_proj: &UnCLIPTextProjModel,
    expert: Option<LowNoiseExpert<'_>>,
    guide: Option<DecoderGuide<'_>>,
    scheduler: &mut UnCLIPScheduler,
    request: DecoderRequest,
    noise: &mut N,
    progress: &mut dyn FnMut(&StepInfo<'_>) -> ControlFlow<()>,
) -> Result<Tensor<4>, DecoderError> {
    let DecoderRequest {
        image_embeddings,
        text,
        uncond_text,
        guidance_scale,
        num_inference_steps,
        latents,
        sampler,
        init_image,
    } = request;
    let device = image_embeddings.device();
    let b = image_embeddings.dims()[0];
    let c = unet.in_channels();
    // The expert's conditioning, prepared with its own text projection.
    let low = match expert {
        Some(e) => {
            if e.unet.in_channels() != c {
                return Err(DecoderError::InvalidArgument {
                    name: "expert".into(),
                    message: format!(
                        "the low-noise expert takes {} input channels, the decoder {c}",
                        e.unet.in_channels()
                    ),
                });
            }
            let model = GuidedDecoder::new(
                e.unet,
                e.text_proj,
                image_embeddings.clone(),
                text.clone(),
                uncond_text.clone(),
                guidance_scale,
            )?;
            Some((model, e.below, e.unet.config.out_channels == 2 * c))
        }
        None => None,
    };
    let model = GuidedDecoder::new(
        unet,
        text_proj,
        image_embeddings,
        text,
        uncond_text,
        guidance_scale,
    )?;

    scheduler.set_timesteps(num_inference_steps)?;
    let mut pairs = scheduler.timestep_pairs();
    // A given start tensor must have the batch's rows and the UNet's channels.
    let check_rows = |name: &str, dims: [usize; 4]| -> Result<(), DecoderError> {
        if dims[0] != b || dims[1] != c {
            return Err(DecoderError::shape(
                name,
                format!("[{b}, {c}, H, W]"),
                &dims,
            ));
        }
        Ok(())
    };
    // The sample the first step denoises, `[B, C, H, W]`.
    let mut x = match (latents, init_image) {
        (Some(_), Some(_)) => {
            return Err(DecoderError::InvalidArgument {
                name: "init_image".into(),
                message: "give either latents (x_T) or an init image, not both".into(),
            });
        }
        (Some(x_t), None) => {
            check_rows("latents", x_t.dims())?;
            x_t * scheduler.init_noise_sigma()
        }
        (None, Some(InitImage { image, strength })) => {
            if !(strength > 0.0 && strength <= 1.0) {
                return Err(DecoderError::InvalidArgument {
                    name: "init_image.strength".into(),
                    message: format!("{strength}: expected a value in (0, 1]"),
                });
            }
            check_rows("init_image.image", image.dims())?;
            // Run the last ceil(strength * n) steps (at least one) from the image noised to
            // the first of them: x_{t0} = sqrt(a) x_0 + sqrt(1 - a) eps.
            let n = pairs.len();
            let run = ((strength * n as f32).ceil() as usize).clamp(1, n);
            pairs.drain(..n - run);
            let t0 = pairs[0].0;
            let eps = unclip_diffusion::randn(noise, image.dims(), &device)
                .map_err(unclip_diffusion::DiffusionError::from)?;
            scheduler.add_noise(image, eps, &vec![t0; b])?
        }
        (None, None) => {
            let [h, w] = unet.config.sample_size.map(|s| s.hw()).ok_or_else(|| {
                DecoderError::InvalidArgument {
                    name: "latents".into(),
                    message: "the decoder config has no sample_size: pass the initial latents"
                        .into(),
                }
            })?;
            unclip_diffusion::randn(noise, [b, c, h, w], &device)
                .map_err(unclip_diffusion::DiffusionError::from)?
                * scheduler.init_noise_sigma()
        }
    };
    let total = pairs.len();
    let fixed = scheduler.config().variance_type == VarianceType::FixedSmallLog;
    let main_learns_variance = unet.config.out_channels == 2 * c;
    for (index, (t, prev)) in pairs.into_iter().enumerate() {
        let (out, learned_variance) = match &low {
            Some((expert, below, lv)) if t < *below => (expert.output(x.clone(), t)?, *lv),
            _ => (model.output(x.clone(), t)?, main_learns_variance),
        }; // [B, 2C, H, W] or [B, C, H, W]
        let out = if fixed && learned_variance {
            out.narrow(1, 0, c) // [B, C, H, W]: the prediction channels
        } else {
            out
        };
        let out = match guide {
            Some(DecoderGuide { guide, scale }) if scale != 0.0 => {
                let grad = guide.gradient(x.clone(), t)?; // [B, C, H, W]
                let a_t = scheduler.schedule().alphas_cumprod()[t];
                let kind = scheduler.config().prediction_type;
                let guided =
                    apply_gradient_guidance(out.clone().narrow(1, 0, c), grad, kind, a_t, scale)?;
                if out.dims()[1] == c {
                    guided
                } else {
                    // keep the variance channels: [B, 2C, H, W]
                    Tensor::cat(vec![guided, out.narrow(1, c, c)], 1)
                }
            }
            _ => out,
        };
        let step = scheduler.step_with(sampler, out, t, x, prev, noise)?;
        x = step.prev_sample;
        let flow = progress(&StepInfo {
            index,
            total,
            timestep: t,
            sample: &x,
            pred_original: &step.pred_original_sample,
        });
        if flow.is_break() {
            return Err(DecoderError::Cancelled {
                step: index + 1,
                total,
            });
        }
    }
    Ok(x.clamp(-1.0, 1.0))
}
