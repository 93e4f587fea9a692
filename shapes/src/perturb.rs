//! Image degradations used to test the oracle's robustness (and handy for examples).

use image::RgbImage;
use rand::{Rng, RngExt};

/// Adds i.i.d. Gaussian noise of standard deviation `sigma` (0..255 units, e.g. 10.0) to
/// every channel of every pixel, clamping to `0..=255`.
pub fn add_gaussian_noise<R: Rng + ?Sized>(image: &RgbImage, sigma: f32, rng: &mut R) -> RgbImage {
    let mut out = image.clone();
    for v in out.iter_mut() {
        // Box-Muller.
        let u1: f32 = rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = rng.random_range(0.0..1.0);
        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        *v = (*v as f32 + sigma * z).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// 3x3 box blur; edge pixels average their in-image neighbours.
pub fn box_blur3(image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut out = image.clone();
    for y in 0..h {
        for x in 0..w {
            let mut sum = [0u32; 3];
            let mut n = 0;
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    let p = image.get_pixel(xx, yy).0;
                    for c in 0..3 {
                        sum[c] += p[c] as u32;
                    }
                    n += 1;
                }
            }
            let px = out.get_pixel_mut(x, y);
            for (dst, total) in px.0.iter_mut().zip(sum) {
                *dst = ((total + n / 2) / n) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn noise_has_the_requested_spread() {
        let img = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
        let noisy = add_gaussian_noise(&img, 10.0, &mut StdRng::seed_from_u64(0));
        let n = noisy.len() as f32;
        let mean = noisy.iter().map(|&v| v as f32).sum::<f32>() / n;
        let var = noisy
            .iter()
            .map(|&v| (v as f32 - mean).powi(2))
            .sum::<f32>()
            / n;
        assert!((mean - 128.0).abs() < 0.5, "{mean}");
        assert!((var.sqrt() - 10.0).abs() < 0.5, "{}", var.sqrt());
    }

    #[test]
    fn blur_preserves_flat_images_and_softens_edges() {
        let flat = RgbImage::from_pixel(8, 8, Rgb([10, 20, 30]));
        assert_eq!(box_blur3(&flat), flat);
        let mut edge = RgbImage::new(8, 8);
        for y in 0..8 {
            for x in 4..8 {
                edge.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        let b = box_blur3(&edge);
        assert_eq!(b.get_pixel(3, 4).0, [85, 85, 85]);
        assert_eq!(b.get_pixel(4, 4).0, [170, 170, 170]);
    }
}
