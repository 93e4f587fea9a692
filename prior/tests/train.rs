//! The training loop on a small synthetic set: the loss falls, and the checkpoint it writes
//! reloads through `PriorTransformer::from_pretrained` (and resumes).

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use unclip_prior::train::{PriorBatch, PriorTrainer, TrainConfig};
use unclip_prior::{PriorConditioning, PriorTransformer, PriorTransformerConfig};
use unclip_testkit::to_vec;

fn tiny() -> PriorTransformerConfig {
    // embedding 8, 6 text tokens, 2 heads x 4, 1 layer
    PriorTransformerConfig::tiny(8, 6, 2, 4, 1)
}

fn synthetic(device: &Device, b: usize) -> (PriorBatch, PriorConditioning) {
    let c = tiny();
    let text = Tensor::<2>::random([b, c.embedding_dim], Distribution::Normal(0.0, 1.0), device);
    let tokens = Tensor::<3>::random(
        [b, c.num_embeddings, c.embedding_dim],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    // Image embedding: a fixed function of the text embedding.
    let w = Tensor::<2>::random(
        [c.embedding_dim, c.embedding_dim],
        Distribution::Normal(0.0, 0.5),
        device,
    );
    let image = text.clone().matmul(w).tanh();
    let mut mask = vec![true; b * c.num_embeddings];
    for (i, m) in mask.iter_mut().enumerate() {
        *m = (i % c.num_embeddings) < 2 + (i / c.num_embeddings) % 4;
    }
    let mask = Tensor::<2, burn::tensor::Bool>::from_data(
        burn::tensor::TensorData::new(mask, [b, c.num_embeddings]),
        device,
    );
    let cond = PriorConditioning {
        proj_embedding: text,
        encoder_hidden_states: Some(tokens),
        attention_mask: Some(mask),
    };
    let mut um = vec![false; c.num_embeddings];
    um[0] = true;
    um[1] = true;
    let uncond = PriorConditioning {
        proj_embedding: Tensor::zeros([1, c.embedding_dim], device),
        encoder_hidden_states: Some(Tensor::zeros(
            [1, c.num_embeddings, c.embedding_dim],
            device,
        )),
        attention_mask: Some(Tensor::from_data(
            burn::tensor::TensorData::new(um, [1, c.num_embeddings]),
            device,
        )),
    };
    (
        PriorBatch {
            image_embeddings: image,
            cond,
        },
        uncond,
    )
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn loss_falls_and_checkpoint_reloads() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    Device::flex().seed(7);
    let (batch, uncond) = synthetic(&plain, 16);
    let model = PriorTransformer::new_random(&tiny(), &device).unwrap();
    let config = TrainConfig {
        learning_rate: 3e-3,
        ema_decay: Some(0.9),
        seed: 11,
        ..TrainConfig::default()
    };
    let mut trainer = PriorTrainer::new(model, uncond.clone(), config, &device).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        losses.push(trainer.train_step(&batch).unwrap());
    }
    let head: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let tail: f32 = losses[50..].iter().sum::<f32>() / 10.0;
    println!("loss: first 10 steps {head:.4}, last 10 steps {tail:.4}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(tail < 0.7 * head, "loss did not fall: {head} -> {tail}");

    // Save, reload through the public loader, compare outputs.
    let dir =
        TempDir(std::env::temp_dir().join(format!("unclip-prior-train-{}", std::process::id())));
    trainer.save_checkpoint(&dir.0).unwrap();
    let reloaded = PriorTransformer::from_pretrained(&dir.0, &plain).unwrap();
    let ema = trainer.inference_model();
    let x = Tensor::<2>::random([4, 8], Distribution::Normal(0.0, 1.0), &plain);
    let t = Tensor::<1>::from_floats([10.0, 200.0, 500.0, 999.0], &plain);
    let cond = batch.cond.rows(0, 4).unwrap();
    let a = to_vec(ema.forward(x.clone(), t.clone(), &cond).unwrap());
    let b = to_vec(reloaded.forward(x.clone(), t.clone(), &cond).unwrap());
    unclip_testkit::assert_close_slice("reloaded EMA prior", &b, &a, 1e-6);
    // The online weights reload too, and resuming keeps the step count.
    let resumed = PriorTrainer::resume(&dir.0, uncond, &device).unwrap();
    assert_eq!(resumed.step, 60);
    let online = trainer.model.valid();
    let c = to_vec(online.forward(x.clone(), t.clone(), &cond).unwrap());
    let d = to_vec(resumed.model.valid().forward(x, t, &cond).unwrap());
    unclip_testkit::assert_close_slice("resumed online prior", &d, &c, 1e-6);
}
