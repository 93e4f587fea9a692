//! The decoder training loop on a small synthetic set (coloured squares with fixed random CLIP
//! embeddings): the hybrid loss falls, the checkpoint it writes reloads through
//! `UNet2DConditionModel::from_pretrained` / `UnCLIPTextProjModel::from_pretrained` with
//! identical outputs, and resuming restores the step and the weights.

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use unclip_decoder::train::{DecoderBatch, DecoderTrainConfig, DecoderTrainer};
use unclip_decoder::{
    DecoderError, TextConditioning, TextProjConfig, UNet2DConditionConfig, UNet2DConditionModel,
    UnCLIPTextProjModel,
};
use unclip_diffusion::{BetaSchedule, NoiseSchedule, NoiseSource, TrainSchedule};
use unclip_testkit::to_vec;

const E: usize = 8; // CLIP embedding width
const L: usize = 4; // text tokens
const S: usize = 8; // image side
const N: usize = 8; // images

fn unet_config() -> UNet2DConditionConfig {
    serde_json::from_value(serde_json::json!({
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [16, 32],
        "class_embed_type": "identity",
        "cross_attention_dim": 16,
        "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        "in_channels": 3,
        "layers_per_block": 1,
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "norm_num_groups": 8,
        "out_channels": 6,
        "resnet_time_scale_shift": "scale_shift",
        "sample_size": S,
        "up_block_types": ["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"]
    }))
    .expect("config")
}

fn text_proj_config() -> TextProjConfig {
    TextProjConfig {
        clip_extra_context_tokens: 2,
        clip_embeddings_dim: E,
        time_embed_dim: 64,
        cross_attention_dim: 16,
    }
}

