//! The unCLIP pipeline: diffusers' `UnCLIPPipeline` (text -> image) and
//! `UnCLIPImageVariationPipeline` (image -> variations), plus interpolation and text diffs from
//! the DALL-E 2 paper, assembled from the stage crates.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use image::RgbImage;
use unclip_clip::{
    ClipImageProcessor, ClipTextModelWithProjection, ClipVisionModelWithProjection, Rgb8,
};
use unclip_decoder::{
    DecoderError, DecoderRequest, GuidedDecoder, TextConditioning, UNet2DConditionModel,
    UnCLIPTextProjModel, sample_decoder,
};
use unclip_diffusion::{NoiseSource, SeededNoise, UnCLIPScheduler};
use unclip_prior::sample::PriorSampleConfig;
use unclip_prior::{PriorConditioning, PriorTransformer};
use unclip_tokenizer::ClipTokenizer;
use unclip_upsampler::{SuperResRequest, UNet2DModel, sample_super_res, to_rgb8, to_unit_range};

use crate::UnclipError;
use crate::index::ModelIndex;
use crate::progress::{Control, Progress, ProgressFn, Stage};

/// Per-call settings (Karlo's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub prior_steps: usize,
    pub decoder_steps: usize,
    pub super_res_steps: usize,
    /// `<= 1` disables guidance.
    pub prior_guidance_scale: f32,
    /// `<= 1` disables guidance.
    pub decoder_guidance_scale: f32,
    /// Prior candidates per prompt, reranked by similarity with the text embedding (paper: 2).
    pub prior_candidates: usize,
    /// Seed of the default noise source.
    pub seed: u64,
    /// Run the super-resolution stage (otherwise the decoder's 64x64 output is returned).
    pub super_res: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prior_steps: 25,
            decoder_steps: 25,
            super_res_steps: 7,
            prior_guidance_scale: 4.0,
            decoder_guidance_scale: 8.0,
            prior_candidates: 1,
            seed: 0,
            super_res: true,
        }
    }
}

/// How the decoder's starting noise `x_T` behaves across interpolation frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtMode {
    /// The same `x_T` for every frame (the settings' seed).
    Fixed,
    /// Spherically interpolated from the settings' seed's `x_T` to `seed_b`'s.
    Interpolated { seed_b: u64 },
}

/// Initial latents to use instead of drawing them (for reproducing a recorded run).
#[derive(Debug, Clone, Default)]
pub struct Latents {
    /// `[B * candidates, E]`
    pub prior: Option<Tensor<2>>,
    /// `[B, C, h, w]`
    pub decoder: Option<Tensor<4>>,
    /// `[B, C, H, W]`
    pub super_res: Option<Tensor<4>>,
}

/// The result of a generation call.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Final images in `[0, 1]`, `[B, 3, H, W]`.
    pub images: Tensor<4>,
    /// The image embeddings the decoder was conditioned on `[B, E]`.
    pub image_embeddings: Tensor<2>,
    /// The decoder's output clamped to `[-1, 1]` `[B, 3, h, w]`.
    pub image_small: Tensor<4>,
}

impl Generation {
    /// The images as 8-bit RGB.
    pub fn to_rgb8(&self) -> Result<Vec<RgbImage>, UnclipError> {
        Ok(to_rgb8(self.images.clone())?)
    }
}

/// CLIP text conditioning of a batch: what the prior and the decoder need.
#[derive(Debug, Clone)]
pub struct EncodedText {
    /// `text_embeds` (not normalised) `[B, E]`.
    pub embeds: Tensor<2>,
    /// `last_hidden_state` `[B, L, D]`.
    pub hidden_states: Tensor<3>,
    /// `[B, L]`, true = token.
    pub mask: Tensor<2, Bool>,
}

impl EncodedText {
    fn prior(&self) -> PriorConditioning {
        PriorConditioning {
            proj_embedding: self.embeds.clone(),
            encoder_hidden_states: Some(self.hidden_states.clone()),
            attention_mask: Some(self.mask.clone()),
        }
    }

