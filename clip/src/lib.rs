//! CLIP for unclip: the text and vision encoders of OpenAI / LAION CLIP as transformers
//! implements them (`modeling_clip.py`: `CLIPModel`, `CLIPTextModelWithProjection`,
//! `CLIPVisionModelWithProjection`), loading transformers checkpoints, CLIPImageProcessor-style
//! preprocessing, the contrastive loss and training step, and zero-shot classification.
//!
//! - [`ClipModel`], [`ClipTextModelWithProjection`], [`ClipVisionModelWithProjection`]:
//!   `from_pretrained(dir, device)` reads a transformers folder (`config.json` +
//!   `model.safetensors` or `pytorch_model.bin`), strictly; `save_pretrained` writes one.
//! - [`ClipImageProcessor`]: transformers' `CLIPImageProcessor` (`preprocessor_config.json`).
//! - [`ClipModel::zero_shot`]: images scored against a list of captions ([`ZeroShot`]).
//! - [`ClipTrainer`] / [`NoisedClipTrainer`]: contrastive training (CLIP's symmetric
//!   cross-entropy, [`contrastive_loss`]) and GLIDE's noised CLIP.
//!
//! Text and image embeddings of the repository's small shapes model, compared:
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use unclip_clip::{
//!     ClipImageProcessor, ClipTextModelWithProjection, ClipVisionModelWithProjection, l2_normalize,
//! };
//! use unclip_tokenizer::ClipTokenizer;
//!
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/shapes");
//! // `dir`: a model folder in the diffusers layout (here the repository's `models/shapes`).
//! let device = Device::flex();
//! let tokenizer = ClipTokenizer::from_dir(dir.join("tokenizer"))?;
//! let text_encoder =
//!     ClipTextModelWithProjection::from_pretrained(dir.join("text_encoder"), &device)?;
//! let image_encoder =
//!     ClipVisionModelWithProjection::from_pretrained(dir.join("image_encoder"), &device)?;
//! let processor =
//!     ClipImageProcessor::from_file(dir.join("feature_extractor/preprocessor_config.json"))?;
//!
//! let enc = tokenizer.encode_batch(&["a large red circle in the top left"])?;
//! let ids = Tensor::<2, Int>::from_data(TensorData::new(enc.flat_ids(), enc.shape()), &device);
//! let mask = TensorData::new(enc.flat_attention_mask(), enc.shape());
//! let mask = Tensor::<2, Int>::from_data(mask, &device);
//! let (text_embeds, _) = text_encoder.forward(ids, Some(mask)); // [1, 64]
//!
//! let red = image::RgbImage::from_pixel(48, 48, image::Rgb([220, 30, 30]));
//! let pixels = processor.preprocess(&[red.into()], &device)?; // [1, 3, 32, 32]
//! let (image_embeds, _) = image_encoder.forward(pixels); // [1, 64]
//!
//! let cosine = (l2_normalize(text_embeds) * l2_normalize(image_embeds)).sum();
//! let cosine = cosine.into_scalar::<f32>();
//! assert!((-1.0..=1.0).contains(&cosine));
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
