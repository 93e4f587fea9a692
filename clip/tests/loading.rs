//! Strict loading of CLIP checkpoints: missing, unexpected and mis-shaped tensors are typed
//! errors naming the key (and both shapes); f16 / bf16 checkpoints load by casting to f32 and
//! match the reference within half-precision tolerance.

use unclip_clip::{ClipModel, ClipTextModelWithProjection};
use unclip_nn::LoadError;
use unclip_testkit::{
    HostData, Io, StoreDtype, assert_close, copy_model_dir_with, fixture_dir, temp_dir, test_device,
};

const WEIGHTS: &str = "model.safetensors";

#[test]
fn missing_tensor_is_named() {
    let src = fixture_dir("clip_tiny_quickgelu");
    let dst = temp_dir("clip-missing");
    copy_model_dir_with(&src, &dst, WEIGHTS, StoreDtype::F32, |t| {
        t.remove("text_model.final_layer_norm.weight")
            .expect("key exists");
    });
    match ClipModel::from_pretrained(&dst, &test_device()) {
        Err(LoadError::MissingTensors { keys, .. }) => {
            assert_eq!(keys, vec!["text_model.final_layer_norm.weight".to_string()])
        }
        other => panic!("expected MissingTensors, got {other:?}"),
    }
}

#[test]
fn unexpected_tensor_is_named() {
    let src = fixture_dir("clip_tiny_quickgelu");
    let dst = temp_dir("clip-unused");
    copy_model_dir_with(&src, &dst, WEIGHTS, StoreDtype::F32, |t| {
        let extra = t["logit_scale"].clone();
        t.insert("text_model.extra_bias".to_string(), extra);
    });
    match ClipModel::from_pretrained(&dst, &test_device()) {
        Err(LoadError::UnusedTensors { keys, .. }) => {
            assert_eq!(keys, vec!["text_model.extra_bias".to_string()])
        }
        other => panic!("expected UnusedTensors, got {other:?}"),
    }
}

#[test]
fn position_ids_buffer_is_ignored() {
    // Older transformers checkpoints carry a `position_ids` buffer: it is ignored by the key table.
    let src = fixture_dir("clip_tiny_quickgelu");
    let dst = temp_dir("clip-posids");
    copy_model_dir_with(&src, &dst, WEIGHTS, StoreDtype::F32, |t| {
        let n = t["text_model.embeddings.position_embedding.weight"].shape[0];
        t.insert(
            "text_model.embeddings.position_ids".to_string(),
            unclip_testkit::HostTensor {
                shape: vec![1, n],
                data: HostData::I64((0..n as i64).collect()),
            },
        );
    });
    ClipModel::from_pretrained(&dst, &test_device()).expect("position_ids is ignored");
}

#[test]
fn misshaped_tensor_names_key_and_shapes() {
    let src = fixture_dir("clip_tiny_quickgelu");
    let dst = temp_dir("clip-shape");
    let key = "text_projection.weight";
    let mut original = Vec::new();
    copy_model_dir_with(&src, &dst, WEIGHTS, StoreDtype::F32, |t| {
        let w = t.get_mut(key).expect("key exists");
        original = w.shape.clone();
        let n: usize = w.shape.iter().product();
        w.shape = vec![n]; // flatten: same data, wrong shape
    });
    match ClipModel::from_pretrained(&dst, &test_device()) {
        Err(err @ LoadError::ShapeMismatch { .. }) => {
            let LoadError::ShapeMismatch {
                key: k,
                expected,
                found,
                ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(k, key);
            assert_eq!(expected, &original);
            assert_eq!(found, &vec![original.iter().product::<usize>()]);
            let msg = err.to_string();
            assert!(msg.contains(key), "{msg}");
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn missing_files_are_typed_errors() {
    let dst = temp_dir("clip-empty");
    assert!(matches!(
        ClipModel::from_pretrained(&dst, &test_device()),
        Err(LoadError::Io { .. })
    ));
    std::fs::copy(
        fixture_dir("clip_tiny_quickgelu").join("config.json"),
        dst.join("config.json"),
    )
    .unwrap();
    assert!(matches!(
        ClipModel::from_pretrained(&dst, &test_device()),
        Err(LoadError::NoCheckpoint { .. })
    ));
    std::fs::write(dst.join("config.json"), "{ not json").unwrap();
    assert!(matches!(
        ClipModel::from_pretrained(&dst, &test_device()),
        Err(LoadError::Json { .. })
    ));
}

/// f16 and bf16 copies of the fixture checkpoint load (cast to f32) and reproduce the reference
/// within the precision of the storage format.
#[test]
fn half_precision_checkpoints_match_reference() {
    let device = test_device();
    let src = fixture_dir("clip_tiny_quickgelu");
    let io = Io::open_dir(&src);
    for (dtype, tol) in [(StoreDtype::F16, 1e-2), (StoreDtype::BF16, 6e-2)] {
        let dst = temp_dir("clip-half");
        copy_model_dir_with(&src, &dst, WEIGHTS, dtype, |_| {});
        let text = ClipTextModelWithProjection::from_pretrained(&dst, &device)
            .expect("load half checkpoint");
        let ids = io.get("input_ids").int::<2>(&device);
        let mask = io.get("attention_mask").int::<2>(&device);
        let (embeds, out) = text.forward(ids, Some(mask));
        assert_close(
            &format!("{dtype:?} text.last_hidden_state"),
            out.last_hidden_state,
            io.get("text.last_hidden_state"),
            tol,
        );
        assert_close(
            &format!("{dtype:?} text_embeds_unnormalised"),
            embeds,
            io.get("text_embeds_unnormalised"),
            tol,
        );
    }
}

/// A `pytorch_model.bin` (torch's zip format, read without executing pickle code) loads and gives
/// the reference outputs.
#[test]
fn pytorch_bin_checkpoint_matches_reference() {
    let device = test_device();
    let src = fixture_dir("clip_tiny_gelu");
    let io = Io::open_dir(&src);
    let dst = temp_dir("clip-bin");
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    unclip_testkit::safetensors_to_torch_bin(&src.join(WEIGHTS), &dst.join("pytorch_model.bin"));
    let model = ClipModel::from_pretrained(&dst, &device).expect("load pytorch_model.bin");
    let out = model.forward(
        io.get("input_ids").int::<2>(&device),
        Some(io.get("attention_mask").int::<2>(&device)),
        io.get("pixel_values").float::<4>(&device),
        false,
    );
    assert_close(
        "bin text_embeds",
        out.text_embeds,
        io.get("text_embeds"),
        1e-4,
    );
    assert_close(
        "bin image_embeds",
        out.image_embeds,
        io.get("image_embeds"),
        1e-4,
    );
}