    fn decoder(&self) -> TextConditioning {
        TextConditioning {
            prompt_embeds: self.embeds.clone(),
            hidden_states: self.hidden_states.clone(),
            mask: self.mask.clone(),
        }
    }

    fn repeat(&self, n: usize) -> EncodedText {
        if n == 1 {
            return self.clone();
        }
        let rep2 = |t: Tensor<2>| Tensor::cat(vec![t; n], 0);
        EncodedText {
            embeds: rep2(self.embeds.clone()),
            hidden_states: Tensor::cat(vec![self.hidden_states.clone(); n], 0),
            mask: Tensor::cat(vec![self.mask.clone(); n], 0),
        }
    }
}

/// The assembled pipeline. Build it with [`UnclipBuilder`].
pub struct UnclipPipeline {
    pub device: Device,
    pub settings: Settings,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModelWithProjection,
    pub image_encoder: Option<ClipVisionModelWithProjection>,
    pub feature_extractor: Option<ClipImageProcessor>,
    pub prior: Option<PriorTransformer>,
    pub prior_scheduler: Option<UnCLIPScheduler>,
    pub text_proj: UnCLIPTextProjModel,
    pub decoder: UNet2DConditionModel,
    pub decoder_scheduler: UnCLIPScheduler,
    pub super_res_first: UNet2DModel,
    pub super_res_last: UNet2DModel,
    pub super_res_scheduler: UnCLIPScheduler,
}

/// Assembles a pipeline from a diffusers folder (Karlo v1-alpha, karlo-v1-alpha-image-variations,
/// or one written by unclip's trainers), with any component replaceable.
///
/// ```no_run
/// use burn::tensor::Device;
/// use unclip::UnclipBuilder;
/// let pipe = UnclipBuilder::new()
///     .device(Device::flex())
///     .from_pretrained("karlo-v1-alpha")
///     .decoder_steps(25)
///     .seed(7)
///     .build()?;
/// let out = pipe.text_to_image(&["a red circle"], &mut |_| unclip::Control::Continue)?;
/// # Ok::<(), unclip::UnclipError>(())
/// ```
#[derive(Default)]
pub struct UnclipBuilder {
    dir: Option<PathBuf>,
    device: Option<Device>,
    settings: Settings,
    tokenizer: Option<ClipTokenizer>,
    text_encoder: Option<ClipTextModelWithProjection>,
    image_encoder: Option<ClipVisionModelWithProjection>,
    prior: Option<PriorTransformer>,
    prior_scheduler: Option<UnCLIPScheduler>,
    decoder: Option<UNet2DConditionModel>,
    text_proj: Option<UnCLIPTextProjModel>,
    super_res_first: Option<UNet2DModel>,
    super_res_last: Option<UNet2DModel>,
}

macro_rules! setter {
    ($name:ident, $field:ident, $t:ty) => {
        pub fn $name(mut self, v: $t) -> Self {
            self.settings.$field = v;
            self
        }
    };
}