/// Eight 8x8 images: a square of one colour on a background of another, in [-1, 1].
fn images(device: &Device) -> Tensor<4> {
    let palette = [
        [1.0, -1.0, -1.0],
        [-1.0, 1.0, -1.0],
        [-1.0, -1.0, 1.0],
        [1.0, 1.0, -1.0],
        [-1.0, 1.0, 1.0],
        [1.0, -1.0, 1.0],
        [0.6, 0.6, 0.6],
        [-0.6, -0.6, -0.6],
    ];
    let mut v = vec![0f32; N * 3 * S * S];
    for i in 0..N {
        let bg = palette[i];
        let fg = palette[(i + 3) % N];
        let (y0, x0) = (i % 3, (i / 3) % 3 + 1);
        for c in 0..3 {
            for y in 0..S {
                for x in 0..S {
                    let inside = (y0..y0 + 4).contains(&y) && (x0..x0 + 4).contains(&x);
                    v[((i * 3 + c) * S + y) * S + x] = if inside { fg[c] } else { bg[c] };
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [N, 3, S, S]), device)
}

fn host_randn<const D: usize>(seed: u64, shape: [usize; D], device: &Device) -> Tensor<D> {
    unclip_diffusion::SeededNoise::new(seed)
        .randn(shape, device)
        .expect("noise")
}

fn batch(device: &Device) -> DecoderBatch {
    let mut mask = vec![false; N * L];
    for i in 0..N {
        for j in 0..(1 + i % L) {
            mask[i * L + j] = true;
        }
    }
    DecoderBatch {
        images: images(device),
        image_embeddings: host_randn(1, [N, E], device),
        text: TextConditioning {
            prompt_embeds: host_randn(2, [N, E], device),
            hidden_states: host_randn(3, [N, L, E], device),
            mask: Tensor::<2, Bool>::from_data(TensorData::new(mask, [N, L]), device),
        },
        pixel_weights: None,
    }
}

fn uncond(device: &Device) -> TextConditioning {
    let mut m = vec![false; L];
    m[0] = true;
    TextConditioning {
        prompt_embeds: Tensor::zeros([1, E], device),
        hidden_states: Tensor::zeros([1, L, E], device),
        mask: Tensor::<2, Bool>::from_data(TensorData::new(m, [1, L]), device),
    }
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// UNet output of `(text_proj, unet)` on fixed inputs: `[4, 6, S, S]` flattened.
fn outputs(
    text_proj: &UnCLIPTextProjModel,
    unet: &UNet2DConditionModel,
    device: &Device,
) -> Vec<f32> {
    let b = batch(device);
    let cond = text_proj
        .forward(
            b.image_embeddings.narrow(0, 0, 4),
            b.text.prompt_embeds.narrow(0, 0, 4),
            b.text.hidden_states.narrow(0, 0, 4),
            false,
        )
        .expect("text_proj");
    let mask = text_proj.extend_attention_mask(b.text.mask.narrow(0, 0, 4));
    let x = host_randn(9, [4, 3, S, S], device);
    let t = Tensor::<1>::from_floats([0.0, 10.0, 500.0, 999.0], device);
    to_vec(
        unet.forward(
            x,
            t,
            cond.encoder_hidden_states,
            Some(cond.additive_clip_time_embeddings),
            Some(mask),
        )
        .expect("unet"),
    )
}

#[test]
fn loss_falls_checkpoint_reloads_and_resumes() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    Device::flex().seed(5);
    let data = batch(&plain);
    let unet = UNet2DConditionModel::new(&unet_config(), &plain).expect("unet");
    let text_proj = UnCLIPTextProjModel::new(&text_proj_config(), &plain);
    let config = DecoderTrainConfig {
        learning_rate: 2e-3,
        ema_decay: Some(0.9),
        seed: 17,
        ..DecoderTrainConfig::default()
    };
    let mut trainer =
        DecoderTrainer::new(text_proj, unet, uncond(&plain), config, &device).expect("trainer");
    let steps = 60;
    let mut losses = Vec::new();
    let mut mses = Vec::new();
    for _ in 0..steps {
        let l = trainer.train_step(&data).expect("step");
        losses.push(l.loss);
        mses.push(l.mse);
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (head, tail) = (mean(&losses[..10]), mean(&losses[steps - 10..]));
    let (mhead, mtail) = (mean(&mses[..10]), mean(&mses[steps - 10..]));
    println!(
        "hybrid loss: first 10 steps {head:.4}, last 10 steps {tail:.4} (ratio {:.3}); \
         eps mse: {mhead:.4} -> {mtail:.4} (ratio {:.3})",
        tail / head,
        mtail / mhead
    );
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(tail < 0.7 * head, "loss did not fall: {head} -> {tail}");
    assert_eq!(trainer.step, steps as u64);

    // Save, reload through the public loaders, compare outputs with the EMA models.
    let dir =
        TempDir(std::env::temp_dir().join(format!("unclip-decoder-train-{}", std::process::id())));
    trainer.save_checkpoint(&dir.0).expect("save");
    for f in [
        "trainer_state.json",
        "decoder/config.json",
        "decoder/diffusion_pytorch_model.safetensors",
        "text_proj/config.json",
        "text_proj/diffusion_pytorch_model.safetensors",
        "online/decoder/diffusion_pytorch_model.safetensors",
        "online/text_proj/diffusion_pytorch_model.safetensors",
    ] {
        assert!(dir.0.join(f).is_file(), "{f} written");
    }
    // diffusers key names in the file.
    let ckpt =
        unclip_nn::Checkpoint::open(dir.0.join("decoder/diffusion_pytorch_model.safetensors"))
            .expect("open");
    assert!(
        ckpt.keys().iter().any(|k| k.ends_with(".to_out.0.weight")),
        "attention output keys in diffusers' spelling"
    );
    let ema = trainer.inference_models();
    let unet_r =
        UNet2DConditionModel::from_pretrained(dir.0.join("decoder"), &plain).expect("unet");
    let tp_r =
        UnCLIPTextProjModel::from_pretrained(dir.0.join("text_proj"), &plain).expect("text_proj");
    let a = outputs(&ema.text_proj, &ema.unet, &plain);
    let b = outputs(&tp_r, &unet_r, &plain);
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, b, "reloaded EMA models give identical outputs");

    // Resume: step and online weights restored; training continues.
    let mut resumed = DecoderTrainer::resume(&dir.0, uncond(&plain), &device).expect("resume");
    assert_eq!(resumed.step, steps as u64);
    let online = trainer.models.valid();
    let resumed_online = resumed.models.valid();
    assert_eq!(
        outputs(&online.text_proj, &online.unet, &plain),
        outputs(&resumed_online.text_proj, &resumed_online.unet, &plain)
    );
    let ema_r = resumed.inference_models();
    assert_eq!(a, outputs(&ema_r.text_proj, &ema_r.unet, &plain));
    let l = resumed.train_step(&data).expect("step after resume");
    assert!(l.loss.is_finite());
    assert_eq!(resumed.step, steps as u64 + 1);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let unet = UNet2DConditionModel::new(&unet_config(), &plain).expect("unet");
    let text_proj = UnCLIPTextProjModel::new(&text_proj_config(), &plain);
    // Dropout probability out of range.
    let r = DecoderTrainer::new(
        text_proj.clone(),
        unet.clone(),
        uncond(&plain),
        DecoderTrainConfig {
            caption_drop_prob: 1.5,
            ..DecoderTrainConfig::default()
        },
        &device,
    );
    assert!(
        matches!(r, Err(DecoderError::InvalidArgument { .. })),
        "{r:?}"
    );
    // Timestep range and high-noise fraction out of range.
    for config in [
        DecoderTrainConfig {
            min_timestep: 1000,
            ..DecoderTrainConfig::default()
        },
        DecoderTrainConfig {
            high_noise_fraction: -0.1,
            ..DecoderTrainConfig::default()
        },
        DecoderTrainConfig {
            schedule: TrainSchedule::Linear {
                beta_start: 0.02,
                beta_end: 1e-4,
            },
            ..DecoderTrainConfig::default()
        },
    ] {
        let r = DecoderTrainer::new(
            text_proj.clone(),
            unet.clone(),
            uncond(&plain),
            config,
            &device,
        );
        assert!(
            matches!(r, Err(DecoderError::InvalidArgument { .. })),
            "{r:?}"
        );
    }
    // Two-row empty prompt.
    let u2 = TextConditioning {
        prompt_embeds: Tensor::zeros([2, E], &plain),
        hidden_states: Tensor::zeros([2, L, E], &plain),
        mask: Tensor::<2, Bool>::full([2, L], true, &plain),
    };
    let r = DecoderTrainer::new(
        text_proj.clone(),
        unet.clone(),
        u2,
        DecoderTrainConfig::default(),
        &device,
    );
    assert!(matches!(r, Err(DecoderError::InputShape { .. })), "{r:?}");
    // Batch with mismatched embedding rows.
    let mut trainer = DecoderTrainer::new(
        text_proj,
        unet,
        uncond(&plain),
        DecoderTrainConfig::default(),
        &device,
    )
    .expect("trainer");
    let mut b = batch(&plain);
    b.image_embeddings = b.image_embeddings.narrow(0, 0, 3);
    let r = trainer.train_step(&b);
    assert!(matches!(r, Err(DecoderError::InputShape { .. })), "{r:?}");
    // Missing checkpoint folder.
    let r = DecoderTrainer::resume("/nonexistent/unclip-decoder-ckpt", uncond(&plain), &device);
    assert!(matches!(r, Err(DecoderError::Load(_))), "{r:?}");
}

/// The configured betas reach the training (and exported sampling) schedule; a state file written
/// before `schedule` existed reads as Karlo's cosine schedule.
#[test]
fn schedule_reaches_the_scheduler_config() {
    let linear = DecoderTrainConfig {
        schedule: TrainSchedule::Linear {
            beta_start: 2e-4,
            beta_end: 0.03,
        },
        ..DecoderTrainConfig::default()
    };
    let s = DecoderTrainer::scheduler_config(&linear);
    assert_eq!(s.beta_schedule, BetaSchedule::Linear);
    assert_eq!((s.beta_start, s.beta_end), (2e-4, 0.03));
    let schedule = NoiseSchedule::from_config(&s);
    let betas = schedule.betas();
    assert!(
        (betas[0] - 2e-4).abs() < 1e-9 && (betas[999] - 0.03).abs() < 1e-7,
        "{:?}",
        (betas[0], betas[999])
    );

    let mut json = serde_json::to_value(DecoderTrainConfig::default()).expect("json");
    json.as_object_mut().expect("object").remove("schedule");
    let old: DecoderTrainConfig = serde_json::from_value(json).expect("old state");
    assert_eq!(old.schedule, TrainSchedule::SquaredcosCapV2);
    assert_eq!(
        DecoderTrainer::scheduler_config(&old).beta_schedule,
        BetaSchedule::SquaredcosCapV2
    );
}

/// An x_0-prediction decoder trained on near-pure noise (t >= 990, where x_t carries no
/// information) can only lower its loss through the conditioning: afterwards its x_0 at t = 999 is
/// closer to the image with the image's own embedding than with another row's.
#[test]
fn high_noise_x0_training_learns_to_use_the_conditioning() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    plain.seed(11);
    let unet = UNet2DConditionModel::new(&unet_config(), &plain).expect("unet");
    let text_proj = UnCLIPTextProjModel::new(&text_proj_config(), &plain);
    let config = DecoderTrainConfig {
        learning_rate: 3e-3,
        ema_decay: None,
        image_embedding_drop_prob: 0.0,
        caption_drop_prob: 0.0,
        prediction_type: unclip_diffusion::PredictionType::Sample,
        min_timestep: 990,
        seed: 4,
        ..DecoderTrainConfig::default()
    };
    let mut trainer =
        DecoderTrainer::new(text_proj, unet, uncond(&plain), config, &device).expect("trainer");
    let data = batch(&plain);
    for _ in 0..80 {
        trainer.train_step(&data).expect("step");
    }
    let m = trainer.inference_models();
    let x0_error = |emb: Tensor<2>, text: &TextConditioning| -> f32 {
        let c = m
            .text_proj
            .forward(
                emb,
                text.prompt_embeds.clone(),
                text.hidden_states.clone(),
                false,
            )
            .expect("text_proj");
        let mask = m.text_proj.extend_attention_mask(text.mask.clone());
        let x_t = host_randn(9, [N, 3, S, S], &plain); // t = 999: x_t is noise
        let out = m
            .unet
            .forward(
                x_t,
                Tensor::<1>::from_floats([999.0; N], &plain),
                c.encoder_hidden_states,
                Some(c.additive_clip_time_embeddings),
                Some(mask),
            )
            .expect("unet");
        let x0 = out.narrow(1, 0, 3);
        (x0 - data.images.clone())
            .powi_scalar(2)
            .mean()
            .into_scalar::<f32>()
    };
    let roll2 = |t: Tensor<2>| Tensor::cat(vec![t.clone().slice([1..N]), t.slice([0..1])], 0);
    let roll3 = |t: Tensor<3>| Tensor::cat(vec![t.clone().slice([1..N]), t.slice([0..1])], 0);
    let right = x0_error(data.image_embeddings.clone(), &data.text);
    let rolled_text = TextConditioning {
        prompt_embeds: roll2(data.text.prompt_embeds.clone()),
        hidden_states: roll3(data.text.hidden_states.clone()),
        mask: data.text.mask.clone(),
    };
    let rolled = x0_error(roll2(data.image_embeddings.clone()), &rolled_text);
    println!("x_0 MSE at t = 999: right conditioning {right:.4}, rolled {rolled:.4}");
    assert!(right < 0.5 * rolled, "right {right} vs rolled {rolled}");
}

/// `DecoderBatch::pixel_weights`: uniform weights give the same loss as none (same seed, so the
/// same timesteps, noise and dropout), weights on part of the image give another loss, and a
/// map with the wrong shape is a typed error naming it.
#[test]
fn pixel_weights_reach_the_loss() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    Device::flex().seed(7);
    let unet = UNet2DConditionModel::new(&unet_config(), &plain).expect("unet");
    let text_proj = UnCLIPTextProjModel::new(&text_proj_config(), &plain);
    let config = DecoderTrainConfig {
        seed: 3,
        ..DecoderTrainConfig::default()
    };
    let loss_of = |weights: Option<Tensor<4>>| {
        let mut trainer = DecoderTrainer::new(
            text_proj.clone(),
            unet.clone(),
            uncond(&plain),
            config.clone(),
            &device,
        )
        .expect("trainer");
        let mut b = batch(&plain);
        b.pixel_weights = weights;
        trainer.loss(&b).map(|t| t.mse.into_scalar::<f32>())
    };
    let none = loss_of(None).expect("plain loss");
    let uniform = loss_of(Some(Tensor::full([N, 1, S, S], 3.0, &plain))).expect("uniform");
    assert!((none - uniform).abs() <= 1e-5 * none, "{none} vs {uniform}");
    // Weight only the top half of every image.
    let mut half = vec![0f32; N * S * S];
    for i in 0..N {
        half[i * S * S..i * S * S + S * S / 2].fill(1.0);
    }
    let top = loss_of(Some(Tensor::from_data(
        TensorData::new(half, [N, 1, S, S]),
        &plain,
    )))
    .expect("top half");
    assert!(
        top.is_finite() && (top - none).abs() > 1e-4 * none,
        "{top} vs {none}"
    );
    let r = loss_of(Some(Tensor::ones([N, 3, S, S], &plain)));
    let msg = format!("{:?}", r.expect_err("three-channel weights"));
    assert!(msg.contains("pixel_weights"), "{msg}");
}

