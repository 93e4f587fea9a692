//! Noise-conditioning augmentation of the super-resolution models' low-resolution input
//! (DALL-E 2 appendix C: "we corrupt the conditioning image for the first upsampler with
//! gaussian blur, and for the second, we use a more diverse BSR degradation"), so an upsampler
//! trained on clean downscaled crops copes with the decoder's / first upsampler's imperfect
//! outputs.
//!
//! - [`LowResAugmentation::GaussianBlur`] (64 -> 256): a Gaussian blur (kernel 3, sigma 0.6 by
//!   default), separable, reflect padding (torchvision's `GaussianBlur`), run on the device as two
//!   matrix products with `[n, n]` blur matrices whose rows sum to 1.
//! - [`LowResAugmentation::Bsr`] (256 -> 1024): a BSR-style degradation (Zhang et al. 2021,
//!   "Designing a Practical Degradation Model for Deep Blind Image Super-Resolution"): per image,
//!   a random-order sequence of a Gaussian blur (isotropic or axis-aligned anisotropic, random
//!   sigma), a downscale-and-upscale by a random factor (antialiased bicubic both ways, so the
//!   size is kept), additive Gaussian noise (random sigma), then JPEG-like compression at a random
//!   quality: JFIF YCbCr, 8x8 DCT-II per block, quantisation with the IJG-scaled standard
//!   luminance / chrominance tables, inverse DCT, rounding to 8-bit levels. Each step fires with
//!   its own probability. Run on the host (images are pulled from the device and uploaded).
//!
//! Every draw comes from the caller's seeded generator (`next_u64` only, Box-Muller for normal
//! draws), so a seed gives the same degradation on every device. Images are `[B, C, H, W]` in
//! `[-1, 1]`; the outputs are clamped to `[-1, 1]`.

use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};
use unclip_decoder::DecoderError;
use unclip_decoder::train::uniform01;

use crate::bicubic_aa_weights;

