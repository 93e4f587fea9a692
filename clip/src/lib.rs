//! CLIP for unclip: the text and vision encoders of OpenAI / LAION CLIP as transformers
//! implements them (`modeling_clip.py`: `CLIPModel`, `CLIPTextModelWithProjection`,
//! `CLIPVisionModelWithProjection`), loading transformers checkpoints, CLIPImageProcessor-style
//! preprocessing, the contrastive loss and training step, and zero-shot classification.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use unclip_clip::ClipModel;
//! let device = Device::flex();
//! let clip = ClipModel::from_pretrained("path/to/clip", &device)?;
//! # Ok::<(), unclip_nn::LoadError>(())
//! ```

mod config;
mod encoder;
mod error;
mod load;
mod model;
mod noised;
mod preprocess;
mod save;
mod text;
mod train;
mod vision;
mod zeroshot;

pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use encoder::{ClipAttention, ClipEncoder, ClipEncoderLayer, ClipMlp};
pub use error::ClipError;
pub use load::HF_CLIP_KEYS;
pub use model::{ClipModel, ClipOutput, contrastive_loss, l2_normalize};
pub use noised::{NoisedClipBatch, NoisedClipTrainer, NoisedClipVisionModel, bank_cross_entropy};
pub use preprocess::{ClipImageProcessor, ClipImageProcessorConfig, ResizeBackend, Rgb8, SizeSpec};
pub use text::{
    ClipTextEmbeddings, ClipTextModelWithProjection, ClipTextOutput, ClipTextTransformer,
    eos_positions,
};
pub use train::{ClipBatch, ClipTrainSettings, ClipTrainer};
pub use vision::{
    ClipVisionEmbeddings, ClipVisionModelWithProjection, ClipVisionOutput, ClipVisionTransformer,
};
pub use zeroshot::ZeroShot;
