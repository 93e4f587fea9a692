//! The unCLIP pipeline: diffusers' `UnCLIPPipeline` (text -> image) and
//! `UnCLIPImageVariationPipeline` (image -> variations), plus interpolation and text diffs from
//! the DALL-E 2 paper, assembled from the stage crates.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::tensor::{Bool, Device, FloatDType, Int, Tensor, TensorData};
use image::RgbImage;
use unclip_clip::{
    ClipImageProcessor, ClipTextModelWithProjection, ClipVisionConfig,
    ClipVisionModelWithProjection, NoisedClipVisionModel, Rgb8,
};
use unclip_decoder::{
    DecoderError, DecoderGuide, DecoderRequest, TextConditioning, UNet2DConditionConfig,
    UNet2DConditionModel, UnCLIPTextProjModel, sample_decoder_guided,
};
use unclip_diffusion::{NoiseSource, Sampler, SeededNoise, UnCLIPScheduler};
use unclip_prior::sample::PriorSampleConfig;
use unclip_prior::{PriorConditioning, PriorTransformer};
use unclip_tokenizer::ClipTokenizer;
use unclip_upsampler::{SuperResRequest, UNet2DModel, sample_super_res, to_rgb8, to_unit_range};

use crate::UnclipError;
use crate::component::{Component, ComponentModel, MemoryMode, prepare_device};
use crate::index::ModelIndex;
use crate::progress::{Control, Progress, ProgressFn, Stage};

/// Name of the optional file in a model folder with the model's recommended [`Settings`].
pub const SETTINGS_FILE: &str = "unclip_settings.json";

/// Per-call settings (Karlo's defaults).
///
/// A model folder may recommend its own in [`SETTINGS_FILE`] (`unclip_settings.json`: any
/// subset of the fields, in snake case; the rest keep Karlo's defaults). Diffusers has no such
/// file; the embedded shapes model has one, because its small decoder needs more steps than
/// Karlo's. [`UnclipBuilder::from_pretrained`] uses it as the base that the builder's setters
/// change; [`Settings::from_model_dir`] reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Prior denoising steps.
    pub prior_steps: usize,
    /// Decoder denoising steps.
    pub decoder_steps: usize,
    /// Steps of the (first) super-resolution stage (at least 2).
    pub super_res_steps: usize,
    /// Steps of the second super-resolution stage, when the pipeline has one.
    pub super_res_2_steps: usize,
    /// `<= 1` disables guidance.
    pub prior_guidance_scale: f32,
    /// `<= 1` disables guidance.
    pub decoder_guidance_scale: f32,
    /// Prior candidates per prompt, reranked by similarity with the text embedding (paper: 2).
    pub prior_candidates: usize,
    /// Decoder samples drawn per image; with more than 1 the pipeline keeps, for each image,
    /// the sample whose CLIP image embedding is closest (cosine) to the embedding the decoder
    /// was conditioned on, and super-resolves only that one (CLIP reranking, as DALL-E's; it
    /// needs the folder's `image_encoder`). Costs one decoder run per candidate.
    pub decoder_candidates: usize,
    /// GLIDE's CLIP guidance of the decoder: at every decoder step the prediction is shifted by
    /// this scale times `grad_{x_t}` of the noised CLIP's logit of the caption
    /// (`exp(logit_scale) * cos(image, caption)`; Dhariwal & Nichol's classifier guidance,
    /// [`unclip_decoder::sample_decoder_guided`]). Needs the folder's `noised_image_encoder`;
    /// `0` (the default) disables it. Costs one noised-CLIP forward and backward per step.
    pub decoder_clip_guidance_scale: f32,
    /// Seed of the default noise source.
    pub seed: u64,
    /// Run the super-resolution stages (otherwise the decoder's 64x64 output is returned).
    pub super_res: bool,
    /// The decoder's reverse update (Karlo: the ancestral step; JSON `"ancestral"` or
    /// `{"ddim": {"eta": 0.0}}`).
    pub decoder_sampler: Sampler,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prior_steps: 25,
            decoder_steps: 25,
            super_res_steps: 7,
            super_res_2_steps: 7,
            prior_guidance_scale: 4.0,
            decoder_guidance_scale: 8.0,
            prior_candidates: 1,
            decoder_candidates: 1,
            decoder_clip_guidance_scale: 0.0,
            seed: 0,
            super_res: true,
            decoder_sampler: Sampler::Ancestral,
        }
    }
}

impl Settings {
    /// The settings a model folder recommends: its [`SETTINGS_FILE`] over Karlo's defaults, or
    /// the defaults when it has none. A file that is not valid JSON, or that has a key that is
    /// not a setting, is an error naming the file.
    ///
    /// ```no_run
    /// let settings = unclip::Settings::from_model_dir("models/shapes")?;
    /// println!("{} decoder steps", settings.decoder_steps);
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Settings, UnclipError> {
        let path = dir.as_ref().join(SETTINGS_FILE);
        if path.is_file() {
            Ok(unclip_nn::read_json(&path)?)
        } else {
            Ok(Settings::default())
        }
    }
}

