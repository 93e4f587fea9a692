//! `unclip-shapes`: the procedural, seeded "captioned shapes world" unclip trains every
//! stage on.
//!
//! Each image shows one flat-coloured shape (circle, square, upright triangle) in one of six
//! colours, two sizes and nine grid positions on a black or white background. The crate
//! provides:
//!
//! - [`Scene`]: a resolution-independent scene and its antialiased [`Scene::render`] at
//!   any side (16, 32, 64, 256, ...), plus planar float helpers ([`planar_signed`],
//!   [`planar_unit`] and their inverses);
//! - captions from [`NUM_TEMPLATES`] templates ([`caption()`], [`random_caption`]) and a
//!   parser for all of them ([`parse_caption`]);
//! - a fixed held-out share of attribute combinations ([`Split`], [`is_held_out`],
//!   [`combinations`]; rule in [`split`]);
//! - a seeded sampler ([`Dataset`]);
//! - a pixel [`oracle`] that reads the attributes back, for scoring generated images;
//! - [`contact_sheet`] for grids and strips, and [`perturb`] (noise, blur) for robustness
//!   checks.
//!
//! ```
//! use unclip_shapes::{caption, oracle, Dataset, Scene, Split};
//!
//! let mut data = Dataset::new(7, Split::Train);
//! let example = data.next_example();
//! let image = example.scene.render(64);
//! let reading = oracle::read(&image).unwrap();
//! assert_eq!(reading.attributes, example.attributes());
//! println!("{} -> {}", example.caption, caption(&reading.attributes, 0));
//! ```

pub mod attributes;
pub mod caption;
pub mod dataset;
pub mod oracle;
pub mod perturb;
pub mod scene;
pub mod sheet;
pub mod split;

pub use attributes::{Attributes, Background, Colour, Position, Shape, Size};
pub use caption::{CANONICAL_TEMPLATE, NUM_TEMPLATES, caption, parse_caption, random_caption};
pub use dataset::{Dataset, Example};
pub use oracle::{OracleError, Reading, Score};
pub use scene::{Scene, from_planar_signed, from_planar_unit, planar_signed, planar_unit};
pub use sheet::contact_sheet;
pub use split::{HELD_OUT_COUNT, Split, combinations, is_held_out, split_of};

/// Errors of this crate outside the oracle.
#[derive(Debug, thiserror::Error)]
pub enum ShapesError {
    #[error("unknown {kind} name {name:?}")]
    UnknownName { kind: &'static str, name: String },
    #[error("bad example JSON: {0}")]
    Json(#[from] serde_json::Error),
}
