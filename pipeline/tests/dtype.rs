//! The dtype setting's errors (in an f32 process): a dtype the device cannot compute in, and a
//! dtype other than the one the device already makes tensors in, are `UnsupportedDtype`; f32
//! (the default) builds.

mod common;

use burn::tensor::{DType, FloatDType, Tensor};
use unclip::{UnclipBuilder, UnclipError};
use unclip_testkit::{fixture_dir, test_device};

fn build(dtype: FloatDType) -> Result<unclip::UnclipPipeline, UnclipError> {
    // A tensor first: the device makes f32 tensors from here on (burn locks it at the first).
    let _ = Tensor::<1>::zeros([1], &test_device());
    UnclipBuilder::new()
        .device(test_device())
        .dtype(dtype)
        .from_pretrained(fixture_dir("unclip_tiny"))
        .build()
}

#[test]
fn a_dtype_the_device_cannot_compute_in_is_an_error() {
    // flex has f64, f32, f16 and bf16, not flex32.
    let err = build(FloatDType::Flex32).err().expect("flex32 on flex");
    assert!(
        matches!(
            err,
            UnclipError::UnsupportedDtype {
                dtype: FloatDType::Flex32,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn another_dtype_than_the_devices_is_an_error_and_f32_builds() {
    let err = build(FloatDType::F16)
        .err()
        .expect("the device already makes f32");
    assert!(
        matches!(
            err,
            UnclipError::UnsupportedDtype {
                dtype: FloatDType::F16,
                ref why,
            } if why.contains("F32")
        ),
        "{err}"
    );
    let pipe = build(FloatDType::F32).unwrap();
    assert_eq!(pipe.dtype(), FloatDType::F32);
    assert!(
        common::float_dtypes(&*pipe.decoder.model().unwrap())
            .iter()
            .all(|d| *d == DType::F32)
    );
    // The default is f32.
    let pipe = UnclipBuilder::new()
        .device(test_device())
        .from_pretrained(fixture_dir("unclip_tiny"))
        .build()
        .unwrap();
    assert_eq!(pipe.dtype(), FloatDType::F32);
}