/// A normalised 1-D Gaussian kernel of `size` taps (odd), `exp(-x^2 / (2 sigma^2))` at
/// `x = -(size-1)/2 ..= (size-1)/2`, summing to 1 (torchvision `_get_gaussian_kernel1d`).
pub fn gaussian_kernel(size: usize, sigma: f32) -> Vec<f32> {
    let half = (size as f32 - 1.0) * 0.5;
    let k: Vec<f32> = (0..size)
        .map(|i| {
            let x = i as f32 - half;
            (-(x * x) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let s: f32 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Reflect-101 index (torch `reflect` padding: `-1 -> 1`, `n -> n - 2`), for any offset.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut j = i.rem_euclid(period);
    if j >= n as isize {
        j = period - j;
    }
    j as usize
}

/// The `[n, n]` matrix (row-major, `[out, in]`) of a 1-D convolution with `kernel` (odd length)
/// and reflect padding. Rows sum to the kernel's sum (1 for [`gaussian_kernel`]).
pub fn blur_matrix(n: usize, kernel: &[f32]) -> Vec<f32> {
    let r = (kernel.len() / 2) as isize;
    let mut m = vec![0f32; n * n];
    for o in 0..n {
        for (k, &w) in kernel.iter().enumerate() {
            let i = reflect(o as isize + k as isize - r, n);
            m[o * n + i] += w;
        }
    }
    m
}

fn check_kernel(kernel_size: usize, sigma: f32) -> Result<(), DecoderError> {
    if kernel_size == 0 || kernel_size.is_multiple_of(2) {
        return Err(DecoderError::InvalidArgument {
            name: "kernel_size".into(),
            message: format!("{kernel_size} is not a positive odd number"),
        });
    }
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(DecoderError::InvalidArgument {
            name: "sigma".into(),
            message: format!("{sigma} is not a positive number"),
        });
    }
    Ok(())
}

/// Gaussian blur of `x [B, C, H, W]` (separable, reflect padding, same size), on `x`'s device:
/// `Bh · x · Bw^T` with the [`blur_matrix`] of each axis.
pub fn gaussian_blur(
    x: Tensor<4>,
    kernel_size: usize,
    sigma: [f32; 2],
) -> Result<Tensor<4>, DecoderError> {
    check_kernel(kernel_size, sigma[0])?;
    check_kernel(kernel_size, sigma[1])?;
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let bw = Tensor::<2>::from_data(
        TensorData::new(
            blur_matrix(w, &gaussian_kernel(kernel_size, sigma[1])),
            [w, w],
        ),
        &device,
    );
    let bh = Tensor::<2>::from_data(
        TensorData::new(
            blur_matrix(h, &gaussian_kernel(kernel_size, sigma[0])),
            [h, h],
        ),
        &device,
    );
    let x = x.matmul(bw.transpose().unsqueeze::<4>()); // [B, C, H, W] x [1, 1, W, W]
    Ok(bh.unsqueeze::<4>().matmul(x)) // [1, 1, H, H] x [B, C, H, W]
}

/// Settings of the BSR-style degradation (each range `[lo, hi]` is sampled uniformly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BsrConfig {
    /// Probability of the blur step.
    pub blur_prob: f64,
    /// Blur kernel size (odd).
    pub blur_kernel_size: usize,
    /// Blur sigma range (pixels of the low-resolution image).
    pub blur_sigma: [f32; 2],
    /// Probability that the blur is anisotropic (independent sigmas along H and W).
    pub anisotropic_prob: f64,
    /// Probability of the downscale-upscale step.
    pub downscale_prob: f64,
    /// Downscale factor range (>= 1).
    pub downscale_factor: [f32; 2],
    /// Probability of the noise step.
    pub noise_prob: f64,
    /// Noise standard deviation range, in `[-1, 1]` image units (2/255 per 8-bit level).
    pub noise_sigma: [f32; 2],
    /// Probability of the JPEG-like step.
    pub jpeg_prob: f64,
    /// JPEG quality range (1..=100).
    pub jpeg_quality: [u8; 2],
    /// Shuffle the order of blur, downscale and noise per image (JPEG is always last).
    pub shuffle: bool,
}

impl Default for BsrConfig {
    fn default() -> Self {
        BsrConfig {
            blur_prob: 0.8,
            blur_kernel_size: 7,
            blur_sigma: [0.2, 2.0],
            anisotropic_prob: 0.5,
            downscale_prob: 0.5,
            downscale_factor: [1.0, 2.0],
            noise_prob: 0.75,
            noise_sigma: [2.0 / 255.0, 50.0 / 255.0],
            jpeg_prob: 0.75,
            jpeg_quality: [30, 95],
            shuffle: true,
        }
    }
}

impl BsrConfig {
    /// Checks probabilities, ranges and the kernel size.
    pub fn validate(&self) -> Result<(), DecoderError> {
        for (name, p) in [
            ("blur_prob", self.blur_prob),
            ("anisotropic_prob", self.anisotropic_prob),
            ("downscale_prob", self.downscale_prob),
            ("noise_prob", self.noise_prob),
            ("jpeg_prob", self.jpeg_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(name, format!("{p} is not in [0, 1]")));
            }
        }
        let range = |name: &str, r: [f32; 2], min: f32| {
            if r[0].is_finite() && r[1].is_finite() && min <= r[0] && r[0] <= r[1] {
                Ok(())
            } else {
                Err(bad(
                    name,
                    format!("{r:?} is not a range [lo, hi] with lo >= {min}"),
                ))
            }
        };
        range("blur_sigma", self.blur_sigma, f32::MIN_POSITIVE)?;
        range("downscale_factor", self.downscale_factor, 1.0)?;
        range("noise_sigma", self.noise_sigma, 0.0)?;
        let [q0, q1] = self.jpeg_quality;
        if !(1 <= q0 && q0 <= q1 && q1 <= 100) {
            return Err(bad(
                "jpeg_quality",
                format!("{:?} is not a range within 1..=100", [q0, q1]),
            ));
        }
        check_kernel(self.blur_kernel_size, 1.0)
    }
}

fn bad(name: &str, message: String) -> DecoderError {
    DecoderError::InvalidArgument {
        name: name.into(),
        message,
    }
}

/// The augmentation applied to the low-resolution input during super-resolution training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LowResAugmentation {
    /// The clean downscaled image.
    None,
    /// Gaussian blur (DALL-E 2's 64 -> 256 upsampler: kernel 3, sigma 0.6).
    GaussianBlur { kernel_size: usize, sigma: f32 },
    /// BSR-style degradation (DALL-E 2's 256 -> 1024 upsampler).
    Bsr(BsrConfig),
}

impl LowResAugmentation {
    /// The 64 -> 256 stage's blur (kernel 3, sigma 0.6).
    pub fn blur_64_to_256() -> Self {
        LowResAugmentation::GaussianBlur {
            kernel_size: 3,
            sigma: 0.6,
        }
    }

