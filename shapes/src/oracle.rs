//! The oracle: reads shape, colour, size and position back from the pixels of an image
//! (no model), to score generated images against their prompts.
//!
//! # Method
//!
//! 1. **Background**: per-channel median of the one-pixel border.
//! 2. **Candidate foreground**: pixels further than [`CANDIDATE_DISTANCE`] (RGB, 0..255
//!    units) from the background; the largest 8-connected component is kept.
//! 3. **Colour**: mean of the component's "core" pixels (those at least 80% as far from the
//!    background as the furthest one); the palette colour `P` whose background-to-`P` line
//!    passes closest to that mean wins (so antialiased, background-tinted pixels of small
//!    shapes still read as the right hue).
//! 4. **Coverage**: each pixel's fraction `alpha` along the background-to-`P` line; the
//!    shape mask is the largest 8-connected component of `alpha > 0.5` (or half the peak
//!    `alpha` when nothing reaches 0.5, as for tiny blurred shapes); the soft area is
//!    the sum of `alpha` over the mask's bounding box grown by a couple of pixels (blur and
//!    zero-mean noise preserve it); the centroid is `alpha`-weighted.
//! 5. **Shape**: analysis by synthesis. For each shape, a template with the measured area
//!    and centroid is rendered (the renderer's own antialiasing) and compared with `alpha`
//!    (sum of squared differences, also against a 3x3-blurred template); the best fit wins.
//!    The fill ratio of the mask's bounding box (square ~1, circle ~0.785, triangle ~0.5) is
//!    reported in [`Measurements`].
//! 6. **Size**: the best template's bounding-box side, against [`Size::threshold_extent`].
//! 7. **Position**: the grid cell (thirds of the image) holding the centroid.
//!
//! ```
//! use unclip_shapes::{oracle, Attributes, Background, Colour, Position, Scene, Shape, Size};
//!
//! let attrs = Attributes::new(Shape::Triangle, Colour::Yellow, Size::Small, Position::Bottom);
//! let image = Scene::new(attrs, Background::White).render(64);
//! let reading = oracle::read(&image).unwrap();
//! assert_eq!(reading.attributes, attrs);
//! assert!(reading.confidence > 0.3);
//! assert!(oracle::score(&image, &attrs).all());
//! ```

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::attributes::{Attributes, Colour, Position, Shape, Size};
use crate::scene::coverage;

/// Minimum RGB distance (0..255 units) from the background for a pixel to count as
/// candidate foreground. Every palette colour is over 200 away from black and white.
pub const CANDIDATE_DISTANCE: f32 = 60.0;

/// Smallest image side the oracle accepts (it is reliable from 32 px; 16 px works for
/// large shapes).
pub const MIN_SIDE: u32 = 8;

/// Why the oracle could not read an image.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OracleError {
    #[error("image is {width}x{height}; the oracle needs a square image of side >= {MIN_SIDE}")]
    BadDimensions { width: u32, height: u32 },
    #[error("no foreground found: no pixel differs enough from the background")]
    NoForeground,
}

/// Per-attribute confidences in `[0, 1]` (0: on a decision boundary; 1: far from it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Confidences {
    /// `1 - best / second-best` template error.
    pub shape: f32,
    /// `1 - best / second-best` palette-line distance.
    pub colour: f32,
    /// Log-distance of the extent from the size threshold, relative to the nominal one.
    pub size: f32,
    /// Distance of the centroid from the nearest cell boundary, relative to half a cell.
    pub position: f32,
}

/// Raw measurements behind a [`Reading`] (fractions are of the image side or area).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// Estimated background, RGB 0..255.
    pub background: [f32; 3],
    /// Mean colour of the shape's core pixels, RGB 0..255.
    pub mean_colour: [f32; 3],
    /// Coverage-weighted centroid `(x, y)`, fractions of the side, y down.
    pub centroid: (f32, f32),
    /// Soft area of the shape as a fraction of the image area.
    pub area_fraction: f32,
    /// Bounding-box side of the best-fitting template, fraction of the side.
    pub extent: f32,
    /// Width and height of the shape mask's bounding box (`alpha > 0.5`), fractions of the
    /// side.
    pub mask_size: (f32, f32),
    /// Mask pixel count over its bounding-box area (square ~1, circle ~0.785,
    /// triangle ~0.5).
    pub fill_ratio: f32,
    /// Template fit errors (per unit area) for circle, square, triangle.
    pub shape_errors: [f32; 3],
}

