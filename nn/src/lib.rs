//! Shared building blocks of unclip: typed load errors, the one checkpoint loader (safetensors
//! and PyTorch `.bin` without pickle execution, f16/bf16 cast to f32, strict application),
//! torch-layout layers, activations, attention and timestep embeddings.
//!
//! Every stage crate (`unclip-clip`, `unclip-prior`, `unclip-decoder`, `unclip-upsampler`) builds on
//! these; nothing here picks a backend. The crate's cargo features (`flex`, `ndarray`, `wgpu`,
//! `tch`, all off by default) only decide which names [`parse_device`] knows.
//!
//! - [`parse_device`]: a device by name (`"flex"`, `"ndarray"`, `"wgpu"`, `"wgpu-cpu"`,
//!   `"libtorch"`), for command lines and tests.
//! - [`Checkpoint`]: reads safetensors / PyTorch `.bin` files, renames keys with a [`KeyMap`] and
//!   applies them to a module strictly ([`LoadError`] names every missing, unused or misshapen
//!   tensor); [`save_safetensors`] writes a module back in the same layout.
//! - [`Linear`], [`LayerNorm`], [`GroupNorm`]: torch's parameter names and layouts (PyTorch
//!   `nn.Linear`, `nn.LayerNorm`, `nn.GroupNorm`).
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use unclip_nn::{Checkpoint, KeyMap, Linear};
//!
//! // A device by name (its backend's cargo feature must be compiled in: `flex` here).
//! let device: Device = unclip_nn::parse_device("flex")?;
//! let layer = Linear::new(4, 2, true, &device);
//!
//! // Save the module in its checkpoint layout, read the file back strictly into a fresh one.
//! let path = std::env::temp_dir().join(format!("unclip-nn-doc-{}.safetensors", std::process::id()));
//! unclip_nn::save_safetensors(&layer, &path)?;
//! let ckpt = Checkpoint::open(&path)?;
//! assert_eq!(ckpt.keys(), ["bias", "weight"]);
//! assert_eq!(ckpt.shape("weight"), Some(vec![2, 4])); // torch's [out, in]
//! let loaded = ckpt.remap(&KeyMap::IDENTITY)?.load_into(Linear::new(4, 2, true, &device))?;
//!
//! let x = Tensor::<2>::ones([1, 4], &device);
//! assert_eq!(layer.forward(x.clone()).into_data(), loaded.forward(x).into_data());
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
