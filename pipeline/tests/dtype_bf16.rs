//! The pipeline in bf16 (`UnclipBuilder::dtype`), as `dtype_f16.rs` with bf16's coarser
//! rounding (8 significant bits). Its own test binary: burn fixes a device's float dtype per
//! process.

mod common;

use burn::tensor::FloatDType;

#[test]
fn bf16_pipeline_matches_the_f32_reference_within_bf16_rounding() {
    // 20 bf16 epsilons (2^-7): measured up to 8e-2 on the super-resolution forward.
    common::check_low_precision(FloatDType::BF16, 0.16);
}