/// `max_timestep`: `Some(T)` is the default, a lower bound changes the drawn timesteps (so the
/// loss), and a bound at or below `min_timestep` or above `T` is a typed error at the step.
#[test]
fn max_timestep_bounds_the_training_timesteps() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    Device::flex().seed(8);
    let unet = UNet2DConditionModel::new(&unet_config(), &plain).expect("unet");
    let text_proj = UnCLIPTextProjModel::new(&text_proj_config(), &plain);
    let loss_of = |max_timestep: Option<usize>, min_timestep: usize| {
        let config = DecoderTrainConfig {
            seed: 4,
            max_timestep,
            min_timestep,
            ..DecoderTrainConfig::default()
        };
        let mut trainer = DecoderTrainer::new(
            text_proj.clone(),
            unet.clone(),
            uncond(&plain),
            config,
            &device,
        )
        .expect("trainer");
        trainer
            .loss(&batch(&plain))
            .map(|t| t.mse.into_scalar::<f32>())
    };
    let t = DecoderTrainConfig::default().num_train_timesteps;
    let all = loss_of(None, 0).expect("default");
    assert_eq!(loss_of(Some(t), 0).expect("Some(T)"), all);
    let low = loss_of(Some(10), 0).expect("t < 10");
    assert!(low.is_finite() && low != all, "{low} vs {all}");
    for (max, min) in [(Some(t + 1), 0), (Some(5), 5), (Some(0), 0)] {
        let r = loss_of(max, min);
        assert!(
            matches!(r, Err(DecoderError::InvalidArgument { ref name, .. }) if name == "max_timestep"),
            "{max:?} / {min}: {r:?}"
        );
    }
}