/// What the oracle read from an image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub attributes: Attributes,
    /// Minimum of the per-attribute confidences.
    pub confidence: f32,
    pub confidences: Confidences,
    pub measurements: Measurements,
}

/// Which attributes of an image match the expected ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub shape: bool,
    pub colour: bool,
    pub size: bool,
    pub position: bool,
}

impl Score {
    /// Compares a reading with the expected attributes.
    pub fn compare(read: &Attributes, expected: &Attributes) -> Score {
        Score {
            shape: read.shape == expected.shape,
            colour: read.colour == expected.colour,
            size: read.size == expected.size,
            position: read.position == expected.position,
        }
    }

    /// Whether all four attributes match.
    pub fn all(&self) -> bool {
        self.shape && self.colour && self.size && self.position
    }

    /// Number of matching attributes, `0..=4`.
    pub fn count(&self) -> usize {
        [self.shape, self.colour, self.size, self.position]
            .iter()
            .filter(|b| **b)
            .count()
    }
}

/// Reads an image and scores it against `expected`; an unreadable image (no foreground)
/// scores all-false.
pub fn score(image: &RgbImage, expected: &Attributes) -> Score {
    match read(image) {
        Ok(r) => Score::compare(&r.attributes, expected),
        Err(_) => Score::default(),
    }
}

