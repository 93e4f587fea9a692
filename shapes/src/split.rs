//! The fixed train / held-out split of attribute combinations.
//!
//! # Rule
//!
//! [`HELD_OUT_COUNT`] = 40 of the 324 (shape, colour, size, position) combinations (12.3%)
//! are held out of training. They are chosen deterministically:
//!
//! 1. every combination index `i` (see [`Attributes::index`]) gets the key
//!    `splitmix64(HELD_OUT_SEED ^ i)`;
//! 2. combinations are visited in increasing key order and held out greedily, *unless*
//!    holding one out would leave any of its six attribute pairs (shape-colour,
//!    shape-size, shape-position, colour-size, colour-position, size-position) with fewer
//!    than two thirds of that pair's combinations in training;
//! 3. this stops once 40 are held out.
//!
//! So every single attribute value and every pair of values is seen in training (each
//! pair keeps at least two thirds of its combinations), and each held-out combination is a
//! novel composition of seen parts. The rule is pure arithmetic: it does not depend on the
//! `rand` crate's version.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::attributes::{Attributes, Colour, Position, Shape, Size};

/// Number of held-out combinations (of [`Attributes::COUNT`] = 324).
pub const HELD_OUT_COUNT: usize = 40;

/// Seed of the key ordering combinations for the held-out choice.
pub const HELD_OUT_SEED: u64 = 0x5EE_D0F5_A4E5;

/// Which part of the combination space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The 284 combinations used for training.
    Train,
    /// The 40 combinations never shown in training (for generalisation tests).
    HeldOut,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The six attribute pairs of a combination, each as (pair kind, value a, value b).
fn pairs(a: &Attributes) -> [(usize, usize, usize); 6] {
    let (s, c, z, p) = (
        a.shape.index(),
        a.colour.index(),
        a.size.index(),
        a.position.index(),
    );
    [
        (0, s, c),
        (1, s, z),
        (2, s, p),
        (3, c, z),
        (4, c, p),
        (5, z, p),
    ]
}

/// Number of combinations sharing one value pair of the given kind.
fn pair_total(kind: usize) -> usize {
    let n = [Shape::COUNT, Colour::COUNT, Size::COUNT, Position::COUNT];
    let total = Attributes::COUNT;
    let (i, j) = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)][kind];
    total / (n[i] * n[j])
}

fn held_out_table() -> &'static [bool; Attributes::COUNT] {
    static TABLE: OnceLock<[bool; Attributes::COUNT]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut order: Vec<usize> = (0..Attributes::COUNT).collect();
        order.sort_by_key(|&i| (splitmix64(HELD_OUT_SEED ^ i as u64), i));
        let mut held = [false; Attributes::COUNT];
        // held_per_pair[kind][a][b]: number held out sharing that pair.
        let mut held_per_pair = vec![[[0usize; 9]; 9]; 6];
        let mut count = 0;
        for i in order {
            if count == HELD_OUT_COUNT {
                break;
            }
            let a = Attributes::from_index(i).expect("index in range");
            let ps = pairs(&a);
            // Keep at least two thirds of every pair's combinations in training.
            let ok = ps
                .iter()
                .all(|&(k, x, y)| 3 * (held_per_pair[k][x][y] + 1) <= pair_total(k));
            if ok {
                held[i] = true;
                count += 1;
                for (k, x, y) in ps {
                    held_per_pair[k][x][y] += 1;
                }
            }
        }
        held
    })
}

/// Whether `attrs` is one of the held-out combinations (see the module docs for the rule).
pub fn is_held_out(attrs: &Attributes) -> bool {
    held_out_table()[attrs.index()]
}

/// The split `attrs` belongs to.
pub fn split_of(attrs: &Attributes) -> Split {
    if is_held_out(attrs) {
        Split::HeldOut
    } else {
        Split::Train
    }
}

/// Every combination of `split`, in [`Attributes::index`] order
/// (284 for [`Split::Train`], 40 for [`Split::HeldOut`]).
pub fn combinations(split: Split) -> Vec<Attributes> {
    Attributes::all()
        .into_iter()
        .filter(|a| split_of(a) == split)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn sizes_of_the_split() {
        assert_eq!(combinations(Split::HeldOut).len(), HELD_OUT_COUNT);
        assert_eq!(
            combinations(Split::Train).len(),
            Attributes::COUNT - HELD_OUT_COUNT
        );
    }

    #[test]
    fn every_value_and_pair_is_seen_in_training() {
        let train = combinations(Split::Train);
        let mut seen: HashSet<(usize, usize, usize)> = HashSet::new();
        let mut count = std::collections::HashMap::new();
        for a in &train {
            for p in pairs(a) {
                seen.insert(p);
                *count.entry(p).or_insert(0usize) += 1;
            }
        }
        for a in Attributes::all() {
            for p in pairs(&a) {
                assert!(seen.contains(&p), "pair {p:?} of {a} unseen in training");
                assert!(3 * count[&p] >= 2 * pair_total(p.0));
            }
        }
        for a in combinations(Split::HeldOut) {
            assert!(is_held_out(&a));
            assert_eq!(split_of(&a), Split::HeldOut);
        }
    }

    #[test]
    fn held_out_set_is_spread_over_values() {
        let held = combinations(Split::HeldOut);
        for s in Shape::all() {
            assert!(held.iter().any(|a| a.shape == s));
        }
        for c in Colour::all() {
            assert!(held.iter().any(|a| a.colour == c));
        }
        for z in Size::all() {
            assert!(held.iter().any(|a| a.size == z));
        }
    }
}