/// Counts the float parameters of a module and those that autodiff tracks.
struct Tracked {
    total: usize,
    tracked: usize,
}

impl burn::module::ModuleVisitor for Tracked {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        self.total += 1;
        if param.val().is_require_grad() {
            self.tracked += 1;
        }
    }
}

fn tracked(models: &unclip_decoder::train::DecoderModels) -> (usize, usize) {
    let mut v = Tracked {
        total: 0,
        tracked: 0,
    };
    models.text_proj.visit(&mut v);
    models.unet.visit(&mut v);
    (v.tracked, v.total)
}

/// Every parameter is trained, whichever way the weights arrived: freshly initialised, loaded
/// from a diffusers folder (`continue_from`), resumed from a checkpoint, and after weights were
/// edited with `Param::map` on the plain device (as a target switch does).
#[test]
fn every_parameter_is_trained_however_the_weights_arrived() {
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    Device::flex().seed(6);
    let unet = UNet2DConditionModel::new(&unet_config(), &plain).expect("unet");
    let text_proj = UnCLIPTextProjModel::new(&text_proj_config(), &plain);
    let config = DecoderTrainConfig {
        ema_decay: Some(0.9),
        ..DecoderTrainConfig::default()
    };
    let mut fresh = DecoderTrainer::new(
        text_proj.clone(),
        unet.clone(),
        uncond(&plain),
        config.clone(),
        &device,
    )
    .expect("trainer");
    let (t, n) = tracked(&fresh.models);
    assert_eq!(t, n, "fresh: {t} of {n} parameters tracked");
    fresh.train_step(&batch(&plain)).expect("step");

    let dir = TempDir(
        std::env::temp_dir().join(format!("unclip-decoder-tracked-{}", std::process::id())),
    );
    fresh.save_checkpoint(&dir.0).expect("save");
    let resumed = DecoderTrainer::resume(&dir.0, uncond(&plain), &device).expect("resume");
    let (t, n) = tracked(&resumed.models);
    assert_eq!(t, n, "resumed: {t} of {n} parameters tracked");

    let loaded_unet =
        UNet2DConditionModel::from_pretrained(dir.0.join("decoder"), &plain).expect("unet");
    let loaded_tp =
        UnCLIPTextProjModel::from_pretrained(dir.0.join("text_proj"), &plain).expect("text_proj");
    // An edit on the plain device, as `Param::map` makes it.
    let mut edited_unet = loaded_unet.clone();
    edited_unet.conv_out.weight = edited_unet.conv_out.weight.map(|w| w.neg());
    let ema = Some((loaded_tp.clone(), loaded_unet));
    let continued = DecoderTrainer::continue_from(
        loaded_tp,
        edited_unet,
        ema,
        uncond(&plain),
        config,
        5,
        &device,
    )
    .expect("continue");
    let (t, n) = tracked(&continued.models);
    assert_eq!(
        t, n,
        "continued after an edit: {t} of {n} parameters tracked"
    );
}

