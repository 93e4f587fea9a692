//! CLIP byte-level BPE tokenizer for unCLIP, loading Hugging Face tokenizer folders.
//!
//! - [`ClipTokenizer::from_dir`] loads a folder as checkpoints ship it: `tokenizer.json`, or
//!   `vocab.json` + `merges.txt` (Karlo), with `tokenizer_config.json` /
//!   `special_tokens_map.json`. The result encodes like transformers 5's `CLIPTokenizer`,
//!   including its special-token rules (a literal `<|endoftext|>` is the end id; with Karlo's
//!   `pad_token` `"!"`, a literal `!` is id 0).
//! - [`ClipTokenizer::encode_batch`] gives an [`Encoding`]: `[batch, 77]` ids framed with
//!   start/end tokens, truncated keeping the end token, padded with the pad id, the attention
//!   mask, and the end-token positions; [`Encoding::flat_ids`] / [`Encoding::flat_attention_mask`]
//!   are row-major `i64` vectors for burn tensors.
//! - [`CleanMode`] optionally applies the ftfy-style clean-up of transformers 4's slow tokenizer
//!   or of `open_clip` (HTML entities, ligatures, full-width forms, curly quotes, whitespace,
//!   Python lower-casing); see [`clean`].
//!
//! ```no_run
//! use unclip_tokenizer::ClipTokenizer;
//!
//! let tok = ClipTokenizer::from_dir("karlo/tokenizer")?;
//! let enc = tok.encode_batch(&["a horse grazing in a sunny field"])?;
//! let ids = enc.flat_ids(); // Vec<i64>, [1 * 77]
//! let mask = enc.flat_attention_mask();
//! # Ok::<(), unclip_tokenizer::TokenizerError>(())
//! ```

pub mod clean;
mod encode;
mod error;
mod load;
mod tables;
mod tokenizer;

pub use clean::CleanMode;
pub use encode::{Encoding, Framed, SpecialIds, frame};
pub use error::{Result, TokenizerError};
pub use load::{DEFAULT_CONTEXT_LENGTH, TokenizerSource};
pub use tokenizer::{ClipTokenizer, TokenizerOptions};
