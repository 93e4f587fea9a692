//! Captions: several templates with synonyms and word orders, and a parser that reads every
//! one of them back.
//!
//! | index | template | example |
//! |---|---|---|
//! | 0 (canonical) | `a {large/small} {colour} {shape} in the {position}` | `a large red circle in the top left` |
//! | 1 | `{position-hyphen}: {big/small} {colour} {shape}` | `top-left: big red circle` |
//! | 2 | `{colour} {shape}, {small/large}, {position}` | `red circle, small, bottom right` |
//! | 3 | `a {big/tiny} {colour} {shape} at the {position}` | `a tiny blue square at the top` |
//! | 4 | `there is a {large/little} {colour} {shape} in the {position-hyphen} of the image` | `there is a little green triangle in the bottom-left of the image` |
//! | 5 | `the {shape} in the {position} is {colour} and {big/small}` | `the circle in the center is yellow and big` |
//! | 6 | `{position-hyphen} {huge/tiny} {colour} {shape}` | `bottom-right tiny purple square` |
//! | 7 | `{colour} {shape} ({large/little}) in the {position, "centre" spelling}` | `orange triangle (little) in the centre` |
//!
//! Each template uses fixed words, so [`caption`] is deterministic; the synonyms vary across
//! templates.

use rand::{Rng, RngExt};

use crate::attributes::{Attributes, Colour, Position, Shape, Size};

/// Number of caption templates (`0..NUM_TEMPLATES` are valid template indices).
pub const NUM_TEMPLATES: usize = 8;

/// Index of the canonical template, `"a {size} {colour} {shape} in the {position}"`.
pub const CANONICAL_TEMPLATE: usize = 0;

/// Caption of `attrs` with template `template_index` (taken modulo [`NUM_TEMPLATES`]).
///
/// ```
/// use unclip_shapes::{caption, parse_caption, Attributes, Colour, Position, Shape, Size};
///
/// let a = Attributes::new(Shape::Circle, Colour::Red, Size::Large, Position::TopLeft);
/// assert_eq!(caption(&a, 0), "a large red circle in the top left");
/// assert_eq!(caption(&a, 1), "top-left: big red circle");
/// assert_eq!(parse_caption(&caption(&a, 5)), Some(a));
/// ```
pub fn caption(attrs: &Attributes, template_index: usize) -> String {
    let shape = attrs.shape.name();
    let colour = attrs.colour.name();
    let pos = attrs.position.name();
    let hyph = attrs.position.hyphenated();
    let size = |small: &str, large: &str| -> String {
        match attrs.size {
            Size::Small => small.to_string(),
            Size::Large => large.to_string(),
        }
    };
    match template_index % NUM_TEMPLATES {
        0 => format!("a {} {colour} {shape} in the {pos}", size("small", "large")),
        1 => format!("{hyph}: {} {colour} {shape}", size("small", "big")),
        2 => format!("{colour} {shape}, {}, {pos}", size("small", "large")),
        3 => format!("a {} {colour} {shape} at the {pos}", size("tiny", "big")),
        4 => format!(
            "there is a {} {colour} {shape} in the {hyph} of the image",
            size("little", "large")
        ),
        5 => format!(
            "the {shape} in the {pos} is {colour} and {}",
            size("small", "big")
        ),
        6 => format!("{hyph} {} {colour} {shape}", size("tiny", "huge")),
        _ => {
            let pos = if attrs.position == Position::Center {
                "centre"
            } else {
                pos
            };
            format!(
                "{colour} {shape} ({}) in the {pos}",
                size("little", "large")
            )
        }
    }
}

/// Caption of `attrs` with a template drawn uniformly from `0..NUM_TEMPLATES`.
pub fn random_caption<R: Rng + ?Sized>(attrs: &Attributes, rng: &mut R) -> String {
    caption(attrs, rng.random_range(0..NUM_TEMPLATES))
}

fn shape_word(w: &str) -> Option<Shape> {
    Some(match w {
        "circle" | "disc" | "disk" | "dot" => Shape::Circle,
        "square" | "box" => Shape::Square,
        "triangle" => Shape::Triangle,
        _ => return None,
    })
}

fn colour_word(w: &str) -> Option<Colour> {
    Some(match w {
        "red" => Colour::Red,
        "orange" => Colour::Orange,
        "yellow" => Colour::Yellow,
        "green" => Colour::Green,
        "blue" => Colour::Blue,
        "purple" | "violet" => Colour::Purple,
        _ => return None,
    })
}

fn size_word(w: &str) -> Option<Size> {
    Some(match w {
        "small" | "little" | "tiny" => Size::Small,
        "large" | "big" | "huge" => Size::Large,
        _ => return None,
    })
}

