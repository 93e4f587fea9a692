//! Scenes and their resolution-independent, antialiased rendering.

use image::{Rgb, RgbImage};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::attributes::{Attributes, Background, Colour, Position, Shape, Size};

/// Maximum relative size jitter: the extent is the nominal extent times a factor in
/// `[1 - SIZE_JITTER, 1 + SIZE_JITTER]`.
pub const SIZE_JITTER: f32 = 0.10;

/// Maximum offset (fraction of the image side, per axis) of the shape's centre from the
/// centre of its grid cell, before clamping into the image.
pub const POSITION_JITTER: f32 = 0.04;

/// Minimum gap (fraction of the side) kept between the shape's bounding box and the image
/// border.
pub const MARGIN: f32 = 0.02;

/// Supersampling factor per axis used by [`Scene::render`] (4x4 = 16 samples per pixel).
pub const SUPERSAMPLE: u32 = 4;

/// One image of the shapes world: a single flat-coloured shape on a flat background.
///
/// Geometry is given as fractions of the image side, so one scene renders consistently at
/// any resolution (the base model's 64 px and an upsampler's 256 px targets show the same
/// picture).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub position: Position,
    pub background: Background,
    /// Multiplier on [`Size::nominal_extent`], in `[1 - SIZE_JITTER, 1 + SIZE_JITTER]`
    /// for sampled scenes (1 = no jitter).
    pub scale_jitter: f32,
    /// Offset `(dx, dy)` of the shape's centre from its cell centre, as fractions of the
    /// side, each in `[-POSITION_JITTER, POSITION_JITTER]` for sampled scenes.
    pub offset: (f32, f32),
}

impl Scene {
    /// A scene without jitter: nominal size, centred in its cell.
    pub fn new(attributes: Attributes, background: Background) -> Scene {
        Scene {
            shape: attributes.shape,
            colour: attributes.colour,
            size: attributes.size,
            position: attributes.position,
            background,
            scale_jitter: 1.0,
            offset: (0.0, 0.0),
        }
    }

    /// A scene with the given attributes, a random background and random jitter.
    pub fn random<R: Rng + ?Sized>(attributes: Attributes, rng: &mut R) -> Scene {
        let background = if rng.random_bool(0.5) {
            Background::Black
        } else {
            Background::White
        };
        Scene::random_with_background(attributes, background, rng)
    }

    /// A scene with the given attributes and background and random jitter.
    pub fn random_with_background<R: Rng + ?Sized>(
        attributes: Attributes,
        background: Background,
        rng: &mut R,
    ) -> Scene {
        let scale_jitter = rng.random_range(1.0 - SIZE_JITTER..=1.0 + SIZE_JITTER);
        let dx = rng.random_range(-POSITION_JITTER..=POSITION_JITTER);
        let dy = rng.random_range(-POSITION_JITTER..=POSITION_JITTER);
        Scene {
            scale_jitter,
            offset: (dx, dy),
            ..Scene::new(attributes, background)
        }
    }

    /// The four captioned attributes of this scene.
    pub fn attributes(&self) -> Attributes {
        Attributes::new(self.shape, self.colour, self.size, self.position)
    }

    /// Side of the shape's (square) bounding box, as a fraction of the image side.
    pub fn extent(&self) -> f32 {
        self.size.nominal_extent() * self.scale_jitter
    }

    /// The shape's centre `(x, y)` as fractions of the image side (y down): the cell centre
    /// plus [`Scene::offset`], clamped so the whole shape stays [`MARGIN`] inside the image.
    ///
    /// The centre is the shape's area centroid; for the triangle this lies a third of the
    /// height above the base.
    pub fn center(&self) -> (f32, f32) {
        let s = self.extent();
        let (cx, cy) = self.position.cell_center();
        let (x0, x1, y0, y1) = bbox_offsets(self.shape, s);
        let x = (cx + self.offset.0).clamp(MARGIN - x0, 1.0 - MARGIN - x1);
        let y = (cy + self.offset.1).clamp(MARGIN - y0, 1.0 - MARGIN - y1);
        (x, y)
    }

    /// Bounding box `(left, top, right, bottom)` of the shape, fractions of the side.
    pub fn bounding_box(&self) -> (f32, f32, f32, f32) {
        let (cx, cy) = self.center();
        let (x0, x1, y0, y1) = bbox_offsets(self.shape, self.extent());
        (cx + x0, cy + y0, cx + x1, cy + y1)
    }

