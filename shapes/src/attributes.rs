//! The attribute vocabulary of the shapes world: shape, colour, size, position (the four
//! attributes captions describe and the oracle reads) and background (a nuisance attribute).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ShapesError;

/// The shape drawn in a scene. Triangles are upright (apex up) and isosceles, with base
/// width equal to their height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    /// Number of shapes.
    pub const COUNT: usize = 3;

    /// Every shape, in index order.
    pub fn all() -> [Shape; 3] {
        [Shape::Circle, Shape::Square, Shape::Triangle]
    }

    /// Canonical caption word: `"circle"`, `"square"`, `"triangle"`.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    /// Position in [`Shape::all`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Inverse of [`Shape::index`].
    pub fn from_index(index: usize) -> Option<Shape> {
        Shape::all().get(index).copied()
    }

    /// Area of the shape divided by the area of its bounding box
    /// (square 1, circle pi/4, triangle 1/2).
    pub fn fill_ratio(self) -> f32 {
        match self {
            Shape::Circle => std::f32::consts::FRAC_PI_4,
            Shape::Square => 1.0,
            Shape::Triangle => 0.5,
        }
    }
}

/// The flat colour a shape is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
}

impl Colour {
    /// Number of colours.
    pub const COUNT: usize = 6;

    /// Every colour, in index order.
    pub fn all() -> [Colour; 6] {
        [
            Colour::Red,
            Colour::Orange,
            Colour::Yellow,
            Colour::Green,
            Colour::Blue,
            Colour::Purple,
        ]
    }

    /// Canonical caption word, e.g. `"red"`.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
        }
    }

    /// Position in [`Colour::all`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Inverse of [`Colour::index`].
    pub fn from_index(index: usize) -> Option<Colour> {
        Colour::all().get(index).copied()
    }

    /// The palette value, sRGB bytes.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Orange => [240, 130, 30],
            Colour::Yellow => [235, 205, 40],
            Colour::Green => [40, 170, 70],
            Colour::Blue => [40, 90, 220],
            Colour::Purple => [140, 60, 190],
        }
    }
}

/// Size class of a shape. The shape's bounding box side is [`Size::nominal_extent`] of the
/// image side, times a small jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    /// Number of sizes.
    pub const COUNT: usize = 2;

    /// Every size, in index order.
    pub fn all() -> [Size; 2] {
        [Size::Small, Size::Large]
    }

    /// Canonical caption word: `"small"` or `"large"`.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// Position in [`Size::all`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Inverse of [`Size::index`].
    pub fn from_index(index: usize) -> Option<Size> {
        Size::all().get(index).copied()
    }

    /// Bounding-box side of the shape as a fraction of the image side, before jitter:
    /// 0.18 (small) or 0.36 (large).
    pub fn nominal_extent(self) -> f32 {
        match self {
            Size::Small => 0.18,
            Size::Large => 0.36,
        }
    }

    /// The extent (fraction of the side) separating small from large: the geometric mean
    /// of the two nominal extents, about 0.255.
    pub fn threshold_extent() -> f32 {
        (Size::Small.nominal_extent() * Size::Large.nominal_extent()).sqrt()
    }
}

/// A cell of the 3x3 grid the shape is placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    TopLeft,
    Top,
    TopRight,
    Left,
    Center,
    Right,
    BottomLeft,
    Bottom,
    BottomRight,
}

impl Position {
    /// Number of positions.
    pub const COUNT: usize = 9;

    /// Every position, in index (row-major) order.
    pub fn all() -> [Position; 9] {
        [
            Position::TopLeft,
            Position::Top,
            Position::TopRight,
            Position::Left,
            Position::Center,
            Position::Right,
            Position::BottomLeft,
            Position::Bottom,
            Position::BottomRight,
        ]
    }

    /// Canonical caption words, e.g. `"top left"`, `"center"`.
    pub fn name(self) -> &'static str {
        match self {
            Position::TopLeft => "top left",
            Position::Top => "top",
            Position::TopRight => "top right",
            Position::Left => "left",
            Position::Center => "center",
            Position::Right => "right",
            Position::BottomLeft => "bottom left",
            Position::Bottom => "bottom",
            Position::BottomRight => "bottom right",
        }
    }

    /// Hyphenated variant, e.g. `"top-left"` (single words are unchanged).
    pub fn hyphenated(self) -> &'static str {
        match self {
            Position::TopLeft => "top-left",
            Position::TopRight => "top-right",
            Position::BottomLeft => "bottom-left",
            Position::BottomRight => "bottom-right",
            other => other.name(),
        }
    }

    /// Position in [`Position::all`] (`row * 3 + column`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Inverse of [`Position::index`].
    pub fn from_index(index: usize) -> Option<Position> {
        Position::all().get(index).copied()
    }

    /// `(column, row)` of the cell, each in `0..3`, row 0 at the top.
    pub fn cell(self) -> (usize, usize) {
        (self.index() % 3, self.index() / 3)
    }

    /// The position of grid cell `(column, row)`; `None` outside `0..3`.
    pub fn from_cell(column: usize, row: usize) -> Option<Position> {
        if column < 3 && row < 3 {
            Position::from_index(row * 3 + column)
        } else {
            None
        }
    }

    /// Centre of the cell as fractions of the image side, `(x, y)`, y down.
    pub fn cell_center(self) -> (f32, f32) {
        let (c, r) = self.cell();
        ((c as f32 + 0.5) / 3.0, (r as f32 + 0.5) / 3.0)
    }
}

