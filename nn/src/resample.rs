//! Antialiased bicubic resampling as PIL (`Image.resize(BICUBIC)`) and PyTorch
//! (`F.interpolate(mode="bicubic", align_corners=False, antialias=True)`) do it: a separable
//! cubic filter with a = -0.5 whose support widens by the scale factor when shrinking.
//!
//! The weights are shared; [`resize_aa_f32`] applies them in floating point (PyTorch on float
//! tensors), [`resize_aa_u8_pil`] in PIL's 22-bit fixed point with a uint8 intermediate
//! (PIL on 8-bit images).

/// The cubic convolution kernel with a = -0.5 (PIL's `bicubic_filter`).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For every output index: the first input index and the normalised weights of the window.
pub fn aa_cubic_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor() as usize).min(in_size);
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| cubic((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            (xmin, w)
        })
        .collect()
}

/// Resizes planar `[C, H, W]` float data to `[C, out_h, out_w]` (width pass, then height pass).
pub fn resize_aa_f32(data: &[f32], c: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let wx = aa_cubic_weights(w, out_w);
    let wy = aa_cubic_weights(h, out_h);
    let mut tmp = vec![0f32; c * h * out_w];
    for ch in 0..c {
        for y in 0..h {
            let row = &data[(ch * h + y) * w..(ch * h + y + 1) * w];
            for (ox, (x0, ws)) in wx.iter().enumerate() {
                let mut acc = 0f64;
                for (k, wt) in ws.iter().enumerate() {
                    acc += row[x0 + k] as f64 * wt;
                }
                tmp[(ch * h + y) * out_w + ox] = acc as f32;
            }
        }
    }
    let mut out = vec![0f32; c * out_h * out_w];
    for ch in 0..c {
        for (oy, (y0, ws)) in wy.iter().enumerate() {
            for x in 0..out_w {
                let mut acc = 0f64;
                for (k, wt) in ws.iter().enumerate() {
                    acc += tmp[(ch * h + y0 + k) * out_w + x] as f64 * wt;
                }
                out[(ch * out_h + oy) * out_w + x] = acc as f32;
            }
        }
    }
    out
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
pub fn resize_aa_u8_pil(data: &[u8], h: usize, w: usize, c: usize, out_h: usize, out_w: usize) -> Vec<u8> {
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
pub fn resize_aa_u8_torch(data: &[u8], h: usize, w: usize, c: usize, out_h: usize, out_w: usize) -> Vec<u8> {
    fn int16_weights(ws: &[(usize, Vec<f64>)]) -> (Vec<(usize, Vec<i64>)>, u32) {
        let w_max = ws.iter().flat_map(|(_, w)| w.iter().copied()).fold(0f64, f64::max);
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
        for (i, o) in [(10, 4), (4, 10), (48, 12), (7, 7)] {
            for (_, w) in aa_cubic_weights(i, o) {
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        let data: Vec<f32> = (0..2 * 5 * 6).map(|v| v as f32 * 0.37).collect();
        let same = resize_aa_f32(&data, 2, 5, 6, 5, 6);
        for (a, b) in data.iter().zip(&same) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let data = vec![0.25f32; 3 * 12 * 12];
        for v in resize_aa_f32(&data, 3, 12, 12, 48, 40) {
            assert!((v - 0.25).abs() < 1e-6);
        }
        let px = vec![77u8; 9 * 11 * 3];
        assert!(resize_aa_u8_pil(&px, 9, 11, 3, 4, 5).iter().all(|&v| v == 77));
    }
}
