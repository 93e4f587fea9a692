//! Image preprocessing as transformers' `CLIPImageProcessor` describes it in
//! `preprocessor_config.json`: convert to RGB, resize so the shortest side is `size.shortest_edge`
//! (bicubic, antialiased, uint8 result), centre crop to `crop_size`, rescale by `rescale_factor`,
//! normalise with `image_mean` / `image_std`.
//!
//! Two resize back ends are offered because the reference changed: transformers 5 resizes uint8
//! tensors with torchvision ([`ResizeBackend::Torchvision`], the default), older versions and
//! `CLIPImageProcessorPil` use PIL ([`ResizeBackend::Pil`]); they differ by at most one uint8 level.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;
use serde::Deserialize;
use unclip_nn::{LoadError, resize_aa_u8_pil, resize_aa_u8_torch};

use crate::ClipError;

/// `size` / `crop_size` as configs write them: an int, `{shortest_edge}` or `{height, width}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    Square(usize),
    Shortest { shortest_edge: usize },
    Exact { height: usize, width: usize },
}

fn t() -> bool {
    true
}
fn d_size() -> SizeSpec {
    SizeSpec::Shortest { shortest_edge: 224 }
}
fn d_crop() -> SizeSpec {
    SizeSpec::Exact {
        height: 224,
        width: 224,
    }
}
fn d_resample() -> u32 {
    3
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}
fn d_mean() -> [f64; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn d_std() -> [f64; 3] {
    [0.26862954, 0.26130258, 0.27577711]
}

/// `preprocessor_config.json` of a `CLIPImageProcessor` (defaults are transformers').
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipImageProcessorConfig {
    #[serde(default = "t")]
    pub do_resize: bool,
    #[serde(default = "d_size")]
    pub size: SizeSpec,
    /// PIL resample code; 3 (bicubic) is the one supported.
    #[serde(default = "d_resample")]
    pub resample: u32,
    #[serde(default = "t")]
    pub do_center_crop: bool,
    #[serde(default = "d_crop")]
    pub crop_size: SizeSpec,
    #[serde(default = "t")]
    pub do_rescale: bool,
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    #[serde(default = "t")]
    pub do_normalize: bool,
    #[serde(default = "d_mean")]
    pub image_mean: [f64; 3],
    #[serde(default = "d_std")]
    pub image_std: [f64; 3],
}

/// Which reference resize to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeBackend {
    /// torchvision's uint8 antialiased bicubic (transformers >= 5).
    #[default]
    Torchvision,
    /// PIL `Image.resize(BICUBIC)` (transformers 4, `CLIPImageProcessorPil`).
    Pil,
}

/// The preprocessor.
#[derive(Debug, Clone)]
pub struct ClipImageProcessor {
    pub config: ClipImageProcessorConfig,
    pub backend: ResizeBackend,
}

/// An RGB uint8 image, `[H, W, 3]` interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb8 {
    pub fn from_image(img: &DynamicImage) -> Self {
        let rgb = img.to_rgb8();
        Rgb8 {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            data: rgb.into_raw(),
        }
    }
}