impl UnclipBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The diffusers folder to read components from (`model_index.json` + one folder each).
    pub fn from_pretrained(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    setter!(prior_steps, prior_steps, usize);
    setter!(decoder_steps, decoder_steps, usize);
    setter!(super_res_steps, super_res_steps, usize);
    setter!(prior_guidance_scale, prior_guidance_scale, f32);
    setter!(decoder_guidance_scale, decoder_guidance_scale, f32);
    setter!(prior_candidates, prior_candidates, usize);
    setter!(seed, seed, u64);
    setter!(with_super_res, super_res, bool);

    pub fn tokenizer(mut self, t: ClipTokenizer) -> Self {
        self.tokenizer = Some(t);
        self
    }
    pub fn text_encoder(mut self, m: ClipTextModelWithProjection) -> Self {
        self.text_encoder = Some(m);
        self
    }
    pub fn image_encoder(mut self, m: ClipVisionModelWithProjection) -> Self {
        self.image_encoder = Some(m);
        self
    }
    pub fn prior(mut self, m: PriorTransformer) -> Self {
        self.prior = Some(m);
        self
    }
    /// The prior's scheduler, e.g. with a prior from another folder than
    /// [`Self::from_pretrained`]'s (an image-variations folder has no `prior_scheduler`).
    pub fn prior_scheduler(mut self, s: UnCLIPScheduler) -> Self {
        self.prior_scheduler = Some(s);
        self
    }
    pub fn decoder(mut self, m: UNet2DConditionModel) -> Self {
        self.decoder = Some(m);
        self
    }
    pub fn text_proj(mut self, m: UnCLIPTextProjModel) -> Self {
        self.text_proj = Some(m);
        self
    }
    pub fn super_res(mut self, first: UNet2DModel, last: UNet2DModel) -> Self {
        self.super_res_first = Some(first);
        self.super_res_last = Some(last);
        self
    }

    /// Loads every component not given explicitly from the folder and checks the result.
    pub fn build(self) -> Result<UnclipPipeline, UnclipError> {
        let device = self.device.ok_or(UnclipError::InvalidSetting {
            name: "device",
            message: "choose a device with `.device(..)` (the library picks none)".into(),
        })?;
        let dir = self.dir.clone();
        let index = match &dir {
            Some(d) => Some(ModelIndex::from_dir(d)?),
            None => None,
        };
        let sub = |name: &'static str| -> Result<PathBuf, UnclipError> {
            let d = dir.as_ref().ok_or(UnclipError::MissingComponent {
                name,
                why: "not given to the builder and no folder to load it from (`.from_pretrained(dir)`)".into(),
            })?;
            if let Some(ix) = &index
                && !ix.has(name)
            {
                return Err(UnclipError::MissingComponent {
                    name,
                    why: format!("{}/model_index.json does not list it", d.display()),
                });
            }
            let p = d.join(name);
            if !p.is_dir() {
                return Err(UnclipError::MissingComponent {
                    name,
                    why: format!("{} is not a folder", p.display()),
                });
            }
            Ok(p)
        };
        let has = |name: &str| index.as_ref().map(|ix| ix.has(name)).unwrap_or(false);

        let tokenizer = match self.tokenizer {
            Some(t) => t,
            None => ClipTokenizer::from_dir(sub("tokenizer")?)?,
        };
        let text_encoder = match self.text_encoder {
            Some(m) => m,
            None => ClipTextModelWithProjection::from_pretrained(sub("text_encoder")?, &device)?,
        };
        let image_encoder = match self.image_encoder {
            Some(m) => Some(m),
            None if has("image_encoder") => Some(ClipVisionModelWithProjection::from_pretrained(
                sub("image_encoder")?,
                &device,
            )?),
            None => None,
        };
        let feature_extractor = if has("feature_extractor") {
            Some(ClipImageProcessor::from_file(
                sub("feature_extractor")?.join("preprocessor_config.json"),
            )?)
        } else {
            image_encoder.as_ref().map(|m| {
                let s = m.vision_model.embeddings.position_embedding.weight.dims()[0];
                let patches = ((s - 1) as f64).sqrt() as usize;
                let patch = m.vision_model.embeddings.patch_embedding.weight.dims()[2];
                ClipImageProcessor::for_size(patches * patch)
            })
        };
        let prior = match self.prior {
            Some(m) => Some(m),
            None if has("prior") => {
                Some(PriorTransformer::from_pretrained(sub("prior")?, &device)?)
            }
            None => None,
        };
        let prior_scheduler = match self.prior_scheduler {
            Some(s) => Some(s),
            None if prior.is_some() => Some(scheduler(dir.as_deref(), "prior_scheduler")?),
            None => None,
        };
        let text_proj = match self.text_proj {
            Some(m) => m,
            None => UnCLIPTextProjModel::from_pretrained(sub("text_proj")?, &device)?,
        };
        let decoder = match self.decoder {
            Some(m) => m,
            None => UNet2DConditionModel::from_pretrained(sub("decoder")?, &device)?,
        };
        let super_res_first = match self.super_res_first {
            Some(m) => m,
            None => UNet2DModel::from_pretrained(sub("super_res_first")?, &device)?,
        };
        let super_res_last = match self.super_res_last {
            Some(m) => m,
            None => UNet2DModel::from_pretrained(sub("super_res_last")?, &device)?,
        };
        Ok(UnclipPipeline {
            decoder_scheduler: scheduler(dir.as_deref(), "decoder_scheduler")?,
            super_res_scheduler: scheduler(dir.as_deref(), "super_res_scheduler")?,
            device,
            settings: self.settings,
            tokenizer,
            text_encoder,
            image_encoder,
            feature_extractor,
            prior,
            prior_scheduler,
            text_proj,
            decoder,
            super_res_first,
            super_res_last,
        })
    }
}