    /// Renders the scene as a `side` x `side` image with [`SUPERSAMPLE`]² samples per pixel.
    ///
    /// ```
    /// use unclip_shapes::{Attributes, Background, Colour, Position, Scene, Shape, Size};
    ///
    /// let attrs = Attributes::new(Shape::Circle, Colour::Red, Size::Large, Position::TopLeft);
    /// let scene = Scene::new(attrs, Background::Black);
    /// let small = scene.render(64);
    /// let big = scene.render(256); // same scene, 4x the resolution
    /// assert_eq!(small.dimensions(), (64, 64));
    /// assert_eq!(big.get_pixel(64, 64).0, [220, 40, 40]); // inside the circle
    /// assert_eq!(big.get_pixel(255, 255).0, [0, 0, 0]); // background
    /// ```
    pub fn render(&self, side: u32) -> RgbImage {
        let bg = self.background.rgb();
        let fg = self.colour.rgb();
        let mut img = RgbImage::from_pixel(side, side, Rgb(bg));
        let cov = coverage(self.shape, self.center(), self.extent(), side, None);
        for (i, px) in img.pixels_mut().enumerate() {
            let a = cov[i];
            if a > 0.0 {
                for c in 0..3 {
                    let v = bg[c] as f32 * (1.0 - a) + fg[c] as f32 * a;
                    px.0[c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        img
    }

    /// [`Scene::render`] as planar `[3, side, side]` floats in `[-1, 1]`
    /// (see [`planar_signed`]).
    pub fn render_planar_signed(&self, side: u32) -> Vec<f32> {
        planar_signed(&self.render(side))
    }

    /// [`Scene::render`] as planar `[3, side, side]` floats in `[0, 1]`
    /// (see [`planar_unit`]).
    pub fn render_planar_unit(&self, side: u32) -> Vec<f32> {
        planar_unit(&self.render(side))
    }
}

/// Offsets of the bounding box from the centroid: `(left, right, top, bottom)`.
fn bbox_offsets(shape: Shape, s: f32) -> (f32, f32, f32, f32) {
    let h = s / 2.0;
    match shape {
        Shape::Circle | Shape::Square => (-h, h, -h, h),
        Shape::Triangle => (-h, h, -2.0 * s / 3.0, s / 3.0),
    }
}

/// Whether the point `(x, y)` (fractions of the side) lies inside the shape with centroid
/// `center` and bounding-box side `s`.
fn inside(shape: Shape, center: (f32, f32), s: f32, x: f32, y: f32) -> bool {
    let dx = x - center.0;
    let dy = y - center.1;
    let h = s / 2.0;
    match shape {
        Shape::Circle => dx * dx + dy * dy <= h * h,
        Shape::Square => dx.abs() <= h && dy.abs() <= h,
        Shape::Triangle => {
            let top = -2.0 * s / 3.0;
            let bottom = s / 3.0;
            dy >= top && dy <= bottom && dx.abs() <= 0.5 * (dy - top)
        }
    }
}

/// Row-major fractional coverage (`0..=1`) of each pixel of a `side` x `side` image by the
/// shape, from [`SUPERSAMPLE`]² samples per pixel. `region`, if given, limits the pixels
/// evaluated to `(x0, y0, x1, y1)` (inclusive-exclusive); others are 0.
pub(crate) fn coverage(
    shape: Shape,
    center: (f32, f32),
    s: f32,
    side: u32,
    region: Option<(u32, u32, u32, u32)>,
) -> Vec<f32> {
    let n = side as usize;
    let mut out = vec![0.0f32; n * n];
    let (x0, x1, y0, y1) = bbox_offsets(shape, s);
    let sidef = side as f32;
    // Pixels touched by the bounding box.
    let px0 = (((center.0 + x0) * sidef).floor().max(0.0)) as u32;
    let px1 = (((center.0 + x1) * sidef).ceil().min(sidef)) as u32;
    let py0 = (((center.1 + y0) * sidef).floor().max(0.0)) as u32;
    let py1 = (((center.1 + y1) * sidef).ceil().min(sidef)) as u32;
    let (rx0, ry0, rx1, ry1) = region.unwrap_or((0, 0, side, side));
    let (px0, py0) = (px0.max(rx0), py0.max(ry0));
    let (px1, py1) = (px1.min(rx1), py1.min(ry1));
    let ss = SUPERSAMPLE;
    let inv = 1.0 / (ss * ss) as f32;
    for py in py0..py1 {
        for px in px0..px1 {
            let mut hits = 0u32;
            for sy in 0..ss {
                let y = (py as f32 + (sy as f32 + 0.5) / ss as f32) / sidef;
                for sx in 0..ss {
                    let x = (px as f32 + (sx as f32 + 0.5) / ss as f32) / sidef;
                    if inside(shape, center, s, x, y) {
                        hits += 1;
                    }
                }
            }
            out[py as usize * n + px as usize] = hits as f32 * inv;
        }
    }
    out
}

/// Planar `[3, H, W]` floats in `[-1, 1]` (`v / 127.5 - 1`), the diffusion convention.
pub fn planar_signed(img: &RgbImage) -> Vec<f32> {
    planar_map(img, |v| v as f32 / 127.5 - 1.0)
}

/// Planar `[3, H, W]` floats in `[0, 1]` (`v / 255`).
pub fn planar_unit(img: &RgbImage) -> Vec<f32> {
    planar_map(img, |v| v as f32 / 255.0)
}

fn planar_map(img: &RgbImage, f: impl Fn(u8) -> f32) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f(px.0[c]);
        }
    }
    out
}

/// Inverse of [`planar_signed`]: planar `[3, height, width]` floats in `[-1, 1]` (values
/// outside are clamped) to an image. Panics if `data.len() != 3 * width * height`.
pub fn from_planar_signed(data: &[f32], width: u32, height: u32) -> RgbImage {
    from_planar_map(data, width, height, |v| (v + 1.0) * 127.5)
}

/// Inverse of [`planar_unit`]: planar `[3, height, width]` floats in `[0, 1]` (values
/// outside are clamped) to an image. Panics if `data.len() != 3 * width * height`.
pub fn from_planar_unit(data: &[f32], width: u32, height: u32) -> RgbImage {
    from_planar_map(data, width, height, |v| v * 255.0)
}

fn from_planar_map(data: &[f32], width: u32, height: u32, f: impl Fn(f32) -> f32) -> RgbImage {
    let plane = (width * height) as usize;
    assert_eq!(
        data.len(),
        3 * plane,
        "planar data must hold 3 * {width} * {height} values"
    );
    let mut img = RgbImage::new(width, height);
    for (i, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            let v = f(data[c * plane + i]);
            px.0[c] = if v.is_nan() {
                0
            } else {
                v.round().clamp(0.0, 255.0) as u8
            };
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn every_sampled_scene_stays_inside_its_cell_and_the_image() {
        let mut rng = StdRng::seed_from_u64(7);
        for a in Attributes::all() {
            for _ in 0..20 {
                let s = Scene::random(a, &mut rng);
                let (l, t, r, b) = s.bounding_box();
                assert!(l >= MARGIN - 1e-6 && t >= MARGIN - 1e-6, "{s:?}");
                assert!(
                    r <= 1.0 - MARGIN + 1e-6 && b <= 1.0 - MARGIN + 1e-6,
                    "{s:?}"
                );
                let (cx, cy) = s.center();
                let (col, row) = a.position.cell();
                assert_eq!((cx * 3.0) as usize, col, "{s:?}");
                assert_eq!((cy * 3.0) as usize, row, "{s:?}");
                assert!((0.9..=1.1).contains(&s.scale_jitter));
            }
        }
    }

    #[test]
    fn coverage_area_matches_geometry() {
        for shape in Shape::all() {
            let s = 0.36;
            let cov = coverage(shape, (0.5, 0.5), s, 128, None);
            let area: f32 = cov.iter().sum::<f32>() / (128.0 * 128.0);
            let expected = shape.fill_ratio() * s * s;
            assert!(
                (area - expected).abs() / expected < 0.01,
                "{shape:?}: {area} vs {expected}"
            );
        }
    }

    #[test]
    fn renders_at_any_resolution_with_antialiasing() {
        let a = Attributes::new(Shape::Circle, Colour::Blue, Size::Small, Position::Center);
        let scene = Scene::new(a, Background::White);
        for side in [16, 32, 64, 128, 256, 100] {
            let img = scene.render(side);
            assert_eq!(img.dimensions(), (side, side));
            assert_eq!(img.get_pixel(side / 2, side / 2).0, [40, 90, 220]);
            assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
        }
        // Antialiased edges: some pixels are strictly between foreground and background.
        let img = scene.render(64);
        let mixed = img
            .pixels()
            .filter(|p| p.0 != [255, 255, 255] && p.0 != [40, 90, 220])
            .count();
        assert!(mixed > 10);
    }

    #[test]
    fn triangle_is_upright() {
        let a = Attributes::new(
            Shape::Triangle,
            Colour::Green,
            Size::Large,
            Position::Center,
        );
        let img = Scene::new(a, Background::Black).render(64);
        let (l, t, r, b) = Scene::new(a, Background::Black).bounding_box();
        let row_width = |y: u32| {
            (0..64)
                .filter(|&x| img.get_pixel(x, y).0 == [40, 170, 70])
                .count()
        };
        let top = (t * 64.0) as u32 + 3;
        let bottom = (b * 64.0) as u32 - 2;
        assert!(row_width(top) < row_width(bottom) / 3);
        assert!(((r - l) - 0.36).abs() < 1e-6);
    }

    #[test]
    fn planar_helpers_round_trip() {
        let a = Attributes::new(Shape::Square, Colour::Purple, Size::Large, Position::Right);
        let img = Scene::new(a, Background::Black).render(32);
        let signed = planar_signed(&img);
        let unit = planar_unit(&img);
        assert_eq!(signed.len(), 3 * 32 * 32);
        assert!(signed.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(unit.iter().all(|v| (0.0..=1.0).contains(v)));
        // Channel-major: the green plane follows the whole red plane.
        let p = img.get_pixel(5, 7).0;
        assert_eq!(unit[32 * 32 + 7 * 32 + 5], p[1] as f32 / 255.0);
        assert_eq!(from_planar_signed(&signed, 32, 32), img);
        assert_eq!(from_planar_unit(&unit, 32, 32), img);
    }
}
