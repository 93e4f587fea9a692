//! The pipeline in f16 (`UnclipBuilder::dtype`): every model's weights are f16, every tensor the
//! stages make is f16, and single forwards and embeddings stay within f16 rounding of the f32
//! diffusers reference. Its own test binary: burn fixes a device's float dtype per process.

mod common;

use burn::tensor::FloatDType;
use unclip::{Control, MemoryMode, UnclipBuilder};
use unclip_testkit::{fixture_dir, test_device};

use common::{assert_identical, check_low_precision};

#[test]
fn f16_pipeline_matches_the_f32_reference_within_f16_rounding() {
    // 20 f16 epsilons (2^-10): measured up to 7.6e-3 on the UNet forwards.
    check_low_precision(FloatDType::F16, 2e-2);
}

#[test]
fn f16_staged_equals_f16_resident() {
    let build = |mode| {
        UnclipBuilder::new()
            .device(test_device())
            .dtype(FloatDType::F16)
            .from_pretrained(fixture_dir("unclip_tiny"))
            .memory(mode)
            .prior_steps(2)
            .decoder_steps(2)
            .super_res_steps(2)
            .build()
            .unwrap()
    };
    let go = |p: &unclip::UnclipPipeline| {
        p.text_to_image(&["a red circle"], &mut |_| Control::Continue)
            .unwrap()
    };
    let (a, b) = (
        go(&build(MemoryMode::Resident)),
        go(&build(MemoryMode::Staged)),
    );
    assert_eq!(a.images.dtype(), burn::tensor::DType::F16);
    assert_identical("images", a.images, b.images);
}