/// 8-connected components of `mask` (row-major, `side` x `side`); returns the pixel indices
/// of the largest one (empty if the mask is empty).
fn largest_component(mask: &[bool], side: usize) -> Vec<usize> {
    let mut label = vec![false; mask.len()];
    let mut best: Vec<usize> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] {
            continue;
        }
        let mut comp = Vec::new();
        label[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            comp.push(i);
            let (x, y) = ((i % side) as isize, (i / side) as isize);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= side as isize || ny >= side as isize {
                        continue;
                    }
                    let j = ny as usize * side + nx as usize;
                    if mask[j] && !label[j] {
                        label[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if comp.len() > best.len() {
            best = comp;
        }
    }
    best
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// 3x3 box blur of a row-major `side` x `side` map (edge pixels average their in-image
/// neighbours).
fn blur3(map: &[f32], side: usize) -> Vec<f32> {
    let mut out = vec![0.0; map.len()];
    for y in 0..side {
        for x in 0..side {
            let (mut sum, mut n) = (0.0, 0.0);
            for yy in y.saturating_sub(1)..(y + 2).min(side) {
                for xx in x.saturating_sub(1)..(x + 2).min(side) {
                    sum += map[yy * side + xx];
                    n += 1.0;
                }
            }
            out[y * side + x] = sum / n;
        }
    }
    out
}

/// Reads (shape, colour, size, position) from the pixels of a square image.
///
/// See the [module docs](self) for the method. Errors if the image is not square or smaller
/// than [`MIN_SIDE`], or if nothing stands out from the background.
pub fn read(image: &RgbImage) -> Result<Reading, OracleError> {
    let (w, h) = image.dimensions();
    if w != h || w < MIN_SIDE {
        return Err(OracleError::BadDimensions {
            width: w,
            height: h,
        });
    }
    let side = w as usize;
    let sidef = side as f32;
    let px: Vec<[f32; 3]> = image
        .pixels()
        .map(|p| [p.0[0] as f32, p.0[1] as f32, p.0[2] as f32])
        .collect();

    // 1. Background from the border.
    let border: Vec<usize> = (0..side * side)
        .filter(|&i| {
            let (x, y) = (i % side, i / side);
            x == 0 || y == 0 || x == side - 1 || y == side - 1
        })
        .collect();
    let mut bg = [0.0f32; 3];
    for (c, b) in bg.iter_mut().enumerate() {
        let mut vals: Vec<f32> = border.iter().map(|&i| px[i][c]).collect();
        *b = median(&mut vals);
    }

    // 2. Candidate foreground.
    let d: Vec<f32> = px.iter().map(|p| dist(*p, bg)).collect();
    let cand: Vec<bool> = d.iter().map(|&v| v > CANDIDATE_DISTANCE).collect();
    let comp = largest_component(&cand, side);
    if comp.is_empty() {
        return Err(OracleError::NoForeground);
    }

    // 3. Colour from the core pixels.
    let dmax = comp.iter().map(|&i| d[i]).fold(0.0f32, f32::max);
    let core: Vec<usize> = comp
        .iter()
        .copied()
        .filter(|&i| d[i] >= 0.8 * dmax)
        .collect();
    let mut mean = [0.0f32; 3];
    for &i in &core {
        for (c, m) in mean.iter_mut().enumerate() {
            *m += px[i][c];
        }
    }
    for m in mean.iter_mut() {
        *m /= core.len() as f32;
    }
    let rel = [mean[0] - bg[0], mean[1] - bg[1], mean[2] - bg[2]];
    let mut colour_fit: Vec<(f32, Colour)> = Colour::all()
        .into_iter()
        .map(|colour| {
            let p = colour.rgb();
            let v = [
                p[0] as f32 - bg[0],
                p[1] as f32 - bg[1],
                p[2] as f32 - bg[2],
            ];
            let vv = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).max(1.0);
            let a = ((rel[0] * v[0] + rel[1] * v[1] + rel[2] * v[2]) / vv).clamp(0.25, 1.3);
            let r = dist(rel, [a * v[0], a * v[1], a * v[2]]);
            (r, colour)
        })
        .collect();
    colour_fit.sort_by(|a, b| a.0.total_cmp(&b.0));
    let colour = colour_fit[0].1;
    let colour_conf = 1.0 - colour_fit[0].0 / colour_fit[1].0.max(1e-6);

    // 4. Coverage along the background-to-palette line.
    let p = colour.rgb();
    let v = [
        p[0] as f32 - bg[0],
        p[1] as f32 - bg[1],
        p[2] as f32 - bg[2],
    ];
    let vv = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).max(1.0);
    let alpha: Vec<f32> = px
        .iter()
        .map(|q| ((q[0] - bg[0]) * v[0] + (q[1] - bg[1]) * v[1] + (q[2] - bg[2]) * v[2]) / vv)
        .collect();
    // Half coverage, or half the peak for shapes so small or blurred that no pixel reaches
    // half coverage.
    let peak = comp.iter().map(|&i| alpha[i]).fold(0.0f32, f32::max);
    let level = (0.5 * peak).min(0.5);
    let mask: Vec<bool> = alpha.iter().map(|&a| a > level).collect();
    let shape_px = largest_component(&mask, side);
    if shape_px.is_empty() {
        return Err(OracleError::NoForeground);
    }
    let (mut bx0, mut by0, mut bx1, mut by1) = (side, side, 0usize, 0usize);
    for &i in &shape_px {
        let (x, y) = (i % side, i / side);
        bx0 = bx0.min(x);
        by0 = by0.min(y);
        bx1 = bx1.max(x);
        by1 = by1.max(y);
    }
    let (bw, bh) = (bx1 - bx0 + 1, by1 - by0 + 1);
    let fill_ratio = shape_px.len() as f32 / (bw * bh) as f32;
    let grow = (side / 32).max(2);
    let rx0 = bx0.saturating_sub(grow);
    let ry0 = by0.saturating_sub(grow);
    let rx1 = (bx1 + grow + 1).min(side);
    let ry1 = (by1 + grow + 1).min(side);
    let (mut area, mut wsum, mut sx, mut sy) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for y in ry0..ry1 {
        for x in rx0..rx1 {
            let a = alpha[y * side + x];
            area += a;
            let ac = a.clamp(0.0, 1.0);
            wsum += ac;
            sx += ac * (x as f32 + 0.5);
            sy += ac * (y as f32 + 0.5);
        }
    }
    let area = area.max(0.5 * shape_px.len() as f32);
    let centroid = (sx / wsum / sidef, sy / wsum / sidef);
    let area_fraction = area / (sidef * sidef);

    // 5. Shape by template fit.
    let target: Vec<f32> = alpha.iter().map(|a| a.clamp(0.0, 1.0)).collect();
    let mut errors = [0.0f32; 3];
    let mut extents = [0.0f32; 3];
    for shape in Shape::all() {
        let s = (area_fraction / shape.fill_ratio()).sqrt();
        extents[shape.index()] = s;
        let tpl = coverage(shape, centroid, s, side as u32, None);
        let tpl_blur = blur3(&tpl, side);
        // Compare over the mask's grown box united with the template's box.
        let (tx0, tx1) = (
            ((centroid.0 - 0.5 * s) * sidef).floor().max(0.0) as usize,
            ((centroid.0 + 0.5 * s) * sidef).ceil().min(sidef) as usize,
        );
        let (ty0, ty1) = (
            ((centroid.1 - 0.7 * s) * sidef).floor().max(0.0) as usize,
            ((centroid.1 + 0.5 * s) * sidef).ceil().min(sidef) as usize,
        );
        let (ex0, ey0) = (rx0.min(tx0), ry0.min(ty0));
        let (ex1, ey1) = (rx1.max(tx1 + 1).min(side), ry1.max(ty1 + 1).min(side));
        let (mut e_sharp, mut e_blur) = (0.0f32, 0.0f32);
        for y in ey0..ey1 {
            for x in ex0..ex1 {
                let i = y * side + x;
                e_sharp += (target[i] - tpl[i]).powi(2);
                e_blur += (target[i] - tpl_blur[i]).powi(2);
            }
        }
        errors[shape.index()] = e_sharp.min(e_blur) / area.max(1.0);
    }
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| errors[a].total_cmp(&errors[b]));
    let shape = Shape::from_index(order[0]).expect("shape index");
    let shape_conf = 1.0 - errors[order[0]] / errors[order[1]].max(1e-9);

    // 6. Size.
    let extent = extents[shape.index()];
    let thr = Size::threshold_extent();
    let size = if extent > thr {
        Size::Large
    } else {
        Size::Small
    };
    let size_conf =
        ((extent / thr).ln().abs() / (Size::Large.nominal_extent() / thr).ln()).clamp(0.0, 1.0);

    // 7. Position.
    let cell = |f: f32| ((f * 3.0).floor().clamp(0.0, 2.0)) as usize;
    let (col, row) = (cell(centroid.0), cell(centroid.1));
    let position = Position::from_cell(col, row).expect("cell in range");
    let boundary_gap = |f: f32| {
        let third = 1.0 / 3.0;
        (f - third).abs().min((f - 2.0 * third).abs())
    };
    let position_conf =
        (boundary_gap(centroid.0).min(boundary_gap(centroid.1)) / (1.0 / 6.0)).clamp(0.0, 1.0);

    let confidences = Confidences {
        shape: shape_conf.clamp(0.0, 1.0),
        colour: colour_conf.clamp(0.0, 1.0),
        size: size_conf,
        position: position_conf,
    };
    Ok(Reading {
        attributes: Attributes::new(shape, colour, size, position),
        confidence: confidences
            .shape
            .min(confidences.colour)
            .min(confidences.size)
            .min(confidences.position),
        confidences,
        measurements: Measurements {
            background: bg,
            mean_colour: mean,
            centroid,
            area_fraction,
            extent,
            mask_size: (bw as f32 / sidef, bh as f32 / sidef),
            fill_ratio,
            shape_errors: errors,
        },
    })
}
