//! The antialiased bicubic resize the unCLIP pipeline applies to the decoder's image before
//! super-resolution (PyTorch `F.interpolate(mode="bicubic", align_corners=False,
//! antialias=True)`): shared with CLIP's preprocessing, it lives in `unclip-nn` and is re-exported
//! here.

pub use unclip_nn::{bicubic_aa_weights, resize_bicubic_antialias};
