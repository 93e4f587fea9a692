//! diffusers `models/embeddings.py` `Timesteps` and `TimestepEmbedding`: shared with the prior and
//! the upsamplers, they live in `unclip-nn`; re-exported here under the decoder's names.

pub use unclip_nn::{TimestepEmbedding, timestep_embedding as timestep_proj};