    /// The 256 -> 1024 stage's BSR degradation with [`BsrConfig::default`].
    pub fn bsr_256_to_1024() -> Self {
        LowResAugmentation::Bsr(BsrConfig::default())
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), DecoderError> {
        match self {
            LowResAugmentation::None => Ok(()),
            LowResAugmentation::GaussianBlur { kernel_size, sigma } => {
                check_kernel(*kernel_size, *sigma)
            }
            LowResAugmentation::Bsr(c) => c.validate(),
        }
    }

    /// Augments `x [B, C, H, W]` (in `[-1, 1]`) with draws from `rng`; returns `[B, C, H, W]`
    /// clamped to `[-1, 1]`.
    ///
    /// ```
    /// use burn::tensor::{Device, Tensor};
    /// use rand::SeedableRng;
    /// use unclip_upsampler::degrade::LowResAugmentation;
    ///
    /// let device = Device::flex();
    /// let x = Tensor::<4>::zeros([2, 3, 16, 16], &device);
    /// let mut rng = rand::rngs::ChaCha12Rng::seed_from_u64(0);
    /// let y = LowResAugmentation::bsr_256_to_1024().apply(x, &mut rng).unwrap();
    /// assert_eq!(y.dims(), [2, 3, 16, 16]);
    /// ```
    pub fn apply<R: Rng + ?Sized>(
        &self,
        x: Tensor<4>,
        rng: &mut R,
    ) -> Result<Tensor<4>, DecoderError> {
        self.validate()?;
        match self {
            LowResAugmentation::None => Ok(x.clamp(-1.0, 1.0)),
            LowResAugmentation::GaussianBlur { kernel_size, sigma } => {
                Ok(gaussian_blur(x, *kernel_size, [*sigma, *sigma])?.clamp(-1.0, 1.0))
            }
            LowResAugmentation::Bsr(cfg) => {
                let dims = x.dims();
                let device = x.device();
                let mut v: Vec<f32> = x
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| bad("x", format!("{e:?}")))?;
                let [b, c, h, w] = dims;
                let per = c * h * w;
                for i in 0..b {
                    bsr_degrade(&mut v[i * per..(i + 1) * per], [c, h, w], cfg, rng);
                }
                Ok(Tensor::from_data(TensorData::new(v, dims), &device))
            }
        }
    }
}

fn uniform_in<R: Rng + ?Sized>(rng: &mut R, r: [f32; 2]) -> f32 {
    r[0] + (r[1] - r[0]) * uniform01(rng) as f32
}

/// A standard normal draw (Box-Muller on two uniforms).
fn normal<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    let u1 = 1.0 - uniform01(rng); // (0, 1]
    let u2 = uniform01(rng);
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Applies the `[out, in]` matrices `mh` (`[oh, h]`) and `mw` (`[ow, w]`) to every plane of
/// `x [C, H, W]`: `[C, oh, ow]`.
fn apply_separable(
    x: &[f32],
    [c, h, w]: [usize; 3],
    mh: &[f32],
    oh: usize,
    mw: &[f32],
    ow: usize,
) -> Vec<f32> {
    let mut tmp = vec![0f32; c * h * ow];
    for p in 0..c {
        for y in 0..h {
            let row = &x[(p * h + y) * w..(p * h + y + 1) * w];
            for o in 0..ow {
                let wr = &mw[o * w..(o + 1) * w];
                tmp[(p * h + y) * ow + o] = row.iter().zip(wr).map(|(a, b)| a * b).sum();
            }
        }
    }
    let mut out = vec![0f32; c * oh * ow];
    for p in 0..c {
        for o in 0..oh {
            let wr = &mh[o * h..(o + 1) * h];
            for (y, &wy) in wr.iter().enumerate() {
                if wy == 0.0 {
                    continue;
                }
                let src = &tmp[(p * h + y) * ow..(p * h + y + 1) * ow];
                let dst = &mut out[(p * oh + o) * ow..(p * oh + o + 1) * ow];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += wy * s;
                }
            }
        }
    }
    out
}

