//! Editing with the decoder's DDIM-inverted latents, as DALL-E 2 does it (§3 of *Hierarchical
//! Text-Conditional Image Generation with CLIP Latents*): inversion of an image to the decoder's
//! `x_T`, variations from it (§3.1), interpolation between two images (§3.2) and text diffs
//! (§3.3), each with a choice of how `x_T` is chosen ([`XtMode`]).
//!
//! An image is inverted with deterministic DDIM under the decoder conditioned on the image's own
//! CLIP image embedding and the empty caption (the variation pipeline's conditioning), with the
//! pipeline's decoder guidance. Decoding from an inverted latent runs DDIM back along the same
//! timesteps with the same guidance, so the image's own embedding gives the image back (up to
//! the inversion's error) and an edited embedding changes only what the embedding changes.
//! CLIP guidance ([`crate::Settings::decoder_clip_guidance_scale`]) and decoder candidates are
//! not used on these paths: both would move the sample away from the inverted path.

use burn::tensor::Tensor;
use image::RgbImage;
use unclip_decoder::{GuidedDecoder, UNet2DConditionModel, UnCLIPTextProjModel};
use unclip_diffusion::{NoiseSource, SeededNoise};

use crate::UnclipError;
use crate::pipeline::{EncodedText, Generation, UnclipPipeline, report, stage_error};
use crate::progress::{ProgressFn, Stage};

/// How the decoder's starting latent `x_T` is chosen for the frames of an interpolation or a
/// text diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XtMode {
    /// The DDIM-inverted latent of the source image(s), as the paper does (the default): a text
    /// diff decodes every frame from the source's `x_T`; an interpolation between two images
    /// slerps their two `x_T` along with the embeddings (an end given as an embedding has no
    /// latent: the other end's is used for every frame). Decoded with DDIM (`eta` 0).
    #[default]
    Inverted,
    /// The same `x_T` for every frame, drawn from `seed` (with the pipeline's sampler, whose step
    /// noise is drawn from the same seed).
    Fixed {
        /// The seed of every frame's noise.
        seed: u64,
    },
    /// `x_T` spherically interpolated from `seed`'s draw (first frame) to `seed_b`'s (last).
    Interpolated {
        /// The seed of the first frame's `x_T` (and of every frame's step noise).
        seed: u64,
        /// The seed of the last frame's `x_T`.
        seed_b: u64,
    },
}

/// One end of an interpolation, or the source of a text diff: an image (encoded with CLIP and,
/// with [`XtMode::Inverted`], DDIM-inverted) or a CLIP image embedding `[1, E]` (e.g. one the
/// prior sampled for a prompt).
// An end is built once per call: the embedding variant's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// An image.
    Image(RgbImage),
    /// A CLIP image embedding `[1, E]`.
    Embedding(Tensor<2>),
}

impl From<RgbImage> for Endpoint {
    fn from(image: RgbImage) -> Self {
        Endpoint::Image(image)
    }
}

impl From<Tensor<2>> for Endpoint {
    fn from(embedding: Tensor<2>) -> Self {
        Endpoint::Embedding(embedding)
    }
}

/// Decoder latents found by DDIM inversion ([`UnclipPipeline::invert`]), with what decoding
/// them back needs.
#[derive(Debug, Clone)]
pub struct Latent {
    /// The inverted sample at `timesteps[0]` `[B, C, h, w]` (`x_T` for a full inversion).
    pub x_t: Tensor<4>,
    /// The CLIP image embeddings the decoder was conditioned on while inverting `[B, E]`.
    pub image_embeddings: Tensor<2>,
    /// The decoder timesteps of the DDIM path, descending: `x_t` is at the first, and decoding
    /// runs through all of them back to the image.
    pub timesteps: Vec<usize>,
    /// The decoder's classifier-free guidance scale of the inversion (`<= 1`: none); decoding
    /// uses the same.
    pub guidance_scale: f32,
}

impl Latent {
    /// Number of images.
    pub fn batch(&self) -> usize {
        self.x_t.dims()[0]
    }

