//! The contrastive loss falls under training on a small batch, and zero-shot scoring agrees with
//! the reference logits.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use unclip_clip::{ClipBatch, ClipConfig, ClipModel, ClipTrainer};
use unclip_testkit::{Io, assert_close_slice, fixture_dir, test_device};

#[test]
fn contrastive_loss_falls() {
    let device: Device = test_device().autodiff();
    let cfg: ClipConfig = serde_json::from_value(serde_json::json!({
        "projection_dim": 16,
        "text_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 8, "eos_token_id": 63},
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 8, "patch_size": 4}
    }))
    .unwrap();
    let b = 6;
    // Text i: [i+1, ..., EOS]; image i: a distinct random pattern.
    let ids: Vec<i64> = (0..b)
        .flat_map(|i| vec![i as i64 + 1, 40 + i as i64, 63, 0, 0, 0, 0, 0])
        .collect();
    let mask: Vec<i64> = (0..b).flat_map(|_| vec![1, 1, 1, 0, 0, 0, 0, 0]).collect();
    let batch = ClipBatch {
        input_ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 8]), &device),
        attention_mask: Some(Tensor::<2, Int>::from_data(
            TensorData::new(mask, [b, 8]),
            &device,
        )),
        pixel_values: Tensor::random([b, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device),
    };
    let mut trainer = ClipTrainer::new(ClipModel::new(&cfg, &device), 3e-3, 0.0);
    let first = trainer.step(batch.clone());
    let mut last = first;
    for _ in 0..30 {
        last = trainer.step(batch.clone());
    }
    println!("loss {first} -> {last}");
    assert!(first.is_finite() && last.is_finite());
    assert!(last < 0.5 * first, "loss did not fall: {first} -> {last}");
}

#[test]
fn zero_shot_matches_reference_logits() {
    let device = test_device();
    let dir = fixture_dir("clip_tiny_quickgelu");
    let io = Io::open_dir(&dir);
    let model = ClipModel::from_pretrained(&dir, &device).unwrap();
    let scores = model.zero_shot_ids(
        io.get("pixel_values").float::<4>(&device),
        io.get("input_ids").int::<2>(&device),
        Some(io.get("attention_mask").int::<2>(&device)),
    );
    let flat: Vec<f32> = scores.logits.iter().flatten().copied().collect();
    assert_close_slice(
        "zero-shot logits",
        &flat,
        &io.get("logits_per_image").f32(),
        1e-4,
    );
    for row in &scores.probs {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let reference = io.get("logits_per_image").f32();
    let n = scores.logits[0].len();
    for (i, best) in scores.best().into_iter().enumerate() {
        let row = &reference[i * n..(i + 1) * n];
        let expected = row
            .iter()
            .enumerate()
            .fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
        assert_eq!(best, expected);
    }
}

/// A model written by `save_pretrained` reloads (whole, and as its two towers) with identical
/// outputs.
#[test]
fn saved_model_and_towers_reload_identically() {
    let device = test_device();
    let cfg: ClipConfig = serde_json::from_value(serde_json::json!({
        "projection_dim": 12,
        "text_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "max_position_embeddings": 8, "eos_token_id": 63,
                        "hidden_act": "gelu"},
        "vision_config": {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 8, "patch_size": 4}
    }))
    .unwrap();
    let model = ClipModel::new(&cfg, &device);
    let dir = unclip_testkit::temp_dir("clip-save");
    model.save_pretrained(&cfg, dir.join("clip")).expect("save");
    let reloaded = ClipModel::from_pretrained(dir.join("clip"), &device).expect("reload");
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            vec![5i64, 9, 63, 0, 0, 0, 0, 0, 7, 63, 0, 0, 0, 0, 0, 0],
            [2, 8],
        ),
        &device,
    );
    let pixels = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let vec_of = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(
        vec_of(model.text_features(ids.clone(), None)),
        vec_of(reloaded.text_features(ids.clone(), None))
    );
    assert_eq!(
        vec_of(model.image_features(pixels.clone())),
        vec_of(reloaded.image_features(pixels.clone()))
    );

    let expected_text = vec_of(model.text_features(ids.clone(), None));
    let expected_image = vec_of(model.image_features(pixels.clone()));
    let (text, vision) = model.into_towers();
    text.save_pretrained(&cfg.text(), dir.join("text_encoder"))
        .expect("save text");
    vision
        .save_pretrained(&cfg.vision(), dir.join("image_encoder"))
        .expect("save vision");
    let text = unclip_clip::ClipTextModelWithProjection::from_pretrained(
        dir.join("text_encoder"),
        &device,
    )
    .expect("reload text");
    let vision = unclip_clip::ClipVisionModelWithProjection::from_pretrained(
        dir.join("image_encoder"),
        &device,
    )
    .expect("reload vision");
    assert_eq!(vec_of(text.forward(ids, None).0), expected_text);
    assert_eq!(vec_of(vision.forward(pixels).0), expected_image);
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("text_encoder/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["architectures"][0], "CLIPTextModelWithProjection");
    assert_eq!(written["hidden_act"], "gelu");
}
