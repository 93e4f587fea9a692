//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong loading a tokenizer folder or encoding prompts.
///
/// File errors name the file and the problem; user errors (an empty prompt list, a context too
/// short for the start and end tokens) are their own variants. Nothing in this crate panics on
/// user input.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The path given to [`crate::ClipTokenizer::from_dir`] is not a directory.
    #[error("tokenizer folder {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),

    /// The folder has neither `tokenizer.json` nor both `vocab.json` and `merges.txt`.
    #[error(
        "tokenizer folder {dir}: no tokenizer files found (need tokenizer.json, or vocab.json + \
         merges.txt){detail}"
    )]
    MissingFiles {
        /// The folder searched.
        dir: PathBuf,
        /// What was found instead (e.g. "; vocab.json is present but merges.txt is missing").
        detail: String,
    },

    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file is not valid JSON.
    #[error("{path}: malformed JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A file is readable but its content is not what a tokenizer folder holds.
    #[error("{path}: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. "line 12: expected two space-separated symbols".
        problem: String,
    },

    /// The `tokenizers` library rejected a file or a pipeline built from the folder.
    #[error("{context}: tokenizers library error: {message}")]
    Library {
        /// The file or step (e.g. the path of `tokenizer.json`).
        context: String,
        /// The library's message.
        message: String,
    },

    /// A configured special token (bos, eos, unk, pad) has no id in the vocabulary.
    #[error("{dir}: the {role} token {token:?} is not in the vocabulary")]
    UnknownSpecialToken {
        /// The tokenizer folder.
        dir: PathBuf,
        /// `"bos"`, `"eos"`, `"unk"` or `"pad"`.
        role: &'static str,
        /// The token's text.
        token: String,
    },

    /// `encode_batch` was given no prompts.
    #[error("empty prompt list: encode_batch needs at least one prompt")]
    EmptyBatch,

    /// A context length below 2 cannot hold the start and end tokens.
    #[error("context length {0} is too small: it must hold at least the start and end tokens (2)")]
    ContextTooShort(usize),

    /// The `tokenizers` pipeline failed on one prompt.
    #[error("encoding prompt {index} failed: {message}")]
    Encode {
        /// Index of the prompt in the batch.
        index: usize,
        /// The library's message.
        message: String,
    },
}

/// `Result` with [`TokenizerError`].
pub type Result<T> = std::result::Result<T, TokenizerError>;
