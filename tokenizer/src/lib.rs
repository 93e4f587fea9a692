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
//! The reference implementation is transformers 5's `CLIPTokenizer`
//! (`models/clip/tokenization_clip.py`, a Hugging Face `tokenizers` pipeline), and for
//! [`CleanMode`] transformers 4's pure-Python `CLIPTokenizer` and `open_clip.tokenize`.
//!
//! ```
//! use unclip_tokenizer::ClipTokenizer;
//!
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/shapes");
//! // `dir`: a model folder such as Karlo's; here the repository's `models/shapes`, whose
//! // tokenizer is OpenAI CLIP's vocabulary with a 24-token context and Karlo's pad token "!".
//! let tok = ClipTokenizer::from_dir(dir.join("tokenizer"))?;
//! let enc = tok.encode_batch(&["a large red circle in the top left", ""])?;
//! assert_eq!(enc.shape(), [2, 24]);
//! assert_eq!(enc.ids[0][0], 49406); // <|startoftext|>
//! assert_eq!(enc.ids[1][..3], [49406, 49407, 0]); // "": start, end, then the pad id
//! let ids = enc.flat_ids(); // Vec<i64>, [2 * 24] row-major, for a burn Int tensor
//! let mask = enc.flat_attention_mask(); // 1 for start, content and end tokens
//! assert_eq!(mask[24..27], [1, 1, 0]);
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
