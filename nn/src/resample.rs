//! Antialiased bicubic resampling as PIL (`Image.resize(BICUBIC)`) and PyTorch
//! (`F.interpolate(mode="bicubic", align_corners=False, antialias=True)`) do it: a separable
//! cubic filter with a = -0.5 whose support widens by the scale factor when shrinking.
//!
//! One window computation ([`aa_cubic_windows`]) serves three reference kernels:
//! [`resize_bicubic_antialias`] (PyTorch on float tensors, f32 weights as matrix products),
//! [`resize_aa_u8_pil`] (PIL's 22-bit fixed point with a uint8 intermediate) and
//! [`resize_aa_u8_torch`] (torch's uint8 kernel with int16 weights).

use burn::tensor::{Device, Tensor, TensorData};

/// The float type a resampling path computes its weights in: torch's float kernel uses f32,
/// PIL and torch's uint8 kernel f64; the arithmetic is the same.
pub trait ResampleFloat:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::DivAssign
    + std::iter::Sum
{
    fn of(v: f64) -> Self;
    fn abs(self) -> Self;
    /// `as i64` (truncation toward zero, as C's cast).
    fn trunc_i64(self) -> i64;
}

impl ResampleFloat for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
    fn trunc_i64(self) -> i64 {
        self as i64
    }
}

impl ResampleFloat for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn trunc_i64(self) -> i64 {
        self as i64
    }
}

/// The cubic convolution kernel with a = -0.5 (PIL's `bicubic_filter`, torch's `aa_filter`).
fn cubic<T: ResampleFloat>(x: T) -> T {
    let a = T::of(-0.5);
    let (one, two) = (T::of(1.0), T::of(2.0));
    let x = x.abs();
    if x < one {
        ((a + two) * x - (a + T::of(3.0))) * x * x + one
    } else if x < two {
        (((x - T::of(5.0)) * x + T::of(8.0)) * x - T::of(4.0)) * a
    } else {
        T::of(0.0)
    }
}

/// For every output index of one axis: the first input index and the normalised weights of its
/// window (`scale = in / out`, `support = 2 max(scale, 1)`, `center = scale (i + 0.5)`,
/// `w_j = cubic((j - center + 0.5) / max(scale, 1))`), computed in `T`.
pub fn aa_cubic_windows<T: ResampleFloat>(in_size: usize, out_size: usize) -> Vec<(usize, Vec<T>)> {
    if in_size == 0 || out_size == 0 {
        return Vec::new();
    }
    let scale = T::of(in_size as f64) / T::of(out_size as f64);
    let one = T::of(1.0);
    let (support, invscale) = if scale >= one {
        (T::of(2.0) * scale, one / scale)
    } else {
        (T::of(2.0), one)
    };
    let half = T::of(0.5);
    (0..out_size)
        .map(|i| {
            let center = scale * (T::of(i as f64) + half);
            let xmin = (center - support + half).trunc_i64().max(0) as usize;
            let xmax = ((center + support + half).trunc_i64().max(0) as usize).min(in_size);
            let mut w: Vec<T> = (xmin..xmax)
                .map(|j| cubic((T::of(j as f64) - center + half) * invscale))
                .collect();
            let total: T = w.iter().copied().sum();
            if total != T::of(0.0) {
                for v in &mut w {
                    *v /= total;
                }
            }
            (xmin, w)
        })
        .collect()
}

/// The f64 windows used by the uint8 paths (PIL and torch's uint8 kernel).
pub fn aa_cubic_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    aa_cubic_windows::<f64>(in_size, out_size)
}

/// The dense `[out, in]` f32 resampling matrix of one axis, as torch's float kernel computes it
/// (rows sum to 1).
pub fn bicubic_aa_weights(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    for (i, (x0, w)) in aa_cubic_windows::<f32>(input, output)
        .into_iter()
        .enumerate()
    {
        m[i * input + x0..i * input + x0 + w.len()].copy_from_slice(&w);
    }
    m
}

