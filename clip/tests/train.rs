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
