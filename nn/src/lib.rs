//! Shared building blocks of unclip: typed load errors, the one checkpoint loader (safetensors
//! and PyTorch `.bin` without pickle execution, f16/bf16 cast to f32, strict application),
//! torch-layout layers, activations, attention and timestep embeddings.
//!
//! Every stage crate (`unclip-clip`, `unclip-prior`, `unclip-decoder`, `unclip-upsampler`) builds on
//! these; nothing here picks a backend.

mod activation;
mod attention;
mod checkpoint;
mod config;
mod device;
mod ema;
mod embeddings;
mod error;
mod layers;
mod resample;
pub mod train_checkpoint;
mod train_loop;

pub use activation::Activation;
pub use attention::{MASK_MIN, merge_heads, scaled_dot_product, split_heads};
pub use checkpoint::{
    Checkpoint, KeyMap, LoadPrecision, atomic_write, candidate_files, save_safetensors,
    save_safetensors_with,
};
pub use config::{read_json, write_json};
pub use device::{UnknownDevice, available_devices, parse_device};
pub use ema::ema_update;
pub use embeddings::{TimestepEmbedding, timestep_embedding, timesteps_tensor};
pub use error::LoadError;
pub use layers::{GroupNorm, LayerNorm, Linear};
pub use resample::{
    ResampleFloat, aa_cubic_weights, aa_cubic_windows, bicubic_aa_weights, resize_aa_u8_pil,
    resize_aa_u8_torch, resize_bicubic_antialias,
};
pub use train_checkpoint::{
    COMPLETE_FILE, CheckpointFiles, CheckpointStore, EMA_FILE, LATEST_FILE, MODEL_FILE,
    OPTIMIZER_FILE, STATE_FILE, TrainCheckpointError, TrainResume, TrainSnapshot, TrainStateMeta,
    canonical_contents, checksum, contents_differences, first_difference, step_dir_name,
};
pub use train_loop::{StepReport, TrainLoop, Trainer, apply_gradients, clip_grad_norm};