/// Initial latents to use instead of drawing them (for reproducing a recorded run). The second
/// super-resolution stage, when there is one, always draws its `x_T` from the noise source.
#[derive(Debug, Clone, Default)]
pub struct Latents {
    /// `[B * candidates, E]`
    pub prior: Option<Tensor<2>>,
    /// `[B, C, h, w]`, or `[B * decoder_candidates, C, h, w]` (candidate `c` of image `b` at
    /// row `c * B + b`); a batch of `B` is used for every candidate.
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
    /// When a second super-resolution stage ran: the first stage's output clamped to `[-1, 1]`
    /// `[B, 3, H1, W1]`, which the second stage was conditioned on.
    pub image_mid: Option<Tensor<4>>,
}

impl Generation {
    /// The images as 8-bit RGB (`image::RgbImage`, e.g. to `save` as PNG), in batch order.
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

    pub(crate) fn decoder(&self) -> TextConditioning {
        TextConditioning {
            prompt_embeds: self.embeds.clone(),
            hidden_states: self.hidden_states.clone(),
            mask: self.mask.clone(),
        }
    }

    pub(crate) fn repeat(&self, n: usize) -> EncodedText {
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

/// The second super-resolution stage (DALL-E 2's 256 -> 1024 after the 64 -> 256 one): one
/// `UNet2DModel` for every step, with its own scheduler.
#[derive(Debug, Clone)]
pub struct SuperRes2 {
    /// `super_res_2` in `model_index.json`.
    pub model: Component<UNet2DModel>,
    /// `super_res_2_scheduler` in `model_index.json`.
    pub scheduler: UnCLIPScheduler,
}

/// The assembled pipeline. Build it with [`UnclipBuilder`].
///
/// The models are [`Component`]s: resident, or loaded per stage in [`MemoryMode::Staged`]
/// ([`Component::model`] gives the model either way). The pipeline computes in one float dtype
/// ([`UnclipBuilder::dtype`]).
pub struct UnclipPipeline {
    /// The device every stage computes on.
    pub device: Device,
    /// Per-call settings (may be changed between calls).
    pub settings: Settings,
    /// CLIP BPE tokenizer (always resident).
    pub tokenizer: ClipTokenizer,
    /// CLIP text encoder.
    pub text_encoder: Component<ClipTextModelWithProjection>,
    /// CLIP image encoder, present in image-variations checkpoints.
    pub image_encoder: Option<Component<ClipVisionModelWithProjection>>,
    /// GLIDE's noised CLIP image tower (`noised_image_encoder/`), for
    /// [`Settings::decoder_clip_guidance_scale`].
    pub noised_image_encoder: Option<Component<NoisedClipVisionModel>>,
    /// CLIP image preprocessing of the image encoder.
    pub feature_extractor: Option<ClipImageProcessor>,
    /// Diffusion prior, present in text-to-image checkpoints.
    pub prior: Option<Component<PriorTransformer>>,
    /// The prior's scheduler (with the prior).
    pub prior_scheduler: Option<UnCLIPScheduler>,
    /// The decoder's text / image-embedding projection.
    pub text_proj: Component<UnCLIPTextProjModel>,
    /// The decoder UNet.
    pub decoder: Component<UNet2DConditionModel>,
    /// The decoder's scheduler.
    pub decoder_scheduler: UnCLIPScheduler,
    /// Every super-resolution step but the last.
    pub super_res_first: Component<UNet2DModel>,
    /// The last super-resolution step: the same weights as `super_res_first` when the folder has
    /// no `super_res_last` or the builder was given one model ([`UnclipBuilder::super_res_single`]).
    pub super_res_last: Component<UNet2DModel>,
    /// The (first) super-resolution stage's scheduler.
    pub super_res_scheduler: UnCLIPScheduler,
    /// The optional second super-resolution stage, run after the first.
    pub super_res_2: Option<SuperRes2>,
    dtype: FloatDType,
    memory: MemoryMode,
    /// Names of the staged components loaded right now (while their stage runs).
    loaded: Mutex<Vec<&'static str>>,
}

/// A model a stage holds while it runs; a staged one is listed in `loaded` until dropped.
pub(crate) struct Held<'a, M> {
    model: Arc<M>,
    slot: Option<(&'a Mutex<Vec<&'static str>>, &'static str)>,
}

impl<M> std::ops::Deref for Held<'_, M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.model
    }
}

impl<M> Drop for Held<'_, M> {
    fn drop(&mut self) {
        if let Some((loaded, name)) = self.slot {
            let mut loaded = loaded.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = loaded.iter().position(|n| *n == name) {
                loaded.remove(i);
            }
        }
    }
}

