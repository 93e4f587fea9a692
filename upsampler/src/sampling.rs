//! The super-resolution stage of diffusers' `pipelines/deprecated/unclip/pipeline_unclip.py`:
//!
//! 1. `x_T [B, C, S, S]` (given, or drawn from the noise source first) times `init_noise_sigma`,
//!    with `C = super_res_first.in_channels / 2` and `S` its `sample_size`;
//! 2. `image_upscaled = F.interpolate(image_small, [S, S], mode="bicubic", align_corners=False,
//!    antialias=True)`;
//! 3. for every `(t, prev_t)` of the super-resolution scheduler: `super_res_first` for every
//!    step but the last, `super_res_last` for the last one, on `cat([x, image_upscaled], 1)`
//!    (no guidance), then `scheduler.step` (fixed_small_log variance, clipped x0);
//! 4. the output is the final sample in `[-1, 1]`-ish scale: [`to_unit_range`] applies the
//!    pipeline's `(x * 0.5 + 0.5).clamp(0, 1)`.
//!
//! After every step a progress callback sees an [`unclip_decoder::StepInfo`] (with the step's
//! `x_0` prediction) and may stop the call ([`ControlFlow::Break`] -> `DecoderError::Cancelled`).

use std::ops::ControlFlow;

use burn::tensor::Tensor;
use unclip_decoder::{DecoderError, StepInfo};
use unclip_diffusion::{NoiseSource, UnCLIPScheduler};

use crate::{UNet2DModel, resize_bicubic_antialias};

/// One super-resolution call.
#[derive(Debug, Clone)]
pub struct SuperResRequest {
    /// `[B, C, h, w]`: the decoder's output, clamped to `[-1, 1]`.
    pub image_small: Tensor<4>,
    /// Number of steps (Karlo: 7; at least 2).
    pub num_inference_steps: usize,
    /// `x_T [B, C, S, S]`; drawn from the noise source when `None`.
    pub latents: Option<Tensor<4>>,
    /// `[S, S]`; `None`: `super_res_first`'s `sample_size`.
    pub output_size: Option<[usize; 2]>,
}

