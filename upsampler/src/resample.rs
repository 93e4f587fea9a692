//! The antialiased bicubic resize the unCLIP pipeline applies to the decoder's 64x64 image before
//! super-resolution: PyTorch `F.interpolate(x, size=[S, S], mode="bicubic", align_corners=False,
//! antialias=True)` (aten `_upsample_bicubic2d_aa`, CPU kernel `UpSampleKernel.cpp`), a separable
//! PIL-style filter with Keys' cubic `a = -0.5` (plain bicubic uses `a = -0.75`).
//!
//! Per output index `i` of one axis (`scale = in / out`, float32 as torch computes it):
//! `center = scale * (i + 0.5)`, `support = 2 * max(scale, 1)`,
//! `xmin = max(trunc(center - support + 0.5), 0)`, `xmax = min(trunc(center + support + 0.5), in)`,
//! `w_j = cubic((j - center + 0.5) / max(scale, 1))` for `j in xmin..xmax`, normalised to sum 1.
//! The width axis is resampled first, then the height axis (torch's order), each as a matrix
//! product with the `[out, in]` weight matrix.

use burn::tensor::{Device, Tensor, TensorData};

/// Keys' cubic convolution kernel with `a = -0.5` (torch `aa_filter` for bicubic).
fn cubic_aa(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// The `[out, in]` resampling matrix of one axis (rows sum to 1).
pub fn bicubic_aa_weights(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    if input == 0 || output == 0 {
        return m;
    }
    let scale = input as f32 / output as f32;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    for i in 0..output {
        let center = scale * (i as f32 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // `as` truncates toward zero
        let xmax = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
        let row = &mut m[i * input..(i + 1) * input];
        let mut total = 0f32;
        for (j, slot) in row.iter_mut().enumerate().take(xmax).skip(xmin) {
            let w = cubic_aa((j as f32 - center + 0.5) * invscale);
            *slot = w;
            total += w;
        }
        if total != 0.0 {
            for w in &mut row[xmin..xmax] {
                *w /= total;
            }
        }
    }
    m
}

/// `[B, C, H, W] -> [B, C, out_h, out_w]` with torch's antialiased bicubic interpolation
/// (`align_corners=False`, `antialias=True`). Works for up- and downscaling.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_identity_when_same_size() {
        for (i, o) in [(12, 48), (64, 256), (48, 12), (7, 7)] {
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
}