/// Which super-resolution models the builder was given.
#[derive(Default)]
enum SuperResGiven {
    #[default]
    FromFolder,
    FirstAndLast(Box<UNet2DModel>, Box<UNet2DModel>),
    Single(Box<UNet2DModel>),
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
///
/// The folder's `model_index.json` lists the components. Besides Karlo's, two optional ones are
/// read: `super_res_last` (when absent, `super_res_first` runs every super-resolution step) and
/// a second super-resolution stage, `super_res_2` (`["unclip", "UNet2DModel"]`, used for every
/// step) with `super_res_2_scheduler` (`["unclip", "UnCLIPScheduler"]`, a folder with
/// `scheduler_config.json`).
#[derive(Default)]
pub struct UnclipBuilder {
    dir: Option<PathBuf>,
    device: Option<Device>,
    /// `.settings(..)`: replaces the folder's recommendation.
    settings: Option<Settings>,
    /// The single-setting setters, applied in order over the base settings at `build`.
    setting_changes: Vec<Box<dyn Fn(&mut Settings) + Send + Sync>>,
    memory: MemoryMode,
    dtype: Option<FloatDType>,
    tokenizer: Option<ClipTokenizer>,
    text_encoder: Option<ClipTextModelWithProjection>,
    image_encoder: Option<ClipVisionModelWithProjection>,
    noised_image_encoder: Option<NoisedClipVisionModel>,
    prior: Option<PriorTransformer>,
    prior_scheduler: Option<UnCLIPScheduler>,
    decoder: Option<UNet2DConditionModel>,
    text_proj: Option<UnCLIPTextProjModel>,
    super_res: SuperResGiven,
    super_res_2: Option<(UNet2DModel, UnCLIPScheduler)>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $field:ident, $t:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, v: $t) -> Self {
            self.setting_changes.push(Box::new(move |s: &mut Settings| s.$field = v));
            self
        }
    };
}