fn scheduler(dir: Option<&Path>, name: &'static str) -> Result<UnCLIPScheduler, UnclipError> {
    let d = dir.ok_or(UnclipError::MissingComponent {
        name,
        why: "no folder to read its config from".into(),
    })?;
    let p = d.join(name).join("scheduler_config.json");
    if !p.is_file() {
        return Err(UnclipError::MissingComponent {
            name,
            why: format!("{} does not exist", p.display()),
        });
    }
    Ok(UnCLIPScheduler::from_file(p)?)
}

/// Forwards one finished step of a stage sampler to the pipeline's callback.
fn report(
    progress: &mut ProgressFn<'_>,
    stage: Stage,
    index: usize,
    total: usize,
    timestep: usize,
) -> ControlFlow<()> {
    match progress(Progress {
        stage,
        step: index + 1,
        total,
        timestep,
    }) {
        Control::Continue => ControlFlow::Continue(()),
        Control::Cancel => ControlFlow::Break(()),
    }
}

/// A decoder-family error of `stage`, with a cancellation turned into the pipeline's own.
fn stage_error(e: DecoderError, stage: Stage) -> UnclipError {
    match e {
        DecoderError::Cancelled { .. } => UnclipError::Cancelled { stage },
        e => e.into(),
    }
}

/// Spherical interpolation between two embeddings `a, b [N, E]` at fraction `t` (row-wise).
/// Falls back to linear interpolation when the vectors are (nearly) parallel.
pub fn slerp(a: Tensor<2>, b: Tensor<2>, t: f32) -> Tensor<2> {
    let na = a.clone().powi_scalar(2).sum_dim(1).sqrt(); // [N, 1]
    let nb = b.clone().powi_scalar(2).sum_dim(1).sqrt();
    let cos = ((a.clone() * b.clone()).sum_dim(1) / (na * nb)).clamp(-1.0, 1.0); // [N, 1]
    let theta = cos.clone().acos();
    let sin = theta.clone().sin();
    let parallel = sin.clone().abs().lower_elem(1e-6);
    let wa = ((theta.clone() * (1.0 - t)).sin() / sin.clone()).mask_fill(parallel.clone(), 1.0 - t);
    let wb = ((theta * t).sin() / sin).mask_fill(parallel, t);
    a * wa + b * wb
}