/// Background colour of a scene (a nuisance attribute: captions do not mention it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    Black,
    White,
}

impl Background {
    /// Every background.
    pub fn all() -> [Background; 2] {
        [Background::Black, Background::White]
    }

    /// `"black"` or `"white"`.
    pub fn name(self) -> &'static str {
        match self {
            Background::Black => "black",
            Background::White => "white",
        }
    }

    /// The background value, sRGB bytes.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::Black => [0, 0, 0],
            Background::White => [255, 255, 255],
        }
    }
}

macro_rules! named_enum_impls {
    ($($ty:ident => $kind:literal),* $(,)?) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = ShapesError;

            /// Parses the canonical name (case-insensitive; hyphens, underscores and spaces
            /// are interchangeable).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let norm: String = s
                    .trim()
                    .to_ascii_lowercase()
                    .chars()
                    .map(|c| if c == '-' || c == '_' { ' ' } else { c })
                    .collect();
                let norm = norm.split_whitespace().collect::<Vec<_>>().join(" ");
                $ty::all()
                    .into_iter()
                    .find(|v| v.name() == norm)
                    .ok_or_else(|| ShapesError::UnknownName { kind: $kind, name: s.to_string() })
            }
        }
    )*};
}

named_enum_impls!(
    Shape => "shape",
    Colour => "colour",
    Size => "size",
    Position => "position",
    Background => "background",
);

/// The four attributes a caption describes and the oracle reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attributes {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub position: Position,
}

impl Attributes {
    /// Number of attribute combinations: 3 * 6 * 2 * 9 = 324.
    pub const COUNT: usize = Shape::COUNT * Colour::COUNT * Size::COUNT * Position::COUNT;

    /// Bundles the four attributes.
    pub const fn new(shape: Shape, colour: Colour, size: Size, position: Position) -> Self {
        Attributes {
            shape,
            colour,
            size,
            position,
        }
    }

    /// Every combination, in [`Attributes::index`] order.
    pub fn all() -> Vec<Attributes> {
        (0..Self::COUNT)
            .filter_map(Attributes::from_index)
            .collect()
    }

    /// Combination index in `0..324`:
    /// `((shape * 6 + colour) * 2 + size) * 9 + position`.
    pub fn index(&self) -> usize {
        ((self.shape.index() * Colour::COUNT + self.colour.index()) * Size::COUNT
            + self.size.index())
            * Position::COUNT
            + self.position.index()
    }

    /// Inverse of [`Attributes::index`]; `None` for `index >= 324`.
    pub fn from_index(index: usize) -> Option<Attributes> {
        if index >= Self::COUNT {
            return None;
        }
        let position = index % Position::COUNT;
        let rest = index / Position::COUNT;
        let size = rest % Size::COUNT;
        let rest = rest / Size::COUNT;
        let colour = rest % Colour::COUNT;
        let shape = rest / Colour::COUNT;
        Some(Attributes {
            shape: Shape::from_index(shape)?,
            colour: Colour::from_index(colour)?,
            size: Size::from_index(size)?,
            position: Position::from_index(position)?,
        })
    }

    /// The canonical caption, `"a {size} {colour} {shape} in the {position}"`.
    pub fn canonical_caption(&self) -> String {
        crate::caption::caption(self, 0)
    }
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical_caption())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_is_dense() {
        let all = Attributes::all();
        assert_eq!(all.len(), 324);
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.index(), i);
            assert_eq!(Attributes::from_index(i), Some(*a));
        }
        assert_eq!(Attributes::from_index(324), None);
    }

    #[test]
    fn names_parse_back() {
        for s in Shape::all() {
            assert_eq!(s.name().parse::<Shape>().unwrap(), s);
        }
        for c in Colour::all() {
            assert_eq!(c.name().parse::<Colour>().unwrap(), c);
        }
        for z in Size::all() {
            assert_eq!(z.name().parse::<Size>().unwrap(), z);
        }
        for p in Position::all() {
            assert_eq!(p.name().parse::<Position>().unwrap(), p);
            assert_eq!(p.hyphenated().parse::<Position>().unwrap(), p);
            let (c, r) = p.cell();
            assert_eq!(Position::from_cell(c, r), Some(p));
        }
        for b in Background::all() {
            assert_eq!(b.name().parse::<Background>().unwrap(), b);
        }
        assert!("hexagon".parse::<Shape>().is_err());
        assert_eq!(Position::from_cell(3, 0), None);
    }

    #[test]
    fn serde_uses_snake_case_names() {
        let a = Attributes::new(Shape::Circle, Colour::Red, Size::Large, Position::TopLeft);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"shape":"circle","colour":"red","size":"large","position":"top_left"}"#
        );
        assert_eq!(serde_json::from_str::<Attributes>(&json).unwrap(), a);
    }
}