/// Keeps `value` if `slot` is empty or already holds the same value; `false` on conflict.
fn set_once<T: PartialEq>(slot: &mut Option<T>, value: T) -> bool {
    match slot {
        Some(v) if *v != value => false,
        _ => {
            *slot = Some(value);
            true
        }
    }
}

/// Reads the four attributes from a caption of any template (and light paraphrases of
/// them): case, punctuation, hyphens and word order do not matter; size synonyms
/// small/little/tiny and large/big/huge, position words top/upper, bottom/lower, left,
/// right, center/centre/middle are understood.
///
/// Returns `None` when an attribute is missing or mentioned with two conflicting values.
pub fn parse_caption(text: &str) -> Option<Attributes> {
    let norm: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' })
        .collect();
    let mut shape = None;
    let mut colour = None;
    let mut size = None;
    // Vertical: 0 top, 2 bottom; horizontal: 0 left, 2 right.
    let mut vertical: Option<usize> = None;
    let mut horizontal: Option<usize> = None;
    let mut center = false;
    for w in norm.split_whitespace() {
        let ok = if let Some(s) = shape_word(w) {
            set_once(&mut shape, s)
        } else if let Some(c) = colour_word(w) {
            set_once(&mut colour, c)
        } else if let Some(z) = size_word(w) {
            set_once(&mut size, z)
        } else {
            match w {
                "top" | "upper" => set_once(&mut vertical, 0),
                "bottom" | "lower" => set_once(&mut vertical, 2),
                "left" => set_once(&mut horizontal, 0),
                "right" => set_once(&mut horizontal, 2),
                "center" | "centre" | "middle" | "central" | "centered" | "centred" => {
                    center = true;
                    true
                }
                _ => true,
            }
        };
        if !ok {
            return None;
        }
    }
    if vertical.is_none() && horizontal.is_none() && !center {
        return None;
    }
    let position = Position::from_cell(horizontal.unwrap_or(1), vertical.unwrap_or(1))?;
    Some(Attributes::new(shape?, colour?, size?, position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn examples_from_the_spec() {
        let a = Attributes::new(Shape::Circle, Colour::Red, Size::Large, Position::TopLeft);
        assert_eq!(caption(&a, 0), "a large red circle in the top left");
        assert_eq!(caption(&a, 1), "top-left: big red circle");
        let b = Attributes::new(
            Shape::Circle,
            Colour::Red,
            Size::Small,
            Position::BottomRight,
        );
        assert_eq!(caption(&b, 2), "red circle, small, bottom right");
        let c = Attributes::new(Shape::Square, Colour::Blue, Size::Small, Position::Top);
        assert_eq!(caption(&c, 3), "a tiny blue square at the top");
        let d = Attributes::new(
            Shape::Triangle,
            Colour::Orange,
            Size::Small,
            Position::Center,
        );
        assert_eq!(caption(&d, 7), "orange triangle (little) in the centre");
        assert_eq!(caption(&d, 0), "a small orange triangle in the center");
    }

    #[test]
    fn every_combination_and_template_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for a in Attributes::all() {
            for t in 0..NUM_TEMPLATES {
                let text = caption(&a, t);
                assert_eq!(parse_caption(&text), Some(a), "template {t}: {text:?}");
                assert_eq!(parse_caption(&text.to_uppercase()), Some(a));
                assert!(seen.insert(text), "captions must be distinct");
            }
        }
    }

    #[test]
    fn parser_handles_paraphrases_and_rejects_incomplete_or_conflicting() {
        let a = Attributes::new(Shape::Square, Colour::Purple, Size::Large, Position::Left);
        assert_eq!(parse_caption("Big violet box, middle-left."), Some(a));
        assert_eq!(parse_caption("a large purple square on the left"), Some(a));
        assert_eq!(
            parse_caption("upper right: tiny green disc").map(|a| a.position),
            Some(Position::TopRight)
        );
        assert_eq!(parse_caption("a large red circle"), None); // no position
        assert_eq!(parse_caption("a red circle in the top left"), None); // no size
        assert_eq!(parse_caption("a large red blue circle at the top"), None);
        assert_eq!(parse_caption("a large red circle at the top bottom"), None);
        assert_eq!(parse_caption(""), None);
    }

    #[test]
    fn random_caption_uses_several_templates() {
        let a = Attributes::new(Shape::Circle, Colour::Green, Size::Small, Position::Bottom);
        let mut rng = StdRng::seed_from_u64(1);
        let distinct: std::collections::HashSet<_> =
            (0..200).map(|_| random_caption(&a, &mut rng)).collect();
        assert_eq!(distinct.len(), NUM_TEMPLATES);
    }
}
