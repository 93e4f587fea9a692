//! A seeded sampler of captioned scenes.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::ShapesError;
use crate::attributes::Attributes;
use crate::caption::{NUM_TEMPLATES, caption};
use crate::scene::Scene;
use crate::split::{Split, combinations};

/// One training or test item: a scene and a caption describing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub scene: Scene,
    pub caption: String,
    /// The caption template used (`0..NUM_TEMPLATES`).
    pub template: usize,
}

impl Example {
    /// The example's attributes (those the caption describes).
    pub fn attributes(&self) -> Attributes {
        self.scene.attributes()
    }

    /// One-line JSON form, e.g. for a manifest in JSON-lines format.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("Example serialises")
    }

    /// Parses [`Example::to_json`] output.
    pub fn from_json(text: &str) -> Result<Example, ShapesError> {
        Ok(serde_json::from_str(text)?)
    }
}

/// An endless, seeded stream of [`Example`]s whose attributes are drawn uniformly from the
/// combinations of one [`Split`], with a random background (black or white, 50/50), random
/// jitter and a caption template drawn uniformly from `0..NUM_TEMPLATES`.
/// The same seed and split give the same items.
///
/// ```
/// use unclip_shapes::{Dataset, Split, is_held_out, parse_caption};
///
/// let items = Dataset::new(42, Split::Train).sample(8);
/// assert_eq!(items, Dataset::new(42, Split::Train).sample(8)); // reproducible
/// for ex in &items {
///     assert!(!is_held_out(&ex.attributes()));
///     assert_eq!(parse_caption(&ex.caption), Some(ex.attributes()));
///     let image = ex.scene.render(64);
///     assert_eq!(image.dimensions(), (64, 64));
/// }
/// ```
#[derive(Debug)]
pub struct Dataset {
    rng: StdRng,
    split: Split,
    combos: Vec<Attributes>,
}

impl Dataset {
    /// A stream over `split`, seeded by `seed`.
    pub fn new(seed: u64, split: Split) -> Dataset {
        Dataset {
            rng: StdRng::seed_from_u64(seed),
            split,
            combos: combinations(split),
        }
    }

    /// The split this dataset draws from.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The attribute combinations this dataset draws from.
    pub fn combinations(&self) -> &[Attributes] {
        &self.combos
    }

    /// Draws the next example.
    pub fn next_example(&mut self) -> Example {
        let attrs = self.combos[self.rng.random_range(0..self.combos.len())];
        let scene = Scene::random(attrs, &mut self.rng);
        let template = self.rng.random_range(0..NUM_TEMPLATES);
        Example {
            scene,
            caption: caption(&attrs, template),
            template,
        }
    }

    /// Draws the next `n` examples.
    pub fn sample(&mut self, n: usize) -> Vec<Example> {
        (0..n).map(|_| self.next_example()).collect()
    }
}

impl Iterator for Dataset {
    type Item = Example;

    fn next(&mut self) -> Option<Example> {
        Some(self.next_example())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Background;
    use crate::caption::parse_caption;
    use crate::split::is_held_out;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_items_different_seed_different_items() {
        let a = Dataset::new(3, Split::Train).sample(50);
        let b: Vec<_> = Dataset::new(3, Split::Train).take(50).collect();
        assert_eq!(a, b);
        let c = Dataset::new(4, Split::Train).sample(50);
        assert_ne!(a, c);
    }

    #[test]
    fn respects_the_split_and_covers_it() {
        let train = Dataset::new(0, Split::Train).sample(5000);
        assert!(train.iter().all(|e| !is_held_out(&e.attributes())));
        let combos: HashSet<_> = train.iter().map(|e| e.attributes()).collect();
        assert_eq!(combos.len(), combinations(Split::Train).len());
        let templates: HashSet<_> = train.iter().map(|e| e.template).collect();
        assert_eq!(templates.len(), NUM_TEMPLATES);
        let white = train
            .iter()
            .filter(|e| e.scene.background == Background::White)
            .count();
        assert!((2000..3000).contains(&white));

        let held = Dataset::new(0, Split::HeldOut).sample(500);
        assert!(held.iter().all(|e| is_held_out(&e.attributes())));
        for e in &held {
            assert_eq!(parse_caption(&e.caption), Some(e.attributes()));
        }
    }

    #[test]
    fn examples_round_trip_through_json() {
        for e in Dataset::new(9, Split::Train).sample(10) {
            let line = e.to_json();
            assert!(!line.contains('\n'));
            assert_eq!(Example::from_json(&line).unwrap(), e);
        }
        assert!(Example::from_json("{").is_err());
    }
}