/// `[B, C, H, W] -> [B, C, out_h, out_w]` with torch's antialiased bicubic interpolation on float
/// tensors (`F.interpolate(mode="bicubic", align_corners=False, antialias=True)`): the width axis
/// first, then the height axis, each as a matrix product with the `[out, in]` weight matrix.
pub fn resize_bicubic_antialias(x: Tensor<4>, out_hw: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let device: Device = x.device();
    let [oh, ow] = out_hw;
    let x = if ow != w {
        let ww =
            Tensor::<2>::from_data(TensorData::new(bicubic_aa_weights(w, ow), [ow, w]), &device);
        x.matmul(ww.transpose().unsqueeze::<4>()) // [B, C, H, W] x [1, 1, W, OW] -> [B, C, H, OW]
    } else {
        x
    };
    if oh != h {
        let wh =
            Tensor::<2>::from_data(TensorData::new(bicubic_aa_weights(h, oh), [oh, h]), &device);
        wh.unsqueeze::<4>().matmul(x) // [1, 1, OH, H] x [B, C, H, OW] -> [B, C, OH, OW]
    } else {
        x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn fixed_weights(ws: &[(usize, Vec<f64>)]) -> Vec<(usize, Vec<i64>)> {
    ws.iter()
        .map(|(x0, w)| {
            let k = w
                .iter()
                .map(|&v| {
                    let s = v * (1u64 << PRECISION_BITS) as f64;
                    (if v < 0.0 { s - 0.5 } else { s + 0.5 }).trunc() as i64
                })
                .collect();
            (*x0, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved `[H, W, C]` uint8 pixels to `[out_h, out_w, C]` exactly as PIL's
/// `Image.resize(..., BICUBIC)` (fixed-point weights, horizontal pass to a uint8 intermediate,
/// then the vertical pass).
pub fn resize_aa_u8_pil(
    data: &[u8],
    h: usize,
    w: usize,
    c: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let tmp = if out_w != w {
        let kx = fixed_weights(&aa_cubic_weights(w, out_w));
        let mut tmp = vec![0u8; h * out_w * c];
        for y in 0..h {
            for (ox, (x0, ks)) in kx.iter().enumerate() {
                for ch in 0..c {
                    let mut acc = half;
                    for (k, kk) in ks.iter().enumerate() {
                        acc += data[(y * w + x0 + k) * c + ch] as i64 * kk;
                    }
                    tmp[(y * out_w + ox) * c + ch] = clip8(acc);
                }
            }
        }
        tmp
    } else {
        data.to_vec()
    };
    if out_h == h {
        return tmp;
    }
    let ky = fixed_weights(&aa_cubic_weights(h, out_h));
    let mut out = vec![0u8; out_h * out_w * c];
    for (oy, (y0, ks)) in ky.iter().enumerate() {
        for x in 0..out_w {
            for ch in 0..c {
                let mut acc = half;
                for (k, kk) in ks.iter().enumerate() {
                    acc += tmp[((y0 + k) * out_w + x) * c + ch] as i64 * kk;
                }
                out[(oy * out_w + x) * c + ch] = clip8(acc);
            }
        }
    }
    out
}

/// Resizes interleaved `[H, W, C]` uint8 pixels as PyTorch's uint8 antialiased bicubic kernel
/// (`torchvision.transforms.v2.functional.resize(..., BICUBIC, antialias=True)` on a uint8 tensor,
/// what transformers 5's CLIPImageProcessor uses): int16 weights whose precision is the largest
/// that keeps the biggest weight below 2^15, horizontal pass to a uint8 intermediate, then the
/// vertical pass.
pub fn resize_aa_u8_torch(
    data: &[u8],
    h: usize,
    w: usize,
    c: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    fn int16_weights(ws: &[(usize, Vec<f64>)]) -> (Vec<(usize, Vec<i64>)>, u32) {
        let w_max = ws
            .iter()
            .flat_map(|(_, w)| w.iter().copied())
            .fold(0f64, f64::max);
        let mut precision = 0u32;
        while precision < 22 {
            let next = (0.5 + w_max * (1u64 << (precision + 1)) as f64) as i64;
            if next >= (1 << 15) {
                break;
            }
            precision += 1;
        }
        let scale = (1u64 << precision) as f64;
        let k = ws
            .iter()
            .map(|(x0, w)| {
                let k = w
                    .iter()
                    .map(|&v| {
                        let s = v * scale;
                        (if v < 0.0 { s - 0.5 } else { s + 0.5 }) as i64
                    })
                    .collect();
                (*x0, k)
            })
            .collect();
        (k, precision)
    }
    let clip = |acc: i64, p: u32| (acc >> p).clamp(0, 255) as u8;
    let tmp = if out_w != w {
        let (kx, p) = int16_weights(&aa_cubic_weights(w, out_w));
        let mut tmp = vec![0u8; h * out_w * c];
        for y in 0..h {
            for (ox, (x0, ks)) in kx.iter().enumerate() {
                for ch in 0..c {
                    let mut acc = 1i64 << (p - 1);
                    for (k, kk) in ks.iter().enumerate() {
                        acc += data[(y * w + x0 + k) * c + ch] as i64 * kk;
                    }
                    tmp[(y * out_w + ox) * c + ch] = clip(acc, p);
                }
            }
        }
        tmp
    } else {
        data.to_vec()
    };
    if out_h == h {
        return tmp;
    }
    let (ky, p) = int16_weights(&aa_cubic_weights(h, out_h));
    let mut out = vec![0u8; out_h * out_w * c];
    for (oy, (y0, ks)) in ky.iter().enumerate() {
        for x in 0..out_w {
            for ch in 0..c {
                let mut acc = 1i64 << (p - 1);
                for (k, kk) in ks.iter().enumerate() {
                    acc += tmp[((y0 + k) * out_w + x) * c + ch] as i64 * kk;
                }
                out[(oy * out_w + x) * c + ch] = clip(acc, p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_identity_is_exact() {
        for (i, o) in [(10, 4), (4, 10), (48, 12), (12, 48), (64, 256), (7, 7)] {
            for (_, w) in aa_cubic_weights(i, o) {
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
            let m = bicubic_aa_weights(i, o);
            for r in 0..o {
                let s: f32 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o} row {r} sums to {s}");
            }
        }
        let m = bicubic_aa_weights(5, 5);
        for r in 0..5 {
            for c in 0..5 {
                assert!((m[r * 5 + c] - if r == c { 1.0 } else { 0.0 }).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let px = vec![77u8; 9 * 11 * 3];
        assert!(
            resize_aa_u8_pil(&px, 9, 11, 3, 4, 5)
                .iter()
                .all(|&v| v == 77)
        );
        assert!(
            resize_aa_u8_torch(&px, 9, 11, 3, 20, 5)
                .iter()
                .all(|&v| v == 77)
        );
    }
}
