//! [`ClipTokenizer`]: a loaded folder plus the fixed-context batch encoder.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::clean::{CleanMode, clean_text};
use crate::encode::{Encoding, SpecialIds, frame};
use crate::error::{Result, TokenizerError};
use crate::load::{DEFAULT_CONTEXT_LENGTH, TokenizerSource, load_dir};

/// Options for [`ClipTokenizer::from_dir_with_options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenizerOptions {
    /// Text clean-up before the tokenizer pipeline ([`CleanMode::None`] by default, which is what
    /// transformers 5 and `tokenizer.json` do).
    pub clean: CleanMode,
    /// Sequence length of every encoded row; `None` takes `model_max_length` from
    /// `tokenizer_config.json`, else 77.
    pub context_length: Option<usize>,
}

impl TokenizerOptions {
    /// Sets [`TokenizerOptions::clean`].
    pub fn clean(mut self, clean: CleanMode) -> Self {
        self.clean = clean;
        self
    }

    /// Sets [`TokenizerOptions::context_length`].
    pub fn context_length(mut self, context_length: usize) -> Self {
        self.context_length = Some(context_length);
        self
    }
}

/// A CLIP BPE tokenizer loaded from a Hugging Face tokenizer folder, encoding batches of prompts
/// to fixed-length id rows as `tokenizer(prompts, padding="max_length", truncation=True)` does.
///
/// ```no_run
/// use unclip_tokenizer::ClipTokenizer;
///
/// let tok = ClipTokenizer::from_dir("karlo/tokenizer")?;
/// let enc = tok.encode_batch(&["a photo of a cat", ""])?;
/// assert_eq!(enc.shape(), [2, 77]);
/// assert_eq!(enc.ids[0][0], 49406); // <|startoftext|>
/// let ids: Vec<i64> = enc.flat_ids(); // [2 * 77], row-major, for a burn Int tensor
/// # Ok::<(), unclip_tokenizer::TokenizerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    /// The pipeline, special tokens split out of the text.
    tokenizer: Tokenizer,
    /// The same pipeline with special tokens treated as text (used by the clean modes, which
    /// split special tokens out of the raw text themselves, as the Python slow tokenizer does).
    literal: Option<Tokenizer>,
    /// Special added tokens `(content, id)`, longest first.
    specials: Vec<(String, u32)>,
    ids: SpecialIds,
    context_length: usize,
    clean: CleanMode,
    source: TokenizerSource,
    dir: PathBuf,
}