impl ClipImageProcessor {
    /// Reads `preprocessor_config.json`.
    ///
    /// ```no_run
    /// let p = unclip_clip::ClipImageProcessor::from_file("feature_extractor/preprocessor_config.json").unwrap();
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let config: ClipImageProcessorConfig = unclip_nn::read_json(path)?;
        if config.resample != 3 {
            return Err(LoadError::UnsupportedConfig {
                path: path.to_path_buf(),
                message: format!(
                    "resample {} (only 3 = bicubic is supported)",
                    config.resample
                ),
            });
        }
        Ok(ClipImageProcessor {
            config,
            backend: ResizeBackend::default(),
        })
    }

    /// A processor for square inputs of `size` with OpenAI CLIP's statistics.
    pub fn for_size(size: usize) -> Self {
        ClipImageProcessor {
            config: ClipImageProcessorConfig {
                do_resize: true,
                size: SizeSpec::Shortest {
                    shortest_edge: size,
                },
                resample: 3,
                do_center_crop: true,
                crop_size: SizeSpec::Exact {
                    height: size,
                    width: size,
                },
                do_rescale: true,
                rescale_factor: d_rescale(),
                do_normalize: true,
                image_mean: d_mean(),
                image_std: d_std(),
            },
            backend: ResizeBackend::default(),
        }
    }

    pub fn with_backend(mut self, backend: ResizeBackend) -> Self {
        self.backend = backend;
        self
    }

    /// The resize step alone: `[H, W, 3]` uint8 -> resized uint8.
    pub fn resize(&self, img: &Rgb8) -> Rgb8 {
        if !self.config.do_resize {
            return img.clone();
        }
        let (w, h) = (img.width, img.height);
        let (out_h, out_w) = match self.config.size {
            SizeSpec::Shortest { shortest_edge: s } => {
                // transformers get_resize_output_image_size(default_to_square=False)
                if w <= h {
                    (((s * h) as f64 / w as f64) as usize, s)
                } else {
                    (s, ((s * w) as f64 / h as f64) as usize)
                }
            }
            SizeSpec::Square(s) => (s, s),
            SizeSpec::Exact { height, width } => (height, width),
        };
        let data = match self.backend {
            ResizeBackend::Torchvision => resize_aa_u8_torch(&img.data, h, w, 3, out_h, out_w),
            ResizeBackend::Pil => resize_aa_u8_pil(&img.data, h, w, 3, out_h, out_w),
        };
        Rgb8 {
            width: out_w,
            height: out_h,
            data,
        }
    }

    /// One image to normalised planar `[3, H, W]` values.
    pub fn pixel_values(
        &self,
        img: &Rgb8,
        index: usize,
    ) -> Result<(Vec<f32>, [usize; 3]), ClipError> {
        if img.width == 0 || img.height == 0 || img.data.len() != img.width * img.height * 3 {
            return Err(ClipError::BadImage {
                index,
                message: format!(
                    "{}x{} image with {} bytes",
                    img.width,
                    img.height,
                    img.data.len()
                ),
            });
        }
        let r = self.resize(img);
        let (mut top, mut left, mut ch, mut cw) = (0, 0, r.height, r.width);
        if self.config.do_center_crop {
            let (h, w) = match self.config.crop_size {
                SizeSpec::Square(s) | SizeSpec::Shortest { shortest_edge: s } => (s, s),
                SizeSpec::Exact { height, width } => (height, width),
            };
            if h > r.height || w > r.width {
                return Err(ClipError::BadImage {
                    index,
                    message: format!(
                        "resized to {}x{}, smaller than the {}x{} crop",
                        r.width, r.height, w, h
                    ),
                });
            }
            top = (r.height - h) / 2;
            left = (r.width - w) / 2;
            ch = h;
            cw = w;
        }
        let mut out = vec![0f32; 3 * ch * cw];
        for c in 0..3 {
            for y in 0..ch {
                for x in 0..cw {
                    let mut v = r.data[((top + y) * r.width + left + x) * 3 + c] as f64;
                    if self.config.do_rescale {
                        v *= self.config.rescale_factor;
                    }
                    if self.config.do_normalize {
                        v = (v - self.config.image_mean[c]) / self.config.image_std[c];
                    }
                    out[(c * ch + y) * cw + x] = v as f32;
                }
            }
        }
        Ok((out, [3, ch, cw]))
    }

    /// A batch of images to `pixel_values [B, 3, H, W]` on `device`.
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// let p = unclip_clip::ClipImageProcessor::for_size(224);
    /// let img = image::open("cat.png").unwrap();
    /// let pixels = p.preprocess(&[img], &Device::flex()).unwrap();
    /// ```
    pub fn preprocess(
        &self,
        images: &[DynamicImage],
        device: &Device,
    ) -> Result<Tensor<4>, ClipError> {
        let rgb: Vec<Rgb8> = images.iter().map(Rgb8::from_image).collect();
        self.preprocess_rgb(&rgb, device)
    }

    /// [`Self::preprocess`] from RGB buffers.
    pub fn preprocess_rgb(&self, images: &[Rgb8], device: &Device) -> Result<Tensor<4>, ClipError> {
        if images.is_empty() {
            return Err(ClipError::NoImages);
        }
        let mut all = Vec::new();
        let mut shape = [0; 3];
        for (i, img) in images.iter().enumerate() {
            let (v, s) = self.pixel_values(img, i)?;
            if i > 0 && s != shape {
                return Err(ClipError::BadImage {
                    index: i,
                    message: format!("size {s:?} differs from {shape:?}"),
                });
            }
            shape = s;
            all.extend(v);
        }
        Ok(Tensor::from_data(
            TensorData::new(all, [images.len(), shape[0], shape[1], shape[2]]),
            device,
        ))
    }
}