/// One image `[C, H, W]` degraded in place.
fn bsr_degrade<R: Rng + ?Sized>(img: &mut [f32], dims: [usize; 3], cfg: &BsrConfig, rng: &mut R) {
    let [c, h, w] = dims;
    // 0 blur, 1 downscale, 2 noise; Fisher-Yates when shuffling.
    let mut order = [0usize, 1, 2];
    if cfg.shuffle {
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    for op in order {
        match op {
            0 => {
                if uniform01(rng) < cfg.blur_prob {
                    let s0 = uniform_in(rng, cfg.blur_sigma);
                    let s1 = if uniform01(rng) < cfg.anisotropic_prob {
                        uniform_in(rng, cfg.blur_sigma)
                    } else {
                        s0
                    };
                    let k = cfg.blur_kernel_size;
                    let mh = blur_matrix(h, &gaussian_kernel(k, s0));
                    let mw = blur_matrix(w, &gaussian_kernel(k, s1));
                    let out = apply_separable(img, dims, &mh, h, &mw, w);
                    img.copy_from_slice(&out);
                }
            }
            1 => {
                if uniform01(rng) < cfg.downscale_prob {
                    let f = uniform_in(rng, cfg.downscale_factor);
                    let dh = ((h as f32 / f).round() as usize).clamp(1, h);
                    let dw = ((w as f32 / f).round() as usize).clamp(1, w);
                    if dh != h || dw != w {
                        let small = apply_separable(
                            img,
                            dims,
                            &bicubic_aa_weights(h, dh),
                            dh,
                            &bicubic_aa_weights(w, dw),
                            dw,
                        );
                        let out = apply_separable(
                            &small,
                            [c, dh, dw],
                            &bicubic_aa_weights(dh, h),
                            h,
                            &bicubic_aa_weights(dw, w),
                            w,
                        );
                        img.copy_from_slice(&out);
                    }
                }
            }
            _ => {
                if uniform01(rng) < cfg.noise_prob {
                    let s = uniform_in(rng, cfg.noise_sigma);
                    for v in img.iter_mut() {
                        *v += s * normal(rng);
                    }
                }
            }
        }
    }
    for v in img.iter_mut() {
        *v = v.clamp(-1.0, 1.0);
    }
    if uniform01(rng) < cfg.jpeg_prob {
        let [q0, q1] = cfg.jpeg_quality;
        let q = q0 + (rng.next_u64() % (q1 - q0 + 1) as u64) as u8;
        jpeg_like(img, dims, q);
    }
}

const LUMA_Q: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];
const CHROMA_Q: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// The IJG quality scaling of a base table (`quality` 1..=100).
pub fn jpeg_quant_table(base: &[u16; 64], quality: u8) -> [f32; 64] {
    let q = quality.clamp(1, 100) as u32;
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    let mut t = [0f32; 64];
    for (o, &b) in t.iter_mut().zip(base) {
        *o = ((b as u32 * scale + 50) / 100).clamp(1, 255) as f32;
    }
    t
}

/// `cos((2x + 1) u pi / 16) * C(u) / 2`, `[u][x]`: the orthonormal 8-point DCT-II basis.
fn dct_basis() -> [[f32; 8]; 8] {
    let mut m = [[0f32; 8]; 8];
    for (u, row) in m.iter_mut().enumerate() {
        let cu = if u == 0 { (0.5f32).sqrt() } else { 1.0 };
        for (x, v) in row.iter_mut().enumerate() {
            *v = 0.5 * cu * (((2 * x + 1) as f32 * u as f32 * std::f32::consts::PI) / 16.0).cos();
        }
    }
    m
}

/// Quantises one 8x8 block (level-shifted samples) in place through DCT / table / IDCT.
fn quantise_block(block: &mut [f32; 64], table: &[f32; 64], basis: &[[f32; 8]; 8]) {
    // F = D X D^T
    let mut tmp = [0f32; 64];
    for u in 0..8 {
        for x in 0..8 {
            tmp[u * 8 + x] = (0..8).map(|y| basis[u][y] * block[y * 8 + x]).sum();
        }
    }
    let mut f = [0f32; 64];
    for u in 0..8 {
        for v in 0..8 {
            f[u * 8 + v] = (0..8).map(|x| tmp[u * 8 + x] * basis[v][x]).sum();
        }
    }
    for (c, q) in f.iter_mut().zip(table) {
        *c = (*c / q).round() * q;
    }
    // X = D^T F D
    for y in 0..8 {
        for v in 0..8 {
            tmp[y * 8 + v] = (0..8).map(|u| basis[u][y] * f[u * 8 + v]).sum();
        }
    }
    for y in 0..8 {
        for x in 0..8 {
            block[y * 8 + x] = (0..8).map(|v| tmp[y * 8 + v] * basis[v][x]).sum();
        }
    }
}

