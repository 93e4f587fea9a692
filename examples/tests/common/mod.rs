//! What the example tests share: two scenes of the shapes world, rendered as inputs.

use image::RgbImage;
use unclip_shapes::{Attributes, Background, Colour, Position, Scene, Shape, Size};

/// "a large red circle in the top left"
pub const RED_CIRCLE: Attributes =
    Attributes::new(Shape::Circle, Colour::Red, Size::Large, Position::TopLeft);
/// "a large green square in the bottom right"
pub const GREEN_SQUARE: Attributes = Attributes::new(
    Shape::Square,
    Colour::Green,
    Size::Large,
    Position::BottomRight,
);

/// A 128x128 render of `a` on black, as the examples' inputs are.
pub fn render(a: Attributes) -> RgbImage {
    Scene::new(a, Background::Black).render(128)
}