impl ClipTokenizer {
    /// Loads a tokenizer folder with default options (no clean-up; context from
    /// `model_max_length`, else 77).
    ///
    /// The folder holds `tokenizer.json` (used as-is), or `vocab.json` + `merges.txt` (the CLIP
    /// pipeline is then built as transformers 5 builds it), and optionally
    /// `tokenizer_config.json` / `special_tokens_map.json` for the special tokens
    /// (bos/eos/unk/pad, `added_tokens_decoder`) and `model_max_length`.
    ///
    /// As in transformers 5, the configured tokens are special tokens matched in the raw text:
    /// a literal `<|endoftext|>` encodes as its id, and with Karlo's `pad_token` `"!"` every `!`
    /// encodes as the pad id 0.
    ///
    /// ```no_run
    /// let tok = unclip_tokenizer::ClipTokenizer::from_dir("unclip_tiny/tokenizer")?;
    /// assert_eq!(tok.special_ids().pad, 0);
    /// # Ok::<(), unclip_tokenizer::TokenizerError>(())
    /// ```
    ///
    /// # Errors
    /// A missing folder or files, unreadable or malformed files (the error names the file), or a
    /// bos/eos/pad token that has no id.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_dir_with_options(dir, TokenizerOptions::default())
    }

    /// [`ClipTokenizer::from_dir`] with explicit [`TokenizerOptions`].
    ///
    /// ```no_run
    /// use unclip_tokenizer::{ClipTokenizer, CleanMode, TokenizerOptions};
    ///
    /// let opts = TokenizerOptions::default().clean(CleanMode::Ftfy);
    /// let tok = ClipTokenizer::from_dir_with_options("clip/tokenizer", opts)?;
    /// # Ok::<(), unclip_tokenizer::TokenizerError>(())
    /// ```
    ///
    /// # Errors
    /// As [`ClipTokenizer::from_dir`], and [`TokenizerError::ContextTooShort`] for a context
    /// below 2.
    pub fn from_dir_with_options(dir: impl AsRef<Path>, options: TokenizerOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let loaded = load_dir(dir)?;
        let id_of = |role: &'static str, token: &str| {
            loaded
                .tokenizer
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::UnknownSpecialToken {
                    dir: dir.to_path_buf(),
                    role,
                    token: token.to_string(),
                })
        };
        let ids = SpecialIds {
            bos: id_of("bos", &loaded.config.bos)?,
            eos: id_of("eos", &loaded.config.eos)?,
            pad: id_of("pad", &loaded.config.pad)?,
        };
        let mut specials: Vec<(String, u32)> = loaded
            .tokenizer
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(&id, t)| (t.content.clone(), id))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let context_length = options
            .context_length
            .or(loaded.config.model_max_length)
            .unwrap_or(DEFAULT_CONTEXT_LENGTH);
        if context_length < 2 {
            return Err(TokenizerError::ContextTooShort(context_length));
        }
        let tok = ClipTokenizer {
            tokenizer: loaded.tokenizer,
            literal: None,
            specials,
            ids,
            context_length,
            clean: CleanMode::None,
            source: loaded.source,
            dir: dir.to_path_buf(),
        };
        Ok(tok.with_clean(options.clean))
    }

    /// The same tokenizer with another clean-up mode.
    pub fn with_clean(mut self, clean: CleanMode) -> Self {
        self.clean = clean;
        if clean == CleanMode::None {
            self.literal = None;
        } else if self.literal.is_none() {
            let mut literal = self.tokenizer.clone();
            literal.set_encode_special_tokens(true);
            self.literal = Some(literal);
        }
        self
    }

    /// The same tokenizer with another context length.
    ///
    /// # Errors
    /// [`TokenizerError::ContextTooShort`] below 2.
    pub fn with_context_length(mut self, context_length: usize) -> Result<Self> {
        if context_length < 2 {
            return Err(TokenizerError::ContextTooShort(context_length));
        }
        self.context_length = context_length;
        Ok(self)
    }

    /// Encodes a batch of prompts to `[batch, context_length]` ids with start and end tokens,
    /// truncation that keeps the end token, padding with the pad id, the attention mask and the
    /// end-token positions.
    ///
    /// ```no_run
    /// # let tok = unclip_tokenizer::ClipTokenizer::from_dir("tokenizer")?;
    /// let enc = tok.encode_batch(&["a horse", "An astronaut riding a horse"])?;
    /// assert_eq!(enc.ids[0][..4], [49406, 320, 4558, 49407]);
    /// assert_eq!(enc.attention_mask[0][..5], [1, 1, 1, 1, 0]);
    /// assert_eq!(enc.eot_positions[0], 3);
    /// # Ok::<(), unclip_tokenizer::TokenizerError>(())
    /// ```
    ///
    /// # Errors
    /// [`TokenizerError::EmptyBatch`] for no prompts; [`TokenizerError::Encode`] when the
    /// `tokenizers` pipeline fails on a prompt.
    pub fn encode_batch<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Encoding> {
        if prompts.is_empty() {
            return Err(TokenizerError::EmptyBatch);
        }
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let content = self.content_ids_at(p.as_ref(), index)?;
                frame(&content, self.ids, self.context_length)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoding::from_rows(rows, self.context_length))
    }

    /// The ids of one prompt without start/end tokens, not truncated (after the clean-up).
    ///
    /// # Errors
    /// [`TokenizerError::Encode`] when the `tokenizers` pipeline fails.
    pub fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.content_ids_at(text, 0)
    }

    fn content_ids_at(&self, text: &str, index: usize) -> Result<Vec<u32>> {
        let encode = |tok: &Tokenizer, s: &str| -> Result<Vec<u32>> {
            tok.encode(s, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| TokenizerError::Encode {
                    index,
                    message: e.to_string(),
                })
        };
        let literal = match (&self.literal, self.clean) {
            (Some(literal), mode) if mode != CleanMode::None => literal,
            _ => return encode(&self.tokenizer, text),
        };
        // As the Python slow tokenizer: split special tokens out of the raw text, clean and
        // encode each piece in between.
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id)))
                // Leftmost, then longest (the list is sorted longest first; min_by_key keeps the
                // first of equal keys).
                .min_by_key(|&(at, _, _)| at);
            let (piece, special) = match next {
                Some((at, len, id)) => {
                    let piece = &rest[..at];
                    rest = &rest[at + len..];
                    (piece, Some(id))
                }
                None => {
                    let piece = rest;
                    rest = "";
                    (piece, None)
                }
            };
            let cleaned = clean_text(piece, self.clean);
            if !cleaned.is_empty() {
                ids.extend(encode(literal, &cleaned)?);
            }
            if let Some(id) = special {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Start, end and pad ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.ids
    }

    /// Sequence length of every encoded row.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The active clean-up mode.
    pub fn clean_mode(&self) -> CleanMode {
        self.clean
    }

    /// Which files the tokenizer was built from.
    pub fn source(&self) -> TokenizerSource {
        self.source
    }

    /// The folder it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Vocabulary size including added tokens (49408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of a token string (vocabulary or added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