/// JPEG-like compression of one image `[C, H, W]` in `[-1, 1]` at `quality` (in place): 8-bit
/// levels, JFIF YCbCr for 3 channels (no chroma subsampling), 8x8 DCT quantisation with the
/// standard tables (luminance table for every channel when C != 3), back to `[-1, 1]` on 8-bit
/// levels. Edge blocks are padded by replicating the last row / column.
pub fn jpeg_like(img: &mut [f32], [c, h, w]: [usize; 3], quality: u8) {
    let n = h * w;
    let to255 = |v: f32| (v.clamp(-1.0, 1.0) + 1.0) * 127.5;
    let mut planes: Vec<Vec<f32>> = (0..c)
        .map(|p| img[p * n..(p + 1) * n].iter().map(|&v| to255(v)).collect())
        .collect();
    let ycc = c == 3;
    if ycc {
        for i in 0..n {
            let (r, g, b) = (planes[0][i], planes[1][i], planes[2][i]);
            planes[0][i] = 0.299 * r + 0.587 * g + 0.114 * b;
            planes[1][i] = -0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0;
            planes[2][i] = 0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0;
        }
    }
    let luma = jpeg_quant_table(&LUMA_Q, quality);
    let chroma = jpeg_quant_table(&CHROMA_Q, quality);
    let basis = dct_basis();
    for (p, plane) in planes.iter_mut().enumerate() {
        let table = if ycc && p > 0 { &chroma } else { &luma };
        for by in (0..h).step_by(8) {
            for bx in (0..w).step_by(8) {
                let mut block = [0f32; 64];
                for y in 0..8 {
                    for x in 0..8 {
                        let (sy, sx) = ((by + y).min(h - 1), (bx + x).min(w - 1));
                        block[y * 8 + x] = plane[sy * w + sx] - 128.0;
                    }
                }
                quantise_block(&mut block, table, &basis);
                for y in 0..8.min(h - by) {
                    for x in 0..8.min(w - bx) {
                        plane[(by + y) * w + bx + x] = block[y * 8 + x] + 128.0;
                    }
                }
            }
        }
    }
    if ycc {
        for i in 0..n {
            let (y, cb, cr) = (planes[0][i], planes[1][i] - 128.0, planes[2][i] - 128.0);
            planes[0][i] = y + 1.402 * cr;
            planes[1][i] = y - 0.344_136 * cb - 0.714_136 * cr;
            planes[2][i] = y + 1.772 * cb;
        }
    }
    for p in 0..c {
        for i in 0..n {
            img[p * n + i] = planes[p][i].round().clamp(0.0, 255.0) / 127.5 - 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use rand::SeedableRng;
    use rand::rngs::ChaCha12Rng;

    use super::*;

    fn host(t: Tensor<4>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    fn pattern(device: &Device) -> Tensor<4> {
        let (b, c, h, w) = (2, 3, 16, 12);
        let v: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0).clamp(-1.0, 1.0))
            .collect();
        Tensor::from_data(TensorData::new(v, [b, c, h, w]), device)
    }

    #[test]
    fn kernel_sums_to_one_and_is_symmetric() {
        for (k, s) in [(3, 0.6), (7, 1.5), (21, 3.0), (1, 0.5)] {
            let g = gaussian_kernel(k, s);
            let sum: f32 = g.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "{k} {s}: {sum}");
            for i in 0..k {
                assert!((g[i] - g[k - 1 - i]).abs() < 1e-7);
            }
        }
        // torchvision's 3-tap kernel at sigma 0.6.
        let g = gaussian_kernel(3, 0.6);
        let e = (-1.0f32 / 0.72).exp();
        assert!((g[0] - e / (1.0 + 2.0 * e)).abs() < 1e-6);
        for n in [1, 2, 3, 5, 16] {
            let m = blur_matrix(n, &gaussian_kernel(7, 2.0));
            for r in 0..n {
                let s: f32 = m[r * n..(r + 1) * n].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "n {n} row {r}: {s}");
            }
        }
    }

    #[test]
    fn blur_of_a_constant_image_is_constant() {
        let device = Device::flex();
        let x = Tensor::<4>::full([2, 3, 9, 7], 0.3, &device);
        let y = host(gaussian_blur(x, 3, [0.6, 0.6]).unwrap());
        assert!(y.iter().all(|v| (v - 0.3).abs() < 1e-6));
        let x = Tensor::<4>::full([1, 3, 16, 16], -0.4, &device);
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let cfg = BsrConfig {
            blur_prob: 1.0,
            noise_prob: 0.0,
            jpeg_prob: 0.0,
            downscale_prob: 1.0,
            ..BsrConfig::default()
        };
        let y = host(LowResAugmentation::Bsr(cfg).apply(x, &mut rng).unwrap());
        assert!(y.iter().all(|v| (v + 0.4).abs() < 1e-5));
    }

    #[test]
    fn blur_matches_direct_convolution_with_reflect_padding() {
        let device = Device::flex();
        let x = pattern(&device);
        let [b, c, h, w] = x.dims();
        let xv = host(x.clone());
        let y = host(gaussian_blur(x, 3, [0.6, 0.6]).unwrap());
        let k = gaussian_kernel(3, 0.6);
        for p in 0..b * c {
            for i in 0..h {
                for j in 0..w {
                    let mut s = 0.0;
                    for (di, ki) in k.iter().enumerate() {
                        for (dj, kj) in k.iter().enumerate() {
                            let ii = reflect(i as isize + di as isize - 1, h);
                            let jj = reflect(j as isize + dj as isize - 1, w);
                            s += ki * kj * xv[(p * h + ii) * w + jj];
                        }
                    }
                    let got = y[(p * h + i) * w + j];
                    assert!((got - s).abs() < 1e-5, "{p} {i} {j}: {got} vs {s}");
                }
            }
        }
    }

    #[test]
    fn degradation_is_deterministic_for_a_seed_and_changes_the_image() {
        let device = Device::flex();
        let x = pattern(&device);
        let xv = host(x.clone());
        let aug = LowResAugmentation::bsr_256_to_1024();
        let run = |seed: u64| {
            let mut rng = ChaCha12Rng::seed_from_u64(seed);
            host(aug.apply(x.clone(), &mut rng).unwrap())
        };
        let (a, b, c) = (run(3), run(3), run(4));
        assert_eq!(a, b, "same seed, same degradation");
        assert_ne!(a, c, "another seed, another degradation");
        let diff = a
            .iter()
            .zip(&xv)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff > 1e-3, "the image changed ({diff})");
        assert!(a.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
        // The blur changes a non-constant image too.
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let y = host(
            LowResAugmentation::blur_64_to_256()
                .apply(x, &mut rng)
                .unwrap(),
        );
        assert!(y.iter().zip(&xv).any(|(p, q)| (p - q).abs() > 1e-3));
    }

    #[test]
    fn jpeg_like_keeps_flat_blocks_and_loses_detail_at_low_quality() {
        // A flat grey image survives exactly (up to 8-bit rounding).
        let (c, h, w) = (3, 10, 13);
        let mut img = vec![0.2f32; c * h * w];
        jpeg_like(&mut img, [c, h, w], 50);
        let level = ((0.2f32 + 1.0) * 127.5).round() / 127.5 - 1.0;
        assert!(
            img.iter().all(|v| (v - level).abs() < 1.5 / 127.5),
            "{:?}",
            &img[..4]
        );
        // Detail is lost more at quality 10 than at quality 95.
        let src: Vec<f32> = (0..c * h * w)
            .map(|i| if (i / 3) % 2 == 0 { 0.8 } else { -0.8 })
            .collect();
        let err = |q: u8| {
            let mut v = src.clone();
            jpeg_like(&mut v, [c, h, w], q);
            v.iter()
                .zip(&src)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
        };
        assert!(err(10) > err(95), "{} vs {}", err(10), err(95));
        assert_eq!(jpeg_quant_table(&LUMA_Q, 50)[0], 16.0);
        assert_eq!(jpeg_quant_table(&LUMA_Q, 100)[0], 1.0);
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        let device = Device::flex();
        let x = pattern(&device);
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let r = LowResAugmentation::GaussianBlur {
            kernel_size: 4,
            sigma: 0.6,
        }
        .apply(x.clone(), &mut rng);
        assert!(matches!(r, Err(DecoderError::InvalidArgument { .. })));
        let r = LowResAugmentation::Bsr(BsrConfig {
            jpeg_quality: [90, 10],
            ..BsrConfig::default()
        })
        .apply(x, &mut rng);
        assert!(matches!(r, Err(DecoderError::InvalidArgument { .. })));
    }
}