/// Runs the super-resolution stage; returns the final sample `[B, C, S, S]` (apply
/// [`to_unit_range`] for the pipeline's image values).
///
/// Noise order as in diffusers: `x_T` (when not given), then one `[B, C, S, S]` tensor per
/// step except the last.
///
/// `progress` is called after every step; returning [`ControlFlow::Break`] stops the call with
/// [`DecoderError::Cancelled`] (pass `&mut unclip_decoder::no_progress` to run silently).
///
/// The crate-level example runs this on a tiny UNet; with Karlo's folders:
///
/// ```no_run
/// # fn demo(image_small: burn::tensor::Tensor<4>) -> Result<(), Box<dyn std::error::Error>> {
/// use burn::tensor::Device;
/// use unclip_diffusion::{SeededNoise, UnCLIPScheduler};
/// use unclip_upsampler::{SuperResRequest, UNet2DModel, sample_super_res, to_rgb8, to_unit_range};
///
/// let device = Device::flex();
/// let first = UNet2DModel::from_pretrained("karlo-v1-alpha/super_res_first", &device)?;
/// let last = UNet2DModel::from_pretrained("karlo-v1-alpha/super_res_last", &device)?;
/// let mut scheduler = UnCLIPScheduler::from_file("karlo-v1-alpha/super_res_scheduler")?;
/// let request = SuperResRequest {
///     image_small, // [B, 3, 64, 64] from the decoder
///     num_inference_steps: 7,
///     latents: None,
///     output_size: None,
/// };
/// let mut noise = SeededNoise::new(0);
/// let image = sample_super_res(&first, &last, &mut scheduler, request, &mut noise,
///     &mut unclip_decoder::no_progress)?; // [B, 3, 256, 256]
/// to_rgb8(to_unit_range(image))?[0].save("out.png")?;
/// # Ok(()) }
/// ```
pub fn sample_super_res<N: NoiseSource + ?Sized>(
    first: &UNet2DModel,
    last: &UNet2DModel,
    scheduler: &mut UnCLIPScheduler,
    request: SuperResRequest,
    noise: &mut N,
    progress: &mut dyn FnMut(&StepInfo<'_>) -> ControlFlow<()>,
) -> Result<Tensor<4>, DecoderError> {
    let SuperResRequest {
        image_small,
        num_inference_steps,
        latents,
        output_size,
    } = request;
    let device = image_small.device();
    let [b, c_small, _, _] = image_small.dims();
    let c = first.config.in_channels / 2;
    if c_small != c || first.config.in_channels != last.config.in_channels {
        return Err(DecoderError::shape(
            "image_small",
            format!("[B, {c}, h, w] (half of super_res_first's and super_res_last's in_channels)"),
            &image_small.dims(),
        ));
    }
    let [h, w] = match output_size.or_else(|| first.config.sample_size.map(|s| s.hw())) {
        Some(s) => s,
        None => {
            return Err(DecoderError::InvalidArgument {
                name: "output_size".into(),
                message: "super_res_first has no sample_size: give the output size".into(),
            });
        }
    };
    if h == 0 || w == 0 {
        return Err(DecoderError::InvalidArgument {
            name: "output_size".into(),
            message: format!("[{h}, {w}] is empty"),
        });
    }
    scheduler.set_timesteps(num_inference_steps)?;
    let latents = match latents {
        Some(x) => x,
        None => unclip_diffusion::randn(noise, [b, c, h, w], &device)
            .map_err(unclip_diffusion::DiffusionError::from)?,
    };
    if latents.dims() != [b, c, h, w] {
        return Err(DecoderError::shape(
            "latents",
            format!("[{b}, {c}, {h}, {w}]"),
            &latents.dims(),
        ));
    }
    let mut x = latents * scheduler.init_noise_sigma();
    let upscaled = resize_bicubic_antialias(image_small, [h, w]); // [B, C, S, S]
    let pairs = scheduler.timestep_pairs();
    let n = pairs.len();
    for (i, (t, prev)) in pairs.into_iter().enumerate() {
        let unet = if i + 1 == n { last } else { first };
        let input = Tensor::cat(vec![x.clone(), upscaled.clone()], 1); // [B, 2C, S, S]
        let out = unet.forward(input, Tensor::<1>::from_floats([t as f32], &device))?;
        let step = scheduler.step(out, t, x, prev, noise)?;
        x = step.prev_sample;
        let flow = progress(&StepInfo {
            index: i,
            total: n,
            timestep: t,
            sample: &x,
            pred_original: &step.pred_original_sample,
        });
        if flow.is_break() {
            return Err(DecoderError::Cancelled {
                step: i + 1,
                total: n,
            });
        }
    }
    Ok(x)
}

/// The pipeline's `(x * 0.5 + 0.5).clamp(0, 1)`.
pub fn to_unit_range(x: Tensor<4>) -> Tensor<4> {
    (x * 0.5 + 0.5).clamp(0.0, 1.0)
}

/// `[B, C, H, W] -> [B, H, W, C]` (the pipeline's `output_type="np"` layout).
pub fn to_nhwc(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 2, 3, 1])
}

/// Images in `[0, 1]`, `[B, 3, H, W]` -> 8-bit RGB images (`(x * 255).round()`, as diffusers'
/// `numpy_to_pil`).
pub fn to_rgb8(x: Tensor<4>) -> Result<Vec<image::RgbImage>, DecoderError> {
    let [b, c, h, w] = x.dims();
    if c != 3 {
        return Err(DecoderError::shape("images", "[B, 3, H, W]", &x.dims()));
    }
    let values: Vec<f32> = to_nhwc(x)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| DecoderError::InvalidArgument {
            name: "images".into(),
            message: format!("{e:?}"),
        })?;
    let per = h * w * 3;
    (0..b)
        .map(|i| {
            let bytes: Vec<u8> = values[i * per..(i + 1) * per]
                .iter()
                .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            image::RgbImage::from_raw(w as u32, h as u32, bytes).ok_or_else(|| {
                DecoderError::InvalidArgument {
                    name: "images".into(),
                    message: "buffer size mismatch".into(),
                }
            })
        })
        .collect()
}
