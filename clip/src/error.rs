//! Errors of the CLIP crate's user-facing calls.

use unclip_nn::LoadError;

/// What can go wrong using CLIP beyond loading.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no images were given")]
    NoImages,
    #[error("no texts were given")]
    NoTexts,
    #[error("image {index}: {message}")]
    BadImage { index: usize, message: String },
    #[error("batch mismatch: {message}")]
    BatchMismatch { message: String },
}