impl UnclipBuilder {
    /// A builder with Karlo's default settings and no components (see [`UnclipBuilder`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The diffusers folder to read components from (`model_index.json` + one folder each).
    /// Its recommended settings ([`SETTINGS_FILE`], if any) replace Karlo's defaults, under
    /// [`Self::settings`] and the single-setting setters.
    pub fn from_pretrained(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The device to compute on (required: the library picks none).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// All per-call settings at once (instead of the folder's recommendation or Karlo's
    /// defaults; the single-setting setters still apply on top).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Whether the models loaded from the folder stay in memory ([`MemoryMode::Resident`], the
    /// default) or are loaded per stage and dropped after it ([`MemoryMode::Staged`]).
    pub fn memory(mut self, mode: MemoryMode) -> Self {
        self.memory = mode;
        self
    }

    /// The float dtype the pipeline computes in (default f32).
    ///
    /// Checkpoints are read as f32 and every model is cast to `dtype`; the device is configured
    /// to create float tensors of `dtype` (burn 0.22 fixes a device's default float dtype at the
    /// first tensor made on it, for the whole process), so everything the stages compute follows.
    /// `build` fails with [`UnclipError::UnsupportedDtype`] when the device cannot compute in
    /// `dtype` (ndarray: f32 and f64 only; flex: f32, f64, f16, bf16) or already makes tensors
    /// of another dtype.
    ///
    /// ```no_run
    /// use burn::tensor::{Device, FloatDType};
    /// // First thing in the process: no tensor may exist on the device yet.
    /// let pipe = unclip::UnclipBuilder::new()
    ///     .device(Device::flex())
    ///     .dtype(FloatDType::F16)
    ///     .from_pretrained("karlo-v1-alpha")
    ///     .build()?;
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
    pub fn dtype(mut self, dtype: FloatDType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    setter!(
        /// Prior denoising steps (Karlo: 25).
        prior_steps, prior_steps, usize
    );
    setter!(
        /// Decoder denoising steps (Karlo: 25).
        decoder_steps, decoder_steps, usize
    );
    setter!(
        /// Steps of the (first) super-resolution stage (Karlo: 7).
        super_res_steps, super_res_steps, usize
    );
    setter!(
        /// Steps of the second super-resolution stage (default 7).
        super_res_2_steps, super_res_2_steps, usize
    );
    setter!(
        /// Prior classifier-free guidance scale (`<= 1` disables guidance).
        prior_guidance_scale, prior_guidance_scale, f32
    );
    setter!(
        /// Decoder classifier-free guidance scale (`<= 1` disables guidance).
        decoder_guidance_scale, decoder_guidance_scale, f32
    );
    setter!(
        /// Prior candidates per prompt, reranked by similarity with the text embedding.
        prior_candidates, prior_candidates, usize
    );
    setter!(
        /// Decoder samples per image, reranked by CLIP similarity with the image embedding
        /// (see [`Settings::decoder_candidates`]).
        decoder_candidates, decoder_candidates, usize
    );
    setter!(
        /// GLIDE's CLIP guidance of the decoder by the noised CLIP (see
        /// [`Settings::decoder_clip_guidance_scale`]).
        decoder_clip_guidance_scale, decoder_clip_guidance_scale, f32
    );
    setter!(
        /// Seed of the default noise source.
        seed, seed, u64
    );
    setter!(
        /// Whether the super-resolution stages run (otherwise the decoder's output is returned).
        with_super_res, super_res, bool
    );
    setter!(
        /// The decoder's reverse update (ancestral, Karlo's; or DDIM).
        decoder_sampler, decoder_sampler, Sampler
    );

    /// A tokenizer instead of the folder's `tokenizer`.
    pub fn tokenizer(mut self, t: ClipTokenizer) -> Self {
        self.tokenizer = Some(t);
        self
    }
    /// A text encoder instead of the folder's (kept resident in every memory mode).
    pub fn text_encoder(mut self, m: ClipTextModelWithProjection) -> Self {
        self.text_encoder = Some(m);
        self
    }
    /// An image encoder instead of the folder's (kept resident in every memory mode).
    pub fn image_encoder(mut self, m: ClipVisionModelWithProjection) -> Self {
        self.image_encoder = Some(m);
        self
    }

    /// The noised CLIP image tower for the decoder's CLIP guidance
    /// ([`Settings::decoder_clip_guidance_scale`]).
    pub fn noised_image_encoder(mut self, m: NoisedClipVisionModel) -> Self {
        self.noised_image_encoder = Some(m);
        self
    }
    /// A prior instead of the folder's (kept resident in every memory mode); give its
    /// scheduler with [`Self::prior_scheduler`] when the folder has none.
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
    /// A decoder UNet instead of the folder's (kept resident in every memory mode).
    pub fn decoder(mut self, m: UNet2DConditionModel) -> Self {
        self.decoder = Some(m);
        self
    }
    /// A text projection instead of the folder's (kept resident in every memory mode).
    pub fn text_proj(mut self, m: UnCLIPTextProjModel) -> Self {
        self.text_proj = Some(m);
        self
    }
    /// The super-resolution models: `first` for every step but the last, `last` for the last
    /// (kept resident in every memory mode).
    pub fn super_res(mut self, first: UNet2DModel, last: UNet2DModel) -> Self {
        self.super_res = SuperResGiven::FirstAndLast(Box::new(first), Box::new(last));
        self
    }
    /// One super-resolution model for every step (held once, not copied).
    pub fn super_res_single(mut self, model: UNet2DModel) -> Self {
        self.super_res = SuperResGiven::Single(Box::new(model));
        self
    }
    /// The second super-resolution stage (e.g. 256 -> 1024): `model` runs every step with
    /// `scheduler` ([`Settings::super_res_2_steps`] of them); its output size is the model
    /// config's `sample_size`. Replaces the folder's `super_res_2`, if any.
    pub fn super_res_2(mut self, model: UNet2DModel, scheduler: UnCLIPScheduler) -> Self {
        self.super_res_2 = Some((model, scheduler));
        self
    }

    /// Loads every component not given explicitly from the folder (or, in
    /// [`MemoryMode::Staged`], reads its config and checks its weights file) and checks the
    /// result. A missing device, a missing component or a bad file is an error naming it.
    ///
    /// ```
    /// use unclip::{UnclipBuilder, UnclipError};
    /// // No device: the library picks none for you.
    /// let err = UnclipBuilder::new().from_pretrained("../models/shapes").build().err();
    /// assert!(matches!(err, Some(UnclipError::InvalidSetting { name: "device", .. })));
    /// ```
    pub fn build(self) -> Result<UnclipPipeline, UnclipError> {
        let mut device = self.device.ok_or(UnclipError::InvalidSetting {
            name: "device",
            message: "choose a device with `.device(..)` (the library picks none)".into(),
        })?;
        let dtype = self.dtype.unwrap_or(FloatDType::F32);
        prepare_device(&mut device, dtype)?;
        let mode = self.memory;
        let dir = self.dir.clone();
        let index = match &dir {
            Some(d) => Some(ModelIndex::from_dir(d)?),
            None => None,
        };
        let mut settings = match (self.settings, &dir) {
            (Some(s), _) => s,
            (None, Some(d)) => Settings::from_model_dir(d)?,
            (None, None) => Settings::default(),
        };
        for change in &self.setting_changes {
            change(&mut settings);
        }
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
        // A given model stays resident; otherwise the folder's, in the memory mode.
        fn component<M: ComponentModel>(
            name: &'static str,
            given: Option<M>,
            sub: &dyn Fn(&'static str) -> Result<PathBuf, UnclipError>,
            mode: MemoryMode,
            device: &Device,
            dtype: FloatDType,
        ) -> Result<Component<M>, UnclipError> {
            match given {
                Some(m) => Ok(Component::resident(name, m, dtype)),
                None => Component::from_dir(name, sub(name)?, mode, device, dtype),
            }
        }
        // An optional component: the given model, else the folder's when its index lists it.
        fn optional<M: ComponentModel>(
            name: &'static str,
            given: Option<M>,
            listed: bool,
            sub: &dyn Fn(&'static str) -> Result<PathBuf, UnclipError>,
            mode: MemoryMode,
            device: &Device,
            dtype: FloatDType,
        ) -> Result<Option<Component<M>>, UnclipError> {
            match given {
                Some(m) => Ok(Some(Component::resident(name, m, dtype))),
                None if listed => Ok(Some(component(name, None, sub, mode, device, dtype)?)),
                None => Ok(None),
            }
        }

        let tokenizer = match self.tokenizer {
            Some(t) => t,
            None => ClipTokenizer::from_dir(sub("tokenizer")?)?,
        };
        let text_encoder = component(
            "text_encoder",
            self.text_encoder,
            &sub,
            mode,
            &device,
            dtype,
        )?;
        let image_encoder = optional(
            "image_encoder",
            self.image_encoder,
            has("image_encoder"),
            &sub,
            mode,
            &device,
            dtype,
        )?;
        let noised_image_encoder = optional(
            "noised_image_encoder",
            self.noised_image_encoder,
            has("noised_image_encoder"),
            &sub,
            mode,
            &device,
            dtype,
        )?;
        let feature_extractor = if has("feature_extractor") {
            Some(ClipImageProcessor::from_file(
                sub("feature_extractor")?.join("preprocessor_config.json"),
            )?)
        } else {
            match &image_encoder {
                None => None,
                Some(c) => {
                    if let Some(m) = c.resident_model() {
                        Some(ClipImageProcessor::for_size(
                            m.vision_model.input_shape()[1],
                        ))
                    } else if let Some(d) = c.staged_dir() {
                        Some(ClipImageProcessor::for_size(
                            ClipVisionConfig::from_file(d.join("config.json"))?.image_size,
                        ))
                    } else {
                        None
                    }
                }
            }
        };
        let prior = optional(
            "prior",
            self.prior,
            has("prior"),
            &sub,
            mode,
            &device,
            dtype,
        )?;
        let prior_scheduler = match self.prior_scheduler {
            Some(s) => Some(s),
            None if prior.is_some() => Some(scheduler(dir.as_deref(), "prior_scheduler")?),
            None => None,
        };
        let text_proj = component("text_proj", self.text_proj, &sub, mode, &device, dtype)?;
        let decoder = component("decoder", self.decoder, &sub, mode, &device, dtype)?;
        // A noised CLIP guides the decoder's samples, so it must take their `[C, H, W]`.
        if let Some(c) = &noised_image_encoder {
            let takes = match (c.resident_model(), c.staged_dir()) {
                (Some(m), _) => Some(m.vision_model.input_shape()),
                (None, Some(d)) => {
                    Some(ClipVisionConfig::from_file(d.join("config.json"))?.input_shape())
                }
                (None, None) => None,
            };
            let samples = decoder_sample_shape(decoder.config())?;
            if let Some(takes) = takes.filter(|t| *t != samples) {
                return Err(UnclipError::InvalidSetting {
                    name: "noised_image_encoder",
                    message: format!(
                        "it takes {takes:?} images and the decoder samples {samples:?} (a noised CLIP must be trained at the decoder's size)"
                    ),
                });
            }
        }
        let (super_res_first, super_res_last) = match self.super_res {
            SuperResGiven::FirstAndLast(first, last) => (
                Component::resident("super_res_first", *first, dtype),
                Component::resident("super_res_last", *last, dtype),
            ),
            SuperResGiven::Single(m) => {
                let first = Component::resident("super_res_first", *m, dtype);
                let last = first.shared_as("super_res_last");
                (first, last)
            }
            SuperResGiven::FromFolder => {
                let first = component("super_res_first", None, &sub, mode, &device, dtype)?;
                let last = if has("super_res_last") || index.is_none() {
                    component("super_res_last", None, &sub, mode, &device, dtype)?
                } else {
                    first.shared_as("super_res_last")
                };
                (first, last)
            }
        };
        let super_res_2 = match self.super_res_2 {
            Some((m, scheduler)) => Some(SuperRes2 {
                model: Component::resident("super_res_2", m, dtype),
                scheduler,
            }),
            None if has("super_res_2") => Some(SuperRes2 {
                model: component("super_res_2", None, &sub, mode, &device, dtype)?,
                scheduler: scheduler(dir.as_deref(), "super_res_2_scheduler")?,
            }),
            None => None,
        };
        Ok(UnclipPipeline {
            decoder_scheduler: scheduler(dir.as_deref(), "decoder_scheduler")?,
            super_res_scheduler: scheduler(dir.as_deref(), "super_res_scheduler")?,
            device,
            settings,
            tokenizer,
            text_encoder,
            image_encoder,
            noised_image_encoder,
            feature_extractor,
            prior,
            prior_scheduler,
            text_proj,
            decoder,
            super_res_first,
            super_res_last,
            super_res_2,
            dtype,
            memory: mode,
            loaded: Mutex::new(Vec::new()),
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
pub(crate) fn report(
    progress: &mut ProgressFn<'_>,
    stage: Stage,
    index: usize,
    total: usize,
    timestep: usize,
    preview: Option<&Tensor<4>>,
) -> ControlFlow<()> {
    match progress(Progress {
        stage,
        step: index + 1,
        total,
        timestep,
        preview,
    }) {
        Control::Continue => ControlFlow::Continue(()),
        Control::Cancel => ControlFlow::Break(()),
    }
}

/// A decoder-family error of `stage`, with a cancellation turned into the pipeline's own.
pub(crate) fn stage_error(e: DecoderError, stage: Stage) -> UnclipError {
    match e {
        DecoderError::Cancelled { .. } => UnclipError::Cancelled { stage },
        e => e.into(),
    }
}

impl UnclipPipeline {
    /// The float dtype the pipeline computes in ([`UnclipBuilder::dtype`]).
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// Where the models loaded from the folder are kept ([`UnclipBuilder::memory`]).
    pub fn memory_mode(&self) -> MemoryMode {
        self.memory
    }

    /// The components whose weights are in memory now, in pipeline order: the resident ones,
    /// and, during a call in [`MemoryMode::Staged`], those of the running stage (so a progress
    /// callback sees the stage's models, and between calls only the resident ones are listed).
    /// A `super_res_last` that is `super_res_first`'s weights is not listed separately.
    ///
    /// ```no_run
    /// # use burn::tensor::Device;
    /// use unclip::{Control, MemoryMode, UnclipBuilder};
    /// let pipe = UnclipBuilder::new()
    ///     .device(Device::flex())
    ///     .from_pretrained("karlo-v1-alpha")
    ///     .memory(MemoryMode::Staged)
    ///     .build()?;
    /// pipe.text_to_image(&["a red circle"], &mut |p| {
    ///     println!("{}: {:?}", p.stage, pipe.resident_components()); // e.g. decoder: ["text_proj", "decoder"]
    ///     Control::Continue
    /// })?;
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
    pub fn resident_components(&self) -> Vec<&'static str> {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let last_is_first = self
            .super_res_last
            .shares_weights_with(&self.super_res_first);
        let all = [
            Some(("text_encoder", self.text_encoder.is_resident())),
            self.image_encoder
                .as_ref()
                .map(|c| ("image_encoder", c.is_resident())),
            self.noised_image_encoder
                .as_ref()
                .map(|c| ("noised_image_encoder", c.is_resident())),
            self.prior.as_ref().map(|c| ("prior", c.is_resident())),
            Some(("text_proj", self.text_proj.is_resident())),
            Some(("decoder", self.decoder.is_resident())),
            Some(("super_res_first", self.super_res_first.is_resident())),
            (!last_is_first).then(|| ("super_res_last", self.super_res_last.is_resident())),
            self.super_res_2
                .as_ref()
                .map(|s| ("super_res_2", s.model.is_resident())),
        ];
        all.into_iter()
            .flatten()
            .filter(|(name, resident)| *resident || loaded.contains(name))
            .map(|(name, _)| name)
            .collect()
    }

    /// The model of `component` for a stage: the resident one, or loaded now and listed as
    /// loaded until the returned guard is dropped.
    pub(crate) fn hold<M: ComponentModel>(
        &self,
        component: &Component<M>,
    ) -> Result<Held<'_, M>, UnclipError> {
        if component.is_resident() {
            return Ok(Held {
                model: component.model()?,
                slot: None,
            });
        }
        let model = component.model()?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(component.name());
        Ok(Held {
            model,
            slot: Some((&self.loaded, component.name())),
        })
    }

    /// `t` in the pipeline's float dtype (tensors given by the caller may have another).
    pub(crate) fn in_dtype<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        if t.dtype() == self.dtype.into() {
            t
        } else {
            t.cast(self.dtype)
        }
    }

    /// Tokenises and encodes prompts with the CLIP text encoder, called without the attention
    /// mask as the unCLIP pipelines call it (the mask goes to the prior and the decoder).
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use unclip::UnclipBuilder;
    /// let pipe = UnclipBuilder::new().device(Device::flex()).from_pretrained("../models/shapes").build()?;
    /// let text = pipe.encode_text(&["a large red circle in the top left", "a small blue square"])?;
    /// assert_eq!(text.embeds.dims()[0], 2); // [B, E]
    /// assert_eq!(text.hidden_states.dims()[..2], text.mask.dims()); // [B, L, D] and [B, L]
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
    pub fn encode_text(&self, prompts: &[&str]) -> Result<EncodedText, UnclipError> {
        let mut out = self.encode_texts(&[prompts])?;
        out.pop().ok_or(UnclipError::EmptyPrompt)
    }

    /// [`Self::encode_text`] of several batches with the text encoder held once.
    pub(crate) fn encode_texts(
        &self,
        batches: &[&[&str]],
    ) -> Result<Vec<EncodedText>, UnclipError> {
        if batches.iter().any(|b| b.is_empty()) {
            return Err(UnclipError::EmptyPrompt);
        }
        let encoder = self.hold(&self.text_encoder)?;
        batches
            .iter()
            .map(|prompts| {
                let enc = self.tokenizer.encode_batch(prompts)?;
                let shape = enc.shape();
                let ids = Tensor::<2, Int>::from_data(
                    TensorData::new(enc.flat_ids(), shape),
                    &self.device,
                );
                let mask = Tensor::<2, Int>::from_data(
                    TensorData::new(enc.flat_attention_mask(), shape),
                    &self.device,
                )
                .equal_elem(1);
                let (embeds, out) = encoder.forward(ids, None);
                Ok(EncodedText {
                    embeds,
                    hidden_states: out.last_hidden_state,
                    mask,
                })
            })
            .collect()
    }

    /// CLIP image embeddings (not normalised, as the variation pipeline uses them) `[B, E]`.
    /// Needs the pipeline's image encoder (an image-variations folder, or the bundled model).
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use unclip::UnclipBuilder;
    /// let pipe = UnclipBuilder::new().device(Device::flex()).from_pretrained("../models/shapes").build()?;
    /// let red = image::RgbImage::from_pixel(64, 64, image::Rgb([220, 30, 30]));
    /// let z = pipe.encode_images(&[red])?;
    /// assert_eq!(z.dims()[0], 1);
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
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
        let enc = self.hold(enc)?;
        Ok(enc.forward(pixels).0)
    }

    /// Text -> image with the default seeded noise ([`Settings::seed`]): prior, decoder and
    /// super-resolution for all prompts in one batch. The same settings and seed give the same
    /// pictures.
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use unclip::{Control, UnclipBuilder};
    /// let pipe = UnclipBuilder::new()
    ///     .device(Device::flex())
    ///     .from_pretrained("../models/shapes") // the bundled model, from the crate's folder
    ///     .prior_steps(2)                      // few steps: a quick (and rough) picture
    ///     .decoder_steps(4)
    ///     .super_res_steps(2)
    ///     .super_res_2_steps(2)
    ///     .build()?;
    /// let out = pipe.text_to_image(&["a large red circle in the top left"], &mut |_| Control::Continue)?;
    /// let pictures = out.to_rgb8()?;
    /// assert_eq!(pictures[0].dimensions(), (128, 128));
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
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
        let empty = vec![""; b];
        let mut texts = self.encode_texts(&[prompts, &empty])?.into_iter();
        let (Some(cond), Some(uncond)) = (texts.next(), texts.next()) else {
            return Err(UnclipError::EmptyPrompt);
        };
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
        let prior = self.hold(prior)?;
        let latents = latents.map(|t| self.in_dtype(t));
        let config = PriorSampleConfig {
            num_inference_steps: self.settings.prior_steps,
            guidance_scale: self.settings.prior_guidance_scale,
            num_candidates: self.settings.prior_candidates.max(1),
        };
        let out = unclip_prior::sample::sample(
            &prior,
            &mut scheduler,
            &cond.prior(),
            Some(&uncond.prior()),
            &config,
            latents,
            noise,
            &mut |s| report(progress, Stage::Prior, s.index, s.total, s.timestep, None),
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
        let image_embeddings = self.in_dtype(image_embeddings);
        let decoder_latents = decoder_latents.map(|t| self.in_dtype(t));
        let super_res_latents = super_res_latents.map(|t| self.in_dtype(t));
        let guided = self.settings.decoder_guidance_scale > 1.0;
        let k = self.settings.decoder_candidates.max(1);
        let b = image_embeddings.dims()[0];
        if k > 1 && self.image_encoder.is_none() {
            return Err(UnclipError::InvalidSetting {
                name: "decoder_candidates",
                message: format!(
                    "{k} candidates are reranked with CLIP's image encoder, and this pipeline has none (use 1)"
                ),
            });
        }
        // Candidate c of image i at row c * B + i: [k * B, ..] (`repeat(1)` is a clone).
        let emb_k = Tensor::cat(vec![image_embeddings.clone(); k], 0);
        let (cond_k, uncond_k) = (cond.repeat(k), uncond.repeat(k));
        let decoder_latents = match decoder_latents {
            Some(l) if k > 1 && l.dims()[0] == b => Some(Tensor::cat(vec![l; k], 0)),
            l => l,
        };
        let mut scheduler = self.decoder_scheduler.clone();
        // The decoder stage's models, dropped (when staged) before super-resolution loads.
        let decoder = self.hold(&self.decoder)?;
        let text_proj = self.hold(&self.text_proj)?;
        let clip_scale = self.settings.decoder_clip_guidance_scale;
        let guide = if clip_scale != 0.0 {
            let tower = self.noised_image_encoder.as_ref().ok_or_else(|| {
                UnclipError::InvalidSetting {
                    name: "decoder_clip_guidance_scale",
                    message: format!(
                        "{clip_scale}: CLIP guidance needs a noised CLIP (`noised_image_encoder`), and this pipeline has none (use 0)"
                    ),
                }
            })?;
            let tower = self.hold(tower)?;
            // (`build` checked that the tower takes the decoder's sample size.)
            Some(crate::NoisedClipGuide::new(&tower, cond_k.embeds.clone()))
        } else {
            None
        };
        let candidates = sample_decoder_guided(
            &decoder,
            &text_proj,
            None,
            guide.as_ref().map(|g| DecoderGuide {
                guide: g,
                scale: clip_scale,
            }),
            &mut scheduler,
            DecoderRequest {
                image_embeddings: emb_k,
                text: cond_k.decoder(),
                uncond_text: guided.then(|| uncond_k.decoder()),
                guidance_scale: self.settings.decoder_guidance_scale,
                num_inference_steps: self.settings.decoder_steps,
                latents: decoder_latents,
                sampler: self.settings.decoder_sampler,
                init_image: None,
            },
            noise,
            &mut |s| {
                report(
                    progress,
                    Stage::Decoder,
                    s.index,
                    s.total,
                    s.timestep,
                    Some(s.pred_original),
                )
            },
        )
        .map_err(|e| stage_error(e, Stage::Decoder))?;
        drop((decoder, text_proj));
        let image_small = if k > 1 {
            self.best_candidates(candidates, &image_embeddings, k)?.0
        } else {
            candidates
        };
        let (images, image_mid) =
            self.super_resolve(image_small.clone(), super_res_latents, noise, progress)?;
        Ok(Generation {
            images,
            image_embeddings,
            image_small,
            image_mid,
        })
    }

    /// CLIP reranking of decoder samples: `samples [k * B, 3, h, w]` in `[-1, 1]` (candidate `c`
    /// of image `i` at row `c * B + i`) against the embeddings they were decoded from
    /// `target [B, E]`. Returns the best candidate of each image `[B, 3, h, w]` and every
    /// candidate's cosine similarity `[k * B]` (in row order).
    ///
    /// The samples go through the same path as [`Self::encode_images`] (8-bit RGB, the feature
    /// extractor), so a candidate is scored exactly as the image a user saves would be.
    pub fn best_candidates(
        &self,
        samples: Tensor<4>,
        target: &Tensor<2>,
        k: usize,
    ) -> Result<(Tensor<4>, Vec<f32>), UnclipError> {
        let [kb, ..] = samples.dims();
        let [b, _] = target.dims();
        if k == 0 || kb != k * b {
            return Err(UnclipError::InvalidSetting {
                name: "decoder_candidates",
                message: format!("{kb} samples are not {k} candidates of {b} image embeddings"),
            });
        }
        let images = to_rgb8(to_unit_range(samples.clone()))?;
        let emb = self.in_dtype(self.encode_images(&images)?); // [k * B, E]
        let target = Tensor::cat(vec![target.clone(); k], 0); // [k * B, E]
        let cos = (unclip_clip::l2_normalize(emb) * unclip_clip::l2_normalize(target))
            .sum_dim(1)
            .reshape([kb]); // [k * B]
        let scores: Vec<f32> = cos
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| UnclipError::InvalidSetting {
                name: "decoder_candidates",
                message: format!("reading the candidate scores: {e:?}"),
            })?;
        let best: Vec<i64> = (0..b)
            .map(|i| {
                let c = (0..k)
                    .max_by(|&x, &y| scores[x * b + i].total_cmp(&scores[y * b + i]))
                    .unwrap_or(0);
                (c * b + i) as i64
            })
            .collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(best, [b]), &samples.device());
        Ok((samples.select(0, index), scores))
    }

    /// The super-resolution stages (when enabled): the pipeline's `[0, 1]` output, and the first
    /// stage's output clamped to `[-1, 1]` when a second stage ran on it.
    ///
    /// Every caller of `sample_super_res` in the pipeline goes through here, so the second stage
    /// runs wherever the first does. Its noise is drawn from `noise` after the first stage's.
    pub(crate) fn super_resolve(
        &self,
        image_small: Tensor<4>,
        latents: Option<Tensor<4>>,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<(Tensor<4>, Option<Tensor<4>>), UnclipError> {
        if !self.settings.super_res {
            return Ok((to_unit_range(image_small), None));
        }
        let mut scheduler = self.super_res_scheduler.clone();
        let first = self.hold(&self.super_res_first)?;
        let last = if self
            .super_res_last
            .shares_weights_with(&self.super_res_first)
        {
            None
        } else {
            Some(self.hold(&self.super_res_last)?)
        };
        let x = sample_super_res(
            &first,
            last.as_deref().unwrap_or(&first),
            &mut scheduler,
            SuperResRequest {
                image_small,
                num_inference_steps: self.settings.super_res_steps,
                latents,
                output_size: None,
            },
            noise,
            &mut |s| {
                report(
                    progress,
                    Stage::SuperRes,
                    s.index,
                    s.total,
                    s.timestep,
                    Some(s.pred_original),
                )
            },
        )
        .map_err(|e| stage_error(e, Stage::SuperRes))?;
        drop((first, last));
        let Some(stage) = &self.super_res_2 else {
            return Ok((to_unit_range(x), None));
        };
        let mid = x.clamp(-1.0, 1.0);
        let model = self.hold(&stage.model)?;
        let mut scheduler = stage.scheduler.clone();
        let y = sample_super_res(
            &model,
            &model,
            &mut scheduler,
            SuperResRequest {
                image_small: mid.clone(),
                num_inference_steps: self.settings.super_res_2_steps,
                latents: None,
                output_size: None,
            },
            noise,
            &mut |s| {
                report(
                    progress,
                    Stage::SuperRes2,
                    s.index,
                    s.total,
                    s.timestep,
                    Some(s.pred_original),
                )
            },
        )
        .map_err(|e| stage_error(e, Stage::SuperRes2))?;
        Ok((to_unit_range(y), Some(mid)))
    }

    /// The decoder's sample `[C, H, W]`.
    pub(crate) fn decoder_sample_shape(&self) -> Result<[usize; 3], UnclipError> {
        decoder_sample_shape(self.decoder.config())
    }

    /// An image as the decoder sees it: centre square crop, antialiased resize to the decoder's
    /// sample size, `[-1, 1]`, `[1, 3, S, S]`.
    pub fn decoder_input(&self, image: &RgbImage) -> Result<Tensor<4>, UnclipError> {
        let s = self.decoder_sample_shape()?[1];
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
    /// of each image, in image order. [`Self::variation_from_inversion`] starts from the image's
    /// DDIM-inverted latent instead.
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use unclip::{Control, UnclipBuilder};
    /// let pipe = UnclipBuilder::new()
    ///     .device(Device::flex())
    ///     .from_pretrained("../models/shapes")
    ///     .decoder_steps(4)
    ///     .with_super_res(false) // the decoder's 32x32 pictures
    ///     .build()?;
    /// let input = image::RgbImage::from_pixel(64, 64, image::Rgb([30, 30, 220]));
    /// let out = pipe.variations(&[input], 2, &mut |_| Control::Continue)?;
    /// assert_eq!(out.images.dims(), [2, 3, 32, 32]);
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
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

    /// Repeats an encoded text `n` times along the batch.
    pub fn repeat_text(text: &EncodedText, n: usize) -> EncodedText {
        text.repeat(n)
    }
}

/// A decoder's sample `[C, H, W]` (its config's `in_channels` and `sample_size`).
fn decoder_sample_shape(config: &UNet2DConditionConfig) -> Result<[usize; 3], UnclipError> {
    let [h, w] = config
        .sample_size
        .map(|s| s.hw())
        .ok_or(UnclipError::InvalidSetting {
            name: "decoder.sample_size",
            message: "the decoder config has no sample_size".into(),
        })?;
    Ok([config.in_channels, h, w])
}
