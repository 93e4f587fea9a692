//! Oracle accuracy over every attribute combination, both backgrounds and several
//! resolutions, on clean and degraded renders. Run with `--nocapture` to see the table.

use rand::SeedableRng;
use rand::rngs::StdRng;
use unclip_shapes::perturb::{add_gaussian_noise, box_blur3};
use unclip_shapes::{Attributes, Background, Scene, oracle};

#[derive(Clone, Copy, Debug)]
enum Condition {
    Clean,
    Noise,
    Blur,
    NoiseBlur,
}

#[derive(Default, Debug)]
struct Tally {
    total: usize,
    correct: usize,
    unreadable: usize,
    shape: usize,
    colour: usize,
    size: usize,
    position: usize,
}

impl Tally {
    fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total as f64
    }
}

/// Per combination and background: the unjittered scene plus `jittered` random ones.
fn evaluate(side: u32, condition: Condition, jittered: usize, seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = Tally::default();
    for a in Attributes::all() {
        for bg in Background::all() {
            let mut scenes = vec![Scene::new(a, bg)];
            for _ in 0..jittered {
                scenes.push(Scene::random_with_background(a, bg, &mut rng));
            }
            for scene in scenes {
                let img = scene.render(side);
                let img = match condition {
                    Condition::Clean => img,
                    Condition::Noise => add_gaussian_noise(&img, 10.0, &mut rng),
                    Condition::Blur => box_blur3(&img),
                    Condition::NoiseBlur => box_blur3(&add_gaussian_noise(&img, 10.0, &mut rng)),
                };
                t.total += 1;
                match oracle::read(&img) {
                    Err(_) => t.unreadable += 1,
                    Ok(r) => {
                        let s = unclip_shapes::Score::compare(&r.attributes, &a);
                        if s.all() {
                            t.correct += 1;
                        }
                        t.shape += !s.shape as usize;
                        t.colour += !s.colour as usize;
                        t.size += !s.size as usize;
                        t.position += !s.position as usize;
                    }
                }
            }
        }
    }
    println!(
        "side {side:>3} {condition:<9?}: {}/{} = {:.2}% (wrong: shape {}, colour {}, size {}, position {}; unreadable {})",
        t.correct,
        t.total,
        100.0 * t.accuracy(),
        t.shape,
        t.colour,
        t.size,
        t.position,
        t.unreadable
    );
    t
}

#[test]
fn clean_renders_are_read_perfectly_at_32_and_64_px() {
    for side in [32, 64] {
        let t = evaluate(side, Condition::Clean, 2, side as u64);
        assert_eq!(t.correct, t.total, "{side} px: {t:?}");
    }
}

#[test]
fn clean_renders_at_16_px_report() {
    let t = evaluate(16, Condition::Clean, 2, 16);
    // Measured 100%; required only >= 95%: a small shape is about 3 px wide at 16 px.
    assert!(t.accuracy() >= 0.95, "{t:?}");
}

#[test]
fn clean_renders_at_high_resolution() {
    let t = evaluate(128, Condition::Clean, 0, 128);
    assert_eq!(t.correct, t.total, "{t:?}");
}

#[test]
fn degraded_renders_are_read_at_least_98_percent() {
    for side in [32, 64] {
        for cond in [Condition::Noise, Condition::Blur, Condition::NoiseBlur] {
            let t = evaluate(side, cond, 2, 1000 + side as u64);
            assert!(t.accuracy() >= 0.98, "{side} px {cond:?}: {t:?}");
        }
    }
}

#[test]
fn degraded_renders_at_16_px_report() {
    // Measured about 98% (noise) and 83% (blur, noise + blur): a 3x3 blur smears a 3 px
    // shape into a blob, so the shape of small ones is often misread; colour, size and
    // position stay right.
    for (cond, min) in [
        (Condition::Noise, 0.95),
        (Condition::Blur, 0.75),
        (Condition::NoiseBlur, 0.75),
    ] {
        let t = evaluate(16, cond, 2, 2016);
        assert!(t.accuracy() >= min, "16 px {cond:?}: {t:?}");
        assert_eq!(
            t.colour + t.position + t.unreadable,
            0,
            "16 px {cond:?}: {t:?}"
        );
    }
}

#[test]
fn blank_and_odd_images_are_rejected() {
    let blank = image::RgbImage::from_pixel(32, 32, image::Rgb([255, 255, 255]));
    assert_eq!(oracle::read(&blank), Err(oracle::OracleError::NoForeground));
    let noisy_blank = add_gaussian_noise(&blank, 10.0, &mut StdRng::seed_from_u64(0));
    assert_eq!(
        oracle::read(&noisy_blank),
        Err(oracle::OracleError::NoForeground)
    );
    let wide = image::RgbImage::new(32, 16);
    assert!(matches!(
        oracle::read(&wide),
        Err(oracle::OracleError::BadDimensions { .. })
    ));
    assert!(!oracle::score(&blank, &Attributes::from_index(0).unwrap()).all());
}