    /// The latent repeated `n` times along the batch (image `i`'s copies at rows `i * n ..
    /// (i + 1) * n`), e.g. for `n` variations of each image with `eta > 0`.
    pub fn repeat(&self, n: usize) -> Latent {
        let [b, c, h, w] = self.x_t.dims();
        let e = self.image_embeddings.dims()[1];
        Latent {
            x_t: self
                .x_t
                .clone()
                .unsqueeze_dim::<5>(1)
                .expand([b, n, c, h, w])
                .reshape([b * n, c, h, w]),
            image_embeddings: self
                .image_embeddings
                .clone()
                .unsqueeze_dim::<3>(1)
                .expand([b, n, e])
                .reshape([b * n, e]),
            timesteps: self.timesteps.clone(),
            guidance_scale: self.guidance_scale,
        }
    }

    /// Image `i` of the batch as a latent of its own.
    pub fn row(&self, i: usize) -> Result<Latent, UnclipError> {
        let b = self.batch();
        if i >= b {
            return Err(UnclipError::InvalidSetting {
                name: "latent row",
                message: format!("{i} is not below the latent's batch of {b}"),
            });
        }
        let [_, c, h, w] = self.x_t.dims();
        let e = self.image_embeddings.dims()[1];
        Ok(Latent {
            x_t: self.x_t.clone().slice([i..i + 1, 0..c, 0..h, 0..w]),
            image_embeddings: self.image_embeddings.clone().slice([i..i + 1, 0..e]),
            timesteps: self.timesteps.clone(),
            guidance_scale: self.guidance_scale,
        })
    }
}