impl UnclipPipeline {
    /// Tokenises and encodes prompts with the CLIP text encoder, called without the attention
    /// mask as the unCLIP pipelines call it (the mask goes to the prior and the decoder).
    pub fn encode_text(&self, prompts: &[&str]) -> Result<EncodedText, UnclipError> {
        if prompts.is_empty() {
            return Err(UnclipError::EmptyPrompt);
        }
        let enc = self.tokenizer.encode_batch(prompts)?;
        let shape = enc.shape();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(enc.flat_ids(), shape), &self.device);
        let mask = Tensor::<2, Int>::from_data(
            TensorData::new(enc.flat_attention_mask(), shape),
            &self.device,
        )
        .equal_elem(1);
        let (embeds, out) = self.text_encoder.forward(ids, None);
        Ok(EncodedText {
            embeds,
            hidden_states: out.last_hidden_state,
            mask,
        })
    }

    /// CLIP image embeddings (not normalised, as the variation pipeline uses them) `[B, E]`.
    pub fn encode_images(&self, images: &[RgbImage]) -> Result<Tensor<2>, UnclipError> {
        let (enc, proc) = match (&self.image_encoder, &self.feature_extractor) {
            (Some(e), Some(p)) => (e, p),
            _ => {
                return Err(UnclipError::MissingComponent {
                    name: "image_encoder",
                    why: "this pipeline has no CLIP image encoder (an image-variations checkpoint has one)".into(),
                });
            }
        };
        let rgb: Vec<Rgb8> = images
            .iter()
            .map(|i| Rgb8 {
                width: i.width() as usize,
                height: i.height() as usize,
                data: i.as_raw().clone(),
            })
            .collect();
        let pixels = proc.preprocess_rgb(&rgb, &self.device)?;
        Ok(enc.forward(pixels).0)
    }

    /// Text -> image with the default seeded noise.
    pub fn text_to_image(
        &self,
        prompts: &[&str],
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let mut noise = SeededNoise::new(self.settings.seed);
        self.text_to_image_with(prompts, &mut noise, Latents::default(), progress)
    }

    /// Text -> image drawing from `noise` (e.g. a [`unclip_diffusion::ReplayNoise`] of a recorded
    /// run), with optional initial latents.
    pub fn text_to_image_with(
        &self,
        prompts: &[&str],
        noise: &mut dyn NoiseSource,
        latents: Latents,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let b = prompts.len();
        let cond = self.encode_text(prompts)?;
        let uncond = self.encode_text(&vec![""; b])?;
        let embeddings = self.sample_prior(&cond, &uncond, latents.prior, noise, progress)?;
        self.decode(
            embeddings,
            &cond,
            &uncond,
            latents.decoder,
            latents.super_res,
            noise,
            progress,
        )
    }

    /// The prior stage alone: text conditioning -> CLIP image embeddings `[B, E]`.
    pub fn sample_prior(
        &self,
        cond: &EncodedText,
        uncond: &EncodedText,
        latents: Option<Tensor<2>>,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor<2>, UnclipError> {
        let (prior, scheduler) = match (&self.prior, &self.prior_scheduler) {
            (Some(p), Some(s)) => (p, s),
            _ => {
                return Err(UnclipError::MissingComponent {
                    name: "prior",
                    why: "this pipeline has no prior (an image-variations checkpoint has none)"
                        .into(),
                });
            }
        };
        let mut scheduler = scheduler.clone();
        let config = PriorSampleConfig {
            num_inference_steps: self.settings.prior_steps,
            guidance_scale: self.settings.prior_guidance_scale,
            num_candidates: self.settings.prior_candidates.max(1),
        };
        let out = unclip_prior::sample::sample(
            prior,
            &mut scheduler,
            &cond.prior(),
            Some(&uncond.prior()),
            &config,
            latents,
            noise,
            &mut |s| report(progress, Stage::Prior, s.index, s.total, s.timestep),
        )
        .map_err(|e| match e {
            unclip_prior::PriorError::Cancelled { .. } => UnclipError::Cancelled {
                stage: Stage::Prior,
            },
            e => e.into(),
        })?;
        Ok(out.image_embeddings)
    }

    /// Decoder + super-resolution from image embeddings `[B, E]` with the caption conditioning.
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        image_embeddings: Tensor<2>,
        cond: &EncodedText,
        uncond: &EncodedText,
        decoder_latents: Option<Tensor<4>>,
        super_res_latents: Option<Tensor<4>>,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let guided = self.settings.decoder_guidance_scale > 1.0;
        let mut scheduler = self.decoder_scheduler.clone();
        let image_small = sample_decoder(
            &self.decoder,
            &self.text_proj,
            &mut scheduler,
            DecoderRequest {
                image_embeddings: image_embeddings.clone(),
                text: cond.decoder(),
                uncond_text: guided.then(|| uncond.decoder()),
                guidance_scale: self.settings.decoder_guidance_scale,
                num_inference_steps: self.settings.decoder_steps,
                latents: decoder_latents,
            },
            noise,
            &mut |s| report(progress, Stage::Decoder, s.index, s.total, s.timestep),
        )
        .map_err(|e| stage_error(e, Stage::Decoder))?;
        let images = self.super_resolve(image_small.clone(), super_res_latents, noise, progress)?;
        Ok(Generation {
            images,
            image_embeddings,
            image_small,
        })
    }

    /// The super-resolution stage (when enabled) and the pipeline's `[0, 1]` output.
    fn super_resolve(
        &self,
        image_small: Tensor<4>,
        latents: Option<Tensor<4>>,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Tensor<4>, UnclipError> {
        if !self.settings.super_res {
            return Ok(to_unit_range(image_small));
        }
        let mut scheduler = self.super_res_scheduler.clone();
        let x = sample_super_res(
            &self.super_res_first,
            &self.super_res_last,
            &mut scheduler,
            SuperResRequest {
                image_small,
                num_inference_steps: self.settings.super_res_steps,
                latents,
                output_size: None,
            },
            noise,
            &mut |s| report(progress, Stage::SuperRes, s.index, s.total, s.timestep),
        )
        .map_err(|e| stage_error(e, Stage::SuperRes))?;
        Ok(to_unit_range(x))
    }

    /// A variation that starts from the DDIM-inverted latent of the input image, as the paper
    /// does (DALL-E 2 §3.1), rather than from fresh noise.
    ///
    /// The image (centre-cropped to a square, resized to the decoder's sample size, in `[-1, 1]`)
    /// is inverted with deterministic DDIM under the decoder conditioned on its own CLIP image
    /// embedding, up to the noise level of `strength` in `(0, 1]` (the last
    /// `ceil(strength * decoder_steps)` of the decoder's timesteps; 1 inverts all the way to
    /// `x_T`), then sampled back with DDIM (`eta` 0: a reconstruction close to the input; larger
    /// `eta` and `strength`: freer variations), then super-resolved.
    pub fn variation_from_inversion(
        &self,
        image: &RgbImage,
        strength: f32,
        eta: f32,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(UnclipError::InvalidSetting {
                name: "strength",
                message: format!("{strength} is not in (0, 1]"),
            });
        }
        let emb = self.encode_images(std::slice::from_ref(image))?; // [1, E]
        let x0 = self.decoder_input(image)?; // [1, 3, S, S]
        let cond = self.encode_text(&[""])?;
        let guided = self.settings.decoder_guidance_scale > 1.0;
        let model = GuidedDecoder::new(
            &self.decoder,
            &self.text_proj,
            emb.clone(),
            cond.decoder(),
            guided.then(|| cond.decoder()),
            self.settings.decoder_guidance_scale,
        )
        .map_err(|e| stage_error(e, Stage::Decoder))?;
        let mut scheduler = self.decoder_scheduler.clone();
        scheduler.set_timesteps(self.settings.decoder_steps)?;
        let all = scheduler.timesteps().to_vec(); // descending
        let k = ((strength * all.len() as f32).ceil() as usize).clamp(1, all.len());
        let sub = all[all.len() - k..].to_vec();
        let x_t = scheduler
            .ddim_invert(x0, &sub, |x, t| model.output(x, t))
            .map_err(|e| stage_error(e, Stage::Decoder))?;
        let mut x = x_t;
        for (i, &t) in sub.iter().enumerate() {
            let prev = sub.get(i + 1).copied();
            let out = model
                .output(x.clone(), t)
                .map_err(|e| stage_error(e, Stage::Decoder))?;
            x = scheduler
                .ddim_step(out, t, x, prev, eta, noise)?
                .prev_sample;
            if let std::ops::ControlFlow::Break(()) =
                report(progress, Stage::Decoder, i, sub.len(), t)
            {
                return Err(UnclipError::Cancelled {
                    stage: Stage::Decoder,
                });
            }
        }
        let image_small = x.clamp(-1.0, 1.0);
        let images = self.super_resolve(image_small.clone(), None, noise, progress)?;
        Ok(Generation {
            images,
            image_embeddings: emb,
            image_small,
        })
    }

    /// An image as the decoder sees it: centre square crop, antialiased resize to the decoder's
    /// sample size, `[-1, 1]`, `[1, 3, S, S]`.
    pub fn decoder_input(&self, image: &RgbImage) -> Result<Tensor<4>, UnclipError> {
        let s = self.decoder.config.sample_size.map(|s| s.hw()[0]).ok_or(
            UnclipError::InvalidSetting {
                name: "decoder.sample_size",
                message: "the decoder config has no sample_size".into(),
            },
        )?;
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            return Err(UnclipError::InvalidSetting {
                name: "image",
                message: "empty image".into(),
            });
        }
        let side = w.min(h);
        let (x0, y0) = ((w - side) / 2, (h - side) / 2);
        let raw = image.as_raw();
        let mut crop = Vec::with_capacity(side * side * 3);
        for y in y0..y0 + side {
            crop.extend_from_slice(&raw[(y * w + x0) * 3..(y * w + x0 + side) * 3]);
        }
        let px = unclip_nn::resize_aa_u8_torch(&crop, side, side, 3, s, s);
        let mut planar = vec![0f32; 3 * s * s];
        for (i, chunk) in px.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[c * s * s + i] = chunk[c] as f32 / 127.5 - 1.0;
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(planar, [1, 3, s, s]),
            &self.device,
        ))
    }

    /// Variations of images: CLIP image embedding -> decoder -> upsamplers, from fresh noise (as
    /// Karlo's image-variation pipeline; the caption is the empty prompt). `per_image` variations
    /// of each image, in image order.
    pub fn variations(
        &self,
        images: &[RgbImage],
        per_image: usize,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let mut noise = SeededNoise::new(self.settings.seed);
        self.variations_with(images, per_image, &mut noise, Latents::default(), progress)
    }

    /// [`Self::variations`] drawing from `noise`, with optional initial latents.
    pub fn variations_with(
        &self,
        images: &[RgbImage],
        per_image: usize,
        noise: &mut dyn NoiseSource,
        latents: Latents,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        if images.is_empty() || per_image == 0 {
            return Err(UnclipError::InvalidSetting {
                name: "images",
                message: "at least one image and one variation per image".into(),
            });
        }
        let emb = self.encode_images(images)?; // [N, E]
        let e = emb.dims()[1];
        let n = images.len();
        let emb = emb
            .unsqueeze_dim::<3>(1)
            .expand([n, per_image, e])
            .reshape([n * per_image, e]);
        let cond = self.encode_text(&vec![""; n * per_image])?;
        self.decode(
            emb,
            &cond,
            &cond,
            latents.decoder,
            latents.super_res,
            noise,
            progress,
        )
    }

    /// Interpolation between two image embeddings `a, b [1, E]` over `frames` frames (slerp),
    /// decoded with the same noise for every frame (x_T held fixed: the seed is reset per frame).
    pub fn interpolate(
        &self,
        a: Tensor<2>,
        b: Tensor<2>,
        frames: usize,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Generation>, UnclipError> {
        self.interpolate_with(a, b, frames, XtMode::Fixed, progress)
    }

    /// [`Self::interpolate`] with a choice of how the decoder's `x_T` moves between frames.
    pub fn interpolate_with(
        &self,
        a: Tensor<2>,
        b: Tensor<2>,
        frames: usize,
        xt: XtMode,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Generation>, UnclipError> {
        if frames < 2 {
            return Err(UnclipError::InvalidSetting {
                name: "frames",
                message: "at least 2".into(),
            });
        }
        let cond = self.encode_text(&[""])?;
        // x_T of both ends, flattened to [1, C*H*W], when it is interpolated.
        let ends = match xt {
            XtMode::Fixed => None,
            XtMode::Interpolated { seed_b } => {
                let s = self.decoder.config.sample_size.map(|s| s.hw()).ok_or(
                    UnclipError::InvalidSetting {
                        name: "decoder.sample_size",
                        message: "the decoder config has no sample_size".into(),
                    },
                )?;
                let shape = [1, self.decoder.in_channels(), s[0], s[1]];
                let n = shape[1] * shape[2] * shape[3];
                let draw = |seed: u64| -> Result<Tensor<2>, UnclipError> {
                    let mut noise = SeededNoise::new(seed);
                    Ok(
                        unclip_diffusion::randn::<4, _>(&mut noise, shape, &self.device)?
                            .reshape([1, n]),
                    )
                };
                Some((draw(self.settings.seed)?, draw(seed_b)?, shape))
            }
        };
        (0..frames)
            .map(|k| {
                let t = k as f32 / (frames - 1) as f32;
                let mut noise = SeededNoise::new(self.settings.seed);
                // slerp keeps Gaussian noise at its typical norm (a lerp would shrink it).
                let latents = match &ends {
                    Some((xa, xb, shape)) => {
                        // Skip the x_T draw so the step noise is the fixed mode's.
                        unclip_diffusion::randn::<4, _>(&mut noise, *shape, &self.device)?;
                        Some(slerp(xa.clone(), xb.clone(), t).reshape(*shape))
                    }
                    None => None,
                };
                self.decode(
                    slerp(a.clone(), b.clone(), t),
                    &cond,
                    &cond,
                    latents,
                    None,
                    &mut noise,
                    progress,
                )
            })
            .collect()
    }

    /// Text diff (DALL-E 2 §3): moves an image embedding `z_i [1, E]` toward the normalised
    /// difference `d = normalize(z_t(target) - z_t(source))` by slerp with angle fraction `theta`:
    /// `slerp(z_i, d, theta)`, for each theta in `thetas`.
    pub fn text_diff(
        &self,
        image_embedding: Tensor<2>,
        source: &str,
        target: &str,
        thetas: &[f32],
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Generation>, UnclipError> {
        let t = self.encode_text(&[source, target])?;
        let e = t.embeds.dims()[1];
        let zs = t.embeds.clone().slice([0..1, 0..e]);
        let zt = t.embeds.slice([1..2, 0..e]);
        let d = unclip_clip::l2_normalize(zt - zs);
        let zi_norm = image_embedding
            .clone()
            .powi_scalar(2)
            .sum()
            .sqrt()
            .into_scalar::<f32>();
        let cond = self.encode_text(&[""])?;
        thetas
            .iter()
            .map(|&theta| {
                // slerp on the unit sphere, then restore the image embedding's norm
                let z = slerp(
                    unclip_clip::l2_normalize(image_embedding.clone()),
                    d.clone(),
                    theta,
                ) * zi_norm;
                let mut noise = SeededNoise::new(self.settings.seed);
                self.decode(z, &cond, &cond, None, None, &mut noise, progress)
            })
            .collect()
    }

    /// Repeats an encoded text `n` times along the batch.
    pub fn repeat_text(text: &EncodedText, n: usize) -> EncodedText {
        text.repeat(n)
    }
}
