//! GLIDE's noised CLIP image tower: it trains (the bank cross-entropy falls and the timestep
//! reaches the output), round-trips through its folder, and loads strictly.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use unclip_clip::{
    ClipVisionConfig, NoisedClipBatch, NoisedClipTrainer, NoisedClipVisionModel, bank_cross_entropy,
};
use unclip_nn::LoadError;
use unclip_testkit::{StoreDtype, copy_model_dir_with, temp_dir, test_device, to_vec};

fn config() -> ClipVisionConfig {
    serde_json::from_value(serde_json::json!({
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "image_size": 8, "patch_size": 4, "projection_dim": 8
    }))
    .expect("config")
}

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn bank_cross_entropy_is_the_mean_negative_log_softmax_of_the_labels() {
    let device = test_device();
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 0.5, 0.5, -1.0], [2, 3]),
        &device,
    );
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &device);
    let got = bank_cross_entropy(logits, labels).into_scalar::<f32>();
    let lse = |r: &[f32]| r.iter().map(|v| v.exp()).sum::<f32>().ln();
    let want = ((lse(&[1.0, 2.0, 3.0]) - 3.0) + (lse(&[0.5, 0.5, -1.0]) - 0.5)) / 2.0;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn noised_tower_trains_reads_the_timestep_and_round_trips() {
    let device: Device = test_device().autodiff();
    let cfg = config();
    device.seed(3);
    let b = 6;
    let x_t = Tensor::<4>::random([b, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let bank = Tensor::<2>::random([3, 8], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..b as i64).map(|i| i % 3).collect();
    let batch = NoisedClipBatch {
        x_t: x_t.clone(),
        timesteps: (0..b).map(|i| 100 * i).collect(),
        text_embeds: bank.clone(),
        labels: Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &device),
    };
    let mut trainer = NoisedClipTrainer::new(NoisedClipVisionModel::new(&cfg, &device), 3e-3, 0.0);
    let (first, _) = trainer.step(batch.clone());
    let mut last = (first, 0.0);
    for _ in 0..40 {
        last = trainer.step(batch.clone());
    }
    assert!(
        last.0 < 0.5 * first,
        "bank cross-entropy {first} -> {}",
        last.0
    );
    assert_eq!(last.1, 1.0, "every image's own caption ranks first");

    let model = trainer.into_model().valid();
    let plain = test_device();
    let x = x_t.inner();
    let at = |m: &NoisedClipVisionModel, t: usize| m.forward(x.clone(), &vec![t; b]);
    assert!(
        max_abs_diff(at(&model, 0), at(&model, 900)) > 1e-4,
        "the timestep does not reach the output"
    );
    let dir = temp_dir("noised-clip-roundtrip");
    model.save_pretrained(&cfg, &dir).expect("save");
    let back = NoisedClipVisionModel::from_pretrained(&dir, &plain).expect("load");
    assert_eq!(max_abs_diff(at(&model, 500), at(&back, 500)), 0.0);
    assert_eq!(
        to_vec(model.logit_scale.val()),
        to_vec(back.logit_scale.val())
    );
}

#[test]
fn noised_tower_loading_is_strict() {
    let device = test_device();
    let cfg = config();
    let src = temp_dir("noised-clip-src");
    NoisedClipVisionModel::new(&cfg, &device)
        .save_pretrained(&cfg, &src)
        .expect("save");
    let dst = temp_dir("noised-clip-missing");
    copy_model_dir_with(&src, &dst, "model.safetensors", StoreDtype::F32, |t| {
        t.remove("time_embedding.linear_2.bias")
            .expect("key exists");
    });
    match NoisedClipVisionModel::from_pretrained(&dst, &device) {
        Err(LoadError::MissingTensors { keys, .. }) => {
            assert_eq!(keys, vec!["time_embedding.linear_2.bias".to_string()])
        }
        other => panic!("expected MissingTensors, got {other:?}"),
    }
}