/// Spherical interpolation between two embeddings `a, b [N, E]` at fraction `t` (row-wise).
/// Falls back to linear interpolation when the vectors are (nearly) parallel. At `t = 0` and
/// `t = 1` it returns the ends exactly.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let device = Device::default();
/// let a = Tensor::<2>::from_floats([[3.0, 0.0]], &device);
/// let b = Tensor::<2>::from_floats([[0.0, 3.0]], &device);
/// let mid: Vec<f32> = unclip::slerp(a, b, 0.5).into_data().to_vec().unwrap();
/// assert!((mid[0] - 3.0 / 2f32.sqrt()).abs() < 1e-5); // on the circle, not the chord
/// ```
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
    /// DDIM-inverts images to the decoder's `x_T` (all [`crate::Settings::decoder_steps`]
    /// timesteps), conditioned on each image's own CLIP image embedding: the latent that DALL-E 2
    /// holds fixed for text diffs and interpolations. Needs the pipeline's image encoder.
    ///
    /// Each image is centre-cropped to a square and resized to the decoder's sample size
    /// ([`Self::decoder_input`]). Progress is reported as [`Stage::Inversion`], one step per
    /// decoder evaluation; cancelling stops with [`UnclipError::Cancelled`].
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// use unclip::{Control, UnclipBuilder};
    /// let pipe = UnclipBuilder::new().device(Device::flex()).from_pretrained("models/shapes").build()?;
    /// let image = image::open("in.png").expect("a PNG").to_rgb8();
    /// let latent = pipe.invert(&[image], &mut |_| Control::Continue)?;
    /// // The inverted latent decodes back to (nearly) the input:
    /// let same = pipe.reconstruct(&latent, &mut |_| Control::Continue)?;
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
    pub fn invert(
        &self,
        images: &[RgbImage],
        progress: &mut ProgressFn<'_>,
    ) -> Result<Latent, UnclipError> {
        self.invert_to(images, 1.0, progress)
    }

    /// [`Self::invert`] up to the noise level of `strength` in `(0, 1]`: the last
    /// `ceil(strength * decoder_steps)` of the decoder's timesteps (1 inverts all the way to
    /// `x_T`).
    pub fn invert_to(
        &self,
        images: &[RgbImage],
        strength: f32,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Latent, UnclipError> {
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(UnclipError::InvalidSetting {
                name: "strength",
                message: format!("{strength} is not in (0, 1]"),
            });
        }
        if images.is_empty() {
            return Err(UnclipError::InvalidSetting {
                name: "images",
                message: "at least one image to invert".into(),
            });
        }
        let emb = self.encode_images(images)?; // [B, E]
        let x0 = images
            .iter()
            .map(|i| self.decoder_input(i))
            .collect::<Result<Vec<_>, _>>()?;
        let x0 = self.in_dtype(Tensor::cat(x0, 0)); // [B, 3, S, S] in [-1, 1]
        let timesteps = self.decoder_path(strength)?;
        let guidance_scale = self.settings.decoder_guidance_scale;
        // The empty caption, encoded before the decoder is held (staged memory: one stage at once).
        let text = self.encode_text(&vec![""; images.len()])?;
        let decoder = self.hold(&self.decoder)?;
        let text_proj = self.hold(&self.text_proj)?;
        let model = uncaptioned_decoder(
            &decoder,
            &text_proj,
            emb.clone(),
            &text,
            guidance_scale,
            Stage::Inversion,
        )?;
        let total = timesteps.len();
        let mut done = 0;
        let x_t = self.decoder_scheduler.ddim_invert(
            x0,
            &timesteps,
            |x, t| -> Result<Tensor<4>, UnclipError> {
                let out = model
                    .output(x, t)
                    .map_err(|e| stage_error(e, Stage::Inversion))?;
                if report(progress, Stage::Inversion, done, total, t, None).is_break() {
                    return Err(UnclipError::Cancelled {
                        stage: Stage::Inversion,
                    });
                }
                done += 1;
                Ok(out)
            },
        )?;
        Ok(Latent {
            x_t,
            image_embeddings: emb,
            timesteps,
            guidance_scale,
        })
    }

    /// Decodes an inverted latent back with its own image embeddings (DDIM, `eta` 0), then
    /// super-resolves: the inversion's reconstruction of its images.
    pub fn reconstruct(
        &self,
        latent: &Latent,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let mut noise = SeededNoise::new(self.settings.seed);
        self.decode_latent(latent, None, 0.0, &mut noise, progress)
    }

    /// Decodes from an inverted latent along its timesteps, conditioned on `image_embeddings`
    /// `[B, E]` (the latent's own when `None`), with DDIM of the given `eta` (0: deterministic;
    /// larger: freer), then super-resolves.
    pub fn decode_latent(
        &self,
        latent: &Latent,
        image_embeddings: Option<Tensor<2>>,
        eta: f32,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let emb = match image_embeddings {
            Some(e) => {
                if e.dims() != latent.image_embeddings.dims() {
                    return Err(UnclipError::InvalidSetting {
                        name: "image_embeddings",
                        message: format!(
                            "shape {:?}, the latent's embeddings have {:?}",
                            e.dims(),
                            latent.image_embeddings.dims()
                        ),
                    });
                }
                e
            }
            None => latent.image_embeddings.clone(),
        };
        self.decode_from(
            latent.x_t.clone(),
            &latent.timesteps,
            emb,
            latent.guidance_scale,
            eta,
            noise,
            progress,
        )
    }

    /// A variation that starts from the DDIM-inverted latent of the input image, as the paper
    /// does (DALL-E 2 §3.1), rather than from fresh noise: [`Self::invert_to`] at `strength`,
    /// then [`Self::decode_latent`] with `eta` (0: a reconstruction close to the input; larger
    /// `eta` and `strength`: freer variations).
    pub fn variation_from_inversion(
        &self,
        image: &RgbImage,
        strength: f32,
        eta: f32,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let latent = self.invert_to(std::slice::from_ref(image), strength, progress)?;
        self.decode_latent(&latent, None, eta, noise, progress)
    }

    /// Interpolation between two ends over `frames` frames (both ends included): the CLIP image
    /// embeddings are slerped, and the decoder's `x_T` follows `xt` (DALL-E 2 §3.2 holds the
    /// inverted latents: [`XtMode::Inverted`], which needs at least one image end).
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// use unclip::{Control, Endpoint, UnclipBuilder, XtMode};
    /// let pipe = UnclipBuilder::new().device(Device::flex()).from_pretrained("models/shapes").build()?;
    /// let a = image::open("a.png").expect("a PNG").to_rgb8();
    /// let b = image::open("b.png").expect("a PNG").to_rgb8();
    /// let frames = pipe.interpolate(a, b, 5, XtMode::Inverted, &mut |_| Control::Continue)?;
    /// assert_eq!(frames.len(), 5);
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
    pub fn interpolate(
        &self,
        a: impl Into<Endpoint>,
        b: impl Into<Endpoint>,
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
        let (a, b) = (a.into(), b.into());
        let ts: Vec<f32> = (0..frames)
            .map(|k| k as f32 / (frames - 1) as f32)
            .collect();
        if xt == XtMode::Inverted {
            return self.interpolate_inverted(a, b, &ts, progress);
        }
        let (za, zb) = (self.embedding_of(a)?, self.embedding_of(b)?);
        let cond = self.encode_text(&[""])?;
        let seed = match xt {
            XtMode::Fixed { seed } | XtMode::Interpolated { seed, .. } => seed,
            XtMode::Inverted => self.settings.seed,
        };
        // x_T of both ends, flattened to [1, C*H*W], when it is interpolated.
        let ends = match xt {
            XtMode::Interpolated { seed, seed_b } => {
                let [c, h, w] = self.decoder_sample_shape()?;
                let shape = [1, c, h, w];
                let draw = |seed: u64| -> Result<Tensor<2>, UnclipError> {
                    let mut noise = SeededNoise::new(seed);
                    Ok(
                        unclip_diffusion::randn::<4, _>(&mut noise, shape, &self.device)?
                            .reshape([1, c * h * w]),
                    )
                };
                Some((draw(seed)?, draw(seed_b)?, shape))
            }
            _ => None,
        };
        ts.iter()
            .map(|&t| {
                let mut noise = SeededNoise::new(seed);
                // slerp keeps Gaussian noise at its typical norm (a lerp would shrink it).
                let latents = match &ends {
                    Some((xa, xb, shape)) => {
                        // Skip the x_T draw so the step noise is the fixed mode's.
                        unclip_diffusion::randn::<4, _>(&mut noise, *shape, &self.device)?;
                        Some(crate::slerp(xa.clone(), xb.clone(), t).reshape(*shape))
                    }
                    None => None,
                };
                self.decode(
                    crate::slerp(za.clone(), zb.clone(), t),
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

    /// [`Self::interpolate`] with [`XtMode::Inverted`]: the image ends are inverted (together),
    /// and each frame decodes `slerp(x_T(a), x_T(b), t)` with `slerp(z_a, z_b, t)`.
    fn interpolate_inverted(
        &self,
        a: Endpoint,
        b: Endpoint,
        ts: &[f32],
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Generation>, UnclipError> {
        let images: Vec<RgbImage> = [&a, &b]
            .into_iter()
            .filter_map(|e| match e {
                Endpoint::Image(i) => Some(i.clone()),
                Endpoint::Embedding(_) => None,
            })
            .collect();
        if images.is_empty() {
            return Err(UnclipError::InvalidSetting {
                name: "xt",
                message: "XtMode::Inverted needs at least one image end to invert (both ends are \
                          embeddings: use XtMode::Fixed or XtMode::Interpolated)"
                    .into(),
            });
        }
        let latent = self.invert(&images, progress)?;
        // Each end's (embedding [1, E], latent [1, N]); an embedding end takes the other's latent.
        let [_, c, h, w] = latent.x_t.dims();
        let n = c * h * w;
        let mut inverted = (0..latent.batch()).map(|i| latent.row(i));
        let mut end = |e: Endpoint| -> Result<(Tensor<2>, Option<Tensor<2>>), UnclipError> {
            match e {
                Endpoint::Image(_) => {
                    let row = inverted
                        .next()
                        .ok_or_else(|| UnclipError::InvalidSetting {
                            name: "xt",
                            message: "the inversion returned fewer latents than images".into(),
                        })??;
                    Ok((row.image_embeddings, Some(row.x_t.reshape([1, n]))))
                }
                Endpoint::Embedding(z) => Ok((self.in_dtype(z), None)),
            }
        };
        let (za, xa) = end(a)?;
        let (zb, xb) = end(b)?;
        let (xa, xb) = match (xa, xb) {
            (Some(xa), Some(xb)) => (xa, xb),
            (Some(x), None) | (None, Some(x)) => (x.clone(), x),
            (None, None) => {
                return Err(UnclipError::InvalidSetting {
                    name: "xt",
                    message: "no image end was inverted".into(),
                });
            }
        };
        ts.iter()
            .map(|&t| {
                // The same super-resolution noise for every frame, as `reconstruct` draws it.
                let mut noise = SeededNoise::new(self.settings.seed);
                let x_t = crate::slerp(xa.clone(), xb.clone(), t).reshape([1, c, h, w]);
                self.decode_from(
                    x_t,
                    &latent.timesteps,
                    crate::slerp(za.clone(), zb.clone(), t),
                    latent.guidance_scale,
                    0.0,
                    &mut noise,
                    progress,
                )
            })
            .collect()
    }

    /// Text diff (DALL-E 2 §3.3): moves the source's CLIP image embedding `z_i` toward the
    /// normalised difference of two captions' text embeddings
    /// `d = normalize(z_t(target) - z_t(source))`, by slerp with angle fraction `theta`
    /// (`slerp(z_i / |z_i|, d, theta) * |z_i|`), for each theta in `thetas`. With
    /// [`XtMode::Inverted`] (the paper's, and the default) the source must be an image: every
    /// frame is decoded from its DDIM-inverted `x_T`, so the picture changes only where the
    /// embedding does, and `theta = 0` is the inversion's reconstruction.
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// use unclip::{Control, UnclipBuilder, XtMode};
    /// let pipe = UnclipBuilder::new().device(Device::flex()).from_pretrained("models/shapes").build()?;
    /// let image = image::open("red_circle.png").expect("a PNG").to_rgb8();
    /// let frames = pipe.text_diff(
    ///     image,
    ///     "a large red circle in the top left",
    ///     "a large blue circle in the top left",
    ///     &[0.0, 0.25, 0.5],
    ///     XtMode::Inverted,
    ///     &mut |_| Control::Continue,
    /// )?;
    /// # Ok::<(), unclip::UnclipError>(())
    /// ```
    pub fn text_diff(
        &self,
        source: impl Into<Endpoint>,
        from: &str,
        to: &str,
        thetas: &[f32],
        xt: XtMode,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Generation>, UnclipError> {
        if thetas.is_empty() {
            return Err(UnclipError::InvalidSetting {
                name: "thetas",
                message: "at least one theta".into(),
            });
        }
        let source = source.into();
        let latent = match (&source, xt) {
            (Endpoint::Image(image), XtMode::Inverted) => {
                Some(self.invert(std::slice::from_ref(image), progress)?)
            }
            (Endpoint::Embedding(_), XtMode::Inverted) => {
                return Err(UnclipError::InvalidSetting {
                    name: "xt",
                    message: "XtMode::Inverted needs the source image to invert, and an \
                              embedding was given (pass the image, or use XtMode::Fixed)"
                        .into(),
                });
            }
            (_, XtMode::Interpolated { .. }) => {
                return Err(UnclipError::InvalidSetting {
                    name: "xt",
                    message: "a text diff holds x_T fixed: use XtMode::Inverted or XtMode::Fixed"
                        .into(),
                });
            }
            (_, XtMode::Fixed { .. }) => None,
        };
        let fixed_seed = match xt {
            XtMode::Fixed { seed } => seed,
            _ => self.settings.seed,
        };
        let z_i = match (&latent, source) {
            (Some(l), _) => l.image_embeddings.clone(),
            (None, s) => self.embedding_of(s)?,
        }; // [1, E]
        let mut texts = self.encode_texts(&[&[from, to], &[""]])?.into_iter();
        let (Some(t), Some(cond)) = (texts.next(), texts.next()) else {
            return Err(UnclipError::EmptyPrompt);
        };
        let e = t.embeds.dims()[1];
        let z_from = t.embeds.clone().slice([0..1, 0..e]);
        let z_to = t.embeds.slice([1..2, 0..e]);
        let d = unclip_clip::l2_normalize(z_to - z_from); // [1, E]
        let norm = z_i.clone().powi_scalar(2).sum().sqrt().into_scalar::<f32>();
        thetas
            .iter()
            .map(|&theta| {
                // slerp on the unit sphere, then the image embedding's norm back
                let z =
                    crate::slerp(unclip_clip::l2_normalize(z_i.clone()), d.clone(), theta) * norm;
                match &latent {
                    Some(l) => {
                        // The same super-resolution noise for every frame, as `reconstruct`.
                        let mut noise = SeededNoise::new(self.settings.seed);
                        self.decode_latent(l, Some(z), 0.0, &mut noise, progress)
                    }
                    None => {
                        let mut noise = SeededNoise::new(fixed_seed);
                        self.decode(z, &cond, &cond, None, None, &mut noise, progress)
                    }
                }
            })
            .collect()
    }

    /// The CLIP image embedding `[1, E]` of an end (an image is encoded).
    fn embedding_of(&self, end: Endpoint) -> Result<Tensor<2>, UnclipError> {
        match end {
            Endpoint::Image(image) => self.encode_images(&[image]),
            Endpoint::Embedding(z) => Ok(self.in_dtype(z)),
        }
    }

    /// The decoder's timesteps (descending) of the last `ceil(strength * decoder_steps)` steps.
    fn decoder_path(&self, strength: f32) -> Result<Vec<usize>, UnclipError> {
        let mut scheduler = self.decoder_scheduler.clone();
        scheduler.set_timesteps(self.settings.decoder_steps)?;
        let all = scheduler.timesteps().to_vec(); // descending
        let k = ((strength * all.len() as f32).ceil() as usize).clamp(1, all.len());
        Ok(all[all.len() - k..].to_vec())
    }

    /// DDIM from `x_t [B, C, h, w]` (at `timesteps[0]`) along `timesteps` (descending),
    /// conditioned on `image_embeddings [B, E]` and the empty caption with classifier-free
    /// guidance `guidance_scale`, then the super-resolution stages.
    #[allow(clippy::too_many_arguments)]
    fn decode_from(
        &self,
        x_t: Tensor<4>,
        timesteps: &[usize],
        image_embeddings: Tensor<2>,
        guidance_scale: f32,
        eta: f32,
        noise: &mut dyn NoiseSource,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Generation, UnclipError> {
        let (x_t, emb) = (self.in_dtype(x_t), self.in_dtype(image_embeddings));
        let b = emb.dims()[0];
        if x_t.dims()[0] != b {
            return Err(UnclipError::InvalidSetting {
                name: "latent",
                message: format!("{} latents for {b} image embeddings", x_t.dims()[0]),
            });
        }
        let text = self.encode_text(&vec![""; b])?;
        let decoder = self.hold(&self.decoder)?;
        let text_proj = self.hold(&self.text_proj)?;
        let model = uncaptioned_decoder(
            &decoder,
            &text_proj,
            emb.clone(),
            &text,
            guidance_scale,
            Stage::Decoder,
        )?;
        let scheduler = &self.decoder_scheduler;
        let mut x = x_t;
        for (i, &t) in timesteps.iter().enumerate() {
            let prev = timesteps.get(i + 1).copied();
            let out = model
                .output(x.clone(), t)
                .map_err(|e| stage_error(e, Stage::Decoder))?;
            let step = scheduler.ddim_step(out, t, x, prev, eta, noise)?;
            x = step.prev_sample;
            let preview = Some(&step.pred_original_sample);
            if report(progress, Stage::Decoder, i, timesteps.len(), t, preview).is_break() {
                return Err(UnclipError::Cancelled {
                    stage: Stage::Decoder,
                });
            }
        }
        let image_small = x.clamp(-1.0, 1.0);
        drop(model);
        drop((decoder, text_proj));
        let (images, image_mid) = self.super_resolve(image_small.clone(), None, noise, progress)?;
        Ok(Generation {
            images,
            image_embeddings: emb,
            image_small,
            image_mid,
        })
    }
}

/// The decoder conditioned on `image_embeddings [B, E]` and the empty caption `text` (the
/// variation pipeline's conditioning, which inversion and decoding from a latent share), with
/// classifier-free guidance `guidance_scale` (`<= 1`: none); errors are `stage`'s.
fn uncaptioned_decoder<'a>(
    decoder: &'a UNet2DConditionModel,
    text_proj: &UnCLIPTextProjModel,
    image_embeddings: Tensor<2>,
    text: &EncodedText,
    guidance_scale: f32,
    stage: Stage,
) -> Result<GuidedDecoder<'a>, UnclipError> {
    GuidedDecoder::new(
        decoder,
        text_proj,
        image_embeddings,
        text.decoder(),
        (guidance_scale > 1.0).then(|| text.decoder()),
        guidance_scale,
    )
    .map_err(|e| stage_error(e, stage))
}