/// Resumable training (unclip_nn::CheckpointStore): N steps straight and N/2 + checkpoint +
/// drop + resume + N/2 end in the same weights, EMA, AdamW state and random stream bit for bit;
/// a save killed at every file boundary leaves the previous checkpoint, which resumes; a
/// damaged checkpoint or another config is a typed error.
#[test]
fn resume_is_bit_exact_and_saves_survive_kills() {
    use unclip_nn::train_checkpoint::testing;
    use unclip_nn::{CheckpointStore, LoadError, TrainCheckpointError};
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let data = batch(&plain);
    plain.seed(5);
    let unet = UNet2DConditionModel::new(&unet_config(), &plain).expect("unet");
    let text_proj = UnCLIPTextProjModel::new(&text_proj_config(), &plain);
    let config = DecoderTrainConfig {
        learning_rate: 2e-3,
        ema_decay: Some(0.9),
        seed: 17,
        max_grad_norm: Some(1.0),
        ..DecoderTrainConfig::default()
    };
    let n = 4;
    let dir =
        TempDir(std::env::temp_dir().join(format!("unclip-decoder-resume-{}", std::process::id())));
    let (mut resumed, store) = testing::check_bit_exact_resume(
        &dir.0,
        n,
        || {
            DecoderTrainer::new(
                text_proj.clone(),
                unet.clone(),
                uncond(&plain),
                config.clone(),
                &device,
            )
            .expect("trainer")
        },
        |s| DecoderTrainer::resume_state(s, uncond(&plain), Some(&config), &device),
        |_| Ok(data.clone()),
        |step| Some(2e-3 / (1.0 + step as f64)),
    )
    .unwrap();

    resumed.train_step(&data).expect("step");
    let resume_step = |s: &CheckpointStore| {
        DecoderTrainer::resume_state(s, uncond(&plain), Some(&config), &device)
            .map(|t| t.map(|t| t.step))
    };
    testing::check_interrupted_saves(&store, |s| resumed.save_state(s), resume_step, n).unwrap();
    testing::check_damaged_checkpoint(&store, resume_step, |e| {
        matches!(e, DecoderError::Load(LoadError::TrainCheckpoint(_)))
    })
    .unwrap();
    let other = DecoderTrainConfig {
        caption_drop_prob: 0.25,
        ..config.clone()
    };
    match DecoderTrainer::resume_state(&store, uncond(&plain), Some(&other), &device) {
        Err(DecoderError::Load(LoadError::TrainCheckpoint(
            TrainCheckpointError::ConfigMismatch { field, .. },
        ))) => assert_eq!(field, "train.caption_drop_prob"),
        other => panic!("expected a config mismatch, got {other:?}"),
    }
}
