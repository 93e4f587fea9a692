//! DDIM inversion round trip, loss correctness and a few optimiser steps on the hybrid loss.

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use unclip_diffusion::loss::{mse, vlb_terms};
use unclip_diffusion::{
    DiffusionError, HybridLossConfig, LossWeighting, NoiseSchedule, NoiseSource, PredictionType,
    ReplayNoise, Sampler, SchedulerConfig, SeededNoise, T0Likelihood, TrainingObjective,
    UnCLIPScheduler, VarianceType,
};
use unclip_testkit::{test_device, to_vec};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Data `x0 ~ N(0, sigma^2)` elementwise has the exact optimal eps predictor
/// `E[eps | x_t] = sqrt(1-a) x_t / (a sigma^2 + 1 - a)`; the probability-flow ODE scales
/// `x0` by `sqrt(a sigma^2 + 1 - a) / sigma`. DDIM inversion must follow that map, and DDIM
/// sampling (eta 0) must come back to `x0`.
#[test]
fn ddim_inversion_round_trips_with_an_oracle_model() {
    let device = test_device();
    let sigma = 0.5f32;
    let config = SchedulerConfig {
        clip_sample: false,
        ..Default::default()
    };
    let mut sched = UnCLIPScheduler::new(config);
    sched.set_timesteps(500).unwrap();
    let ac = sched.schedule().alphas_cumprod().to_vec();
    let model = |x: Tensor<4>, t: usize| {
        let a = ac[t];
        Ok(x.mul_scalar((1.0 - a).sqrt() / (a * sigma * sigma + 1.0 - a)))
    };

    // x0: [2, 3, 8, 8]
    let x0 = SeededNoise::new(11)
        .randn([2, 3, 8, 8], &device)
        .unwrap()
        .mul_scalar(sigma);
    let x0_host = to_vec(x0.clone());
    let ts = sched.timesteps().to_vec();
    let x_t = sched
        .ddim_invert::<4, DiffusionError, _>(x0.clone(), &ts, model)
        .unwrap();

    let a_t = ac[ts[0]];
    let scale = (a_t * sigma * sigma + 1.0 - a_t).sqrt() / sigma;
    let expected: Vec<f32> = x0_host.iter().map(|v| v * scale).collect();
    let inv_err = max_abs_diff(&to_vec(x_t.clone()), &expected);
    println!("inversion: max |x_T - flow(x0)| = {inv_err:.3e} (|x_T| ~ {scale:.2} |x0|)");
    assert!(inv_err < 2e-2, "inversion error {inv_err}");

    let mut no_noise = ReplayNoise::new(); // eta = 0 must draw nothing
    let x = sched
        .denoise::<4, DiffusionError, _, _>(x_t, Sampler::Ddim { eta: 0.0 }, &mut no_noise, model)
        .unwrap();
    // DDIM's discretisation error is first order in the step size (~2.6e-2 at N = 100).
    let err = max_abs_diff(&to_vec(x), &x0_host);
    println!("round trip: max |x0' - x0| = {err:.3e}");
    assert!(err < 1e-2, "round-trip error {err}");
}

/// A model that knows x0 (x0-prediction): DDIM sampling returns x0 from any x_T, and the
/// inversion lands on sqrt(a_T) x0 + sqrt(1 - a_T) eps for the eps implied at each step.
#[test]
fn ddim_with_x0_oracle_and_eta_noise() {
    let device = test_device();
    let config = SchedulerConfig {
        clip_sample: false,
        prediction_type: PredictionType::Sample,
        ..Default::default()
    };
    let mut sched = UnCLIPScheduler::new(config);
    sched.set_timesteps(10).unwrap();
    let x0 = SeededNoise::new(3).randn([4, 6], &device).unwrap();
    let x0_host = to_vec(x0.clone());
    let x_t = sched
        .ddim_invert::<2, DiffusionError, _>(x0.clone(), sched.timesteps(), |_, _| Ok(x0.clone()))
        .unwrap();
    let mut noise = SeededNoise::new(4);
    for eta in [0.0f32, 1.0] {
        let mut x = x_t.clone();
        for (t, prev) in sched.timestep_pairs() {
            x = sched
                .ddim_step(x0.clone(), t, x, prev, eta, &mut noise)
                .unwrap()
                .prev_sample;
        }
        let err = max_abs_diff(&to_vec(x), &x0_host);
        assert!(err < 1e-4, "eta {eta}: error {err}");
    }
    assert!(
        sched
            .ddim_step(x0.clone(), 10, x0.clone(), None, -1.0, &mut noise)
            .is_err()
    );
}

#[test]
fn conversions_between_eps_x0_and_v_are_consistent() {
    let device = test_device();
    let schedule = NoiseSchedule::from_config(&SchedulerConfig::default());
    let mut rng = SeededNoise::new(9);
    let x0 = rng.randn([3, 2, 4, 4], &device).unwrap();
    let eps = rng.randn([3, 2, 4, 4], &device).unwrap();
    let ts = [0usize, 500, 998];
    let x_t = schedule.q_sample(x0.clone(), eps.clone(), &ts).unwrap();
    for pt in [
        PredictionType::Epsilon,
        PredictionType::Sample,
        PredictionType::VPrediction,
    ] {
        let target = schedule.target(pt, x0.clone(), eps.clone(), &ts).unwrap();
        let (x0_back, eps_back) = schedule.to_x0_eps(pt, target, x_t.clone(), &ts).unwrap();
        // x0 from eps at t=998 amplifies rounding by 1/sqrt(a) (~ 150): compare loosely there.
        assert!(
            max_abs_diff(&to_vec(x0_back), &to_vec(x0.clone())) < 2e-3,
            "{pt:?} x0"
        );
        assert!(
            max_abs_diff(&to_vec(eps_back), &to_vec(eps.clone())) < 2e-3,
            "{pt:?} eps"
        );
    }
    assert!(schedule.q_sample(x0.clone(), eps.clone(), &[0, 1]).is_err());
    assert!(schedule.q_sample(x0, eps, &[0, 1, 1000]).is_err());
}

/// With the true eps and the variance channel at -1 (model variance = posterior variance), the
/// KL terms vanish; the t = 0 term is the (positive) discretized NLL.
#[test]
fn vlb_is_zero_for_the_true_posterior() {
    let device = test_device();
    let schedule = NoiseSchedule::from_config(&SchedulerConfig::default());
    let mut rng = SeededNoise::new(1);
    let x0 = rng
        .randn([4, 3, 4, 4], &device)
        .unwrap()
        .mul_scalar(0.3)
        .clamp(-1.0, 1.0);
    let eps = rng.randn([4, 3, 4, 4], &device).unwrap();
    let ts = [0usize, 1, 300, 900];
    let x_t = schedule.q_sample(x0.clone(), eps.clone(), &ts).unwrap();
    let v = Tensor::<4>::ones([4, 3, 4, 4], &device).neg();
    let terms = to_vec(
        vlb_terms(
            &schedule,
            PredictionType::Epsilon,
            eps,
            v,
            x0,
            x_t,
            &ts,
            T0Likelihood::DiscretizedGaussian,
        )
        .unwrap(),
    );
    println!("vlb terms {terms:?}");
    assert!(terms[0] > 0.0 && terms[0].is_finite());
    for &kl in &terms[1..] {
        assert!(kl.abs() < 1e-3, "KL {kl}");
    }
}

/// The VLB term trains only the variance channels: its gradient w.r.t. the eps channels is 0.
#[test]
fn vlb_gradient_is_stopped_through_the_mean() {
    let device = Device::flex().autodiff();
    let cfg = SchedulerConfig {
        variance_type: VarianceType::LearnedRange,
        ..Default::default()
    };
    let objective = TrainingObjective::new(&cfg);
    let mut rng = SeededNoise::new(2);
    let x0 = rng.randn([4, 2, 3, 3], &device).unwrap().clamp(-1.0, 1.0);
    let noise = rng.randn([4, 2, 3, 3], &device).unwrap();
    let ts = [0usize, 10, 500, 999];
    let x_t = objective
        .noisy_input(x0.clone(), noise.clone(), &ts)
        .unwrap();
    let out = rng
        .randn([4, 4, 3, 3], &device)
        .unwrap()
        .mul_scalar(0.5)
        .require_grad();
    let terms = objective.loss(out.clone(), x0, noise, x_t, &ts).unwrap();
    let grads = terms.vlb.expect("learned range has a VLB").backward();
    let g = out.grad(&grads).expect("gradient of the model output");
    let g_eps = to_vec(g.clone().narrow(1, 0, 2));
    let g_var = to_vec(g.narrow(1, 2, 2));
    assert!(
        g_eps.iter().all(|&v| v == 0.0),
        "eps channels get VLB gradient"
    );
    assert!(g_var.iter().any(|&v| v != 0.0) && g_var.iter().all(|v| v.is_finite()));
}

#[derive(Module, Debug)]
struct TinyDenoiser {
    lin: unclip_nn::Linear,
}

impl TinyDenoiser {
    /// `x_t: [B, C]`, `t_feat: [B, 1]` -> `[B, 2C]` (eps + variance values)
    fn forward(&self, x_t: Tensor<2>, t_feat: Tensor<2>) -> Tensor<2> {
        self.lin.forward(Tensor::cat(vec![x_t, t_feat], 1))
    }
}

#[test]
fn hybrid_loss_decreases_under_adam() {
    let device = Device::flex().autodiff();
    let (b, c) = (16usize, 4usize);
    let cfg = SchedulerConfig {
        variance_type: VarianceType::LearnedRange,
        ..Default::default()
    };
    let objective = TrainingObjective::new(&cfg).with_hybrid(HybridLossConfig::default());
    let mut rng = SeededNoise::new(5);
    let x0 = rng
        .randn([b, c], &device)
        .unwrap()
        .mul_scalar(0.4)
        .clamp(-1.0, 1.0);
    let noise = rng.randn([b, c], &device).unwrap();
    let mut ts = objective.sample_timesteps(rng.rng_mut(), b);
    ts[0] = 0; // exercise the t = 0 likelihood term
    let x_t = objective
        .noisy_input(x0.clone(), noise.clone(), &ts)
        .unwrap();
    let t_feat = Tensor::<2>::from_data(
        TensorData::new(
            ts.iter().map(|&t| t as f32 / 1000.0).collect::<Vec<_>>(),
            [b, 1],
        ),
        &device,
    );

    // seeded weights: the test is deterministic
    let weight = rng.randn([2 * c, c + 1], &device).unwrap().mul_scalar(0.3);
    let lin = unclip_nn::Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(Tensor::<1>::zeros([2 * c], &device))),
    };
    let mut model = TinyDenoiser { lin };
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..40 {
        let out = model.forward(x_t.clone(), t_feat.clone());
        let terms = objective
            .loss(out, x0.clone(), noise.clone(), x_t.clone(), &ts)
            .unwrap();
        let loss: f32 = to_vec(terms.loss.clone())[0];
        let vlb: f32 = to_vec(terms.vlb.clone().unwrap())[0];
        assert!(
            loss.is_finite() && vlb.is_finite(),
            "loss {loss}, vlb {vlb}"
        );
        losses.push(loss);
        let grads = GradientsParams::from_grads(terms.loss.backward(), &model);
        model = optim.step(2e-2, model, grads);
    }
    println!(
        "hybrid loss: first {:.4}, last {:.4}",
        losses[0],
        losses[losses.len() - 1]
    );
    assert!(losses[losses.len() - 1] < 0.8 * losses[0], "{losses:?}");

    // the simple loss alone (fixed variance) on the same data
    let simple = TrainingObjective::new(&SchedulerConfig::default());
    let pred = Tensor::<2>::zeros([b, c], &device);
    let terms = simple
        .loss(pred.clone(), x0.clone(), noise.clone(), x_t.clone(), &ts)
        .unwrap();
    assert!(terms.vlb.is_none());
    assert_eq!(to_vec(terms.loss), to_vec(mse(pred, noise.clone())));
    // wrong channel count is a typed error
    assert!(objective.loss(x0.clone(), x0, noise, x_t, &ts).is_err());
}

/// A `LossWeighting` is the weight of the x0 error: the same estimate of x0, expressed as the
/// eps, x0 or v output it corresponds to at `x_t`, gets the same weighted loss, equal to
/// `mean_b W(t_b) mean(|x0^_b - x0_b|^2)` computed here on the host.
#[test]
fn loss_weighting_is_the_same_x0_weight_for_every_target() {
    let device = test_device();
    let cfg = SchedulerConfig {
        variance_type: VarianceType::FixedSmallLog,
        ..Default::default()
    };
    let schedule = NoiseSchedule::from_config(&cfg);
    let mut rng = SeededNoise::new(21);
    let shape = [4, 2, 4, 4];
    let x0 = rng.randn(shape, &device).unwrap();
    let eps = rng.randn(shape, &device).unwrap();
    let delta = rng.randn(shape, &device).unwrap().mul_scalar(0.1);
    let ts = [3usize, 40, 300, 800];
    let x_t = schedule.q_sample(x0.clone(), eps.clone(), &ts).unwrap();
    // The model's x0 estimate and the eps it implies at x_t.
    let x0_hat = x0.clone() + delta.clone();
    let a: Vec<f32> = ts.iter().map(|&t| schedule.alpha_bar(t as i64)).collect();
    let per_row = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [4, 1, 1, 1]), &device);
    let sa = per_row(a.iter().map(|a| a.sqrt()).collect());
    let sb = per_row(a.iter().map(|a| (1.0 - a).sqrt()).collect());
    let eps_hat = (x_t.clone() - x0_hat.clone() * sa) / sb;

    // Host reference: per-row mean squared x0 error times W(t).
    let d = to_vec(delta);
    let n = d.len() / 4;
    let row_mse: Vec<f32> = (0..4)
        .map(|b| d[b * n..(b + 1) * n].iter().map(|v| v * v).sum::<f32>() / n as f32)
        .collect();
    let snr: Vec<f32> = a.iter().map(|a| a / (1.0 - a)).collect();
    let max_snr = 20.0;
    let expected: f32 = (0..4)
        .map(|b| (1.0 + snr[b].min(max_snr)) * row_mse[b])
        .sum::<f32>()
        / 4.0;
    let uniform_x0: f32 = row_mse.iter().sum::<f32>() / 4.0;
    // The timesteps span both sides of the cap and of SNR = 1, so the weights differ per row.
    assert!(snr[0] > max_snr && snr[1] > 1.0 && snr[3] < 1.0, "{snr:?}");

    for pt in [
        PredictionType::Sample,
        PredictionType::Epsilon,
        PredictionType::VPrediction,
    ] {
        let output = schedule
            .target(pt, x0_hat.clone(), eps_hat.clone(), &ts)
            .unwrap();
        let objective = TrainingObjective::new(&SchedulerConfig {
            prediction_type: pt,
            ..cfg.clone()
        })
        .with_weighting(LossWeighting::SnrPlusOne { max_snr })
        .unwrap();
        let got = objective
            .loss(output.clone(), x0.clone(), eps.clone(), x_t.clone(), &ts)
            .unwrap()
            .loss
            .into_scalar::<f32>();
        let rel = (got - expected).abs() / expected;
        println!("{pt:?}: weighted loss {got:.6}, expected {expected:.6} (rel {rel:.1e})");
        assert!(rel < 2e-3, "{pt:?}: {got} vs {expected}");

        // Uniform is the plain MSE of the target, whatever it is.
        let plain = TrainingObjective::new(&SchedulerConfig {
            prediction_type: pt,
            ..cfg.clone()
        });
        let target = schedule.target(pt, x0.clone(), eps.clone(), &ts).unwrap();
        let got = plain
            .loss(output.clone(), x0.clone(), eps.clone(), x_t.clone(), &ts)
            .unwrap()
            .loss
            .into_scalar::<f32>();
        let want = mse(output, target).into_scalar::<f32>();
        assert!((got - want).abs() <= 1e-6 * want.max(1.0), "{pt:?}");
    }
    // For x0 prediction, uniform is the host's unweighted mean.
    let got = TrainingObjective::new(&SchedulerConfig {
        prediction_type: PredictionType::Sample,
        ..cfg.clone()
    })
    .loss(x0_hat, x0, eps, x_t, &ts)
    .unwrap()
    .loss
    .into_scalar::<f32>();
    assert!((got - uniform_x0).abs() / uniform_x0 < 1e-4);
    assert!(
        TrainingObjective::new(&cfg)
            .with_weighting(LossWeighting::SnrPlusOne { max_snr: -1.0 })
            .is_err()
    );
}

/// Pixel weights: each sample's squared error is weighted per position (shared by the
/// channels) and normalised by the weights' sum, computed here on the host; uniform weights are
/// the plain loss, with and without a timestep weighting, and bad weights are typed errors.
#[test]
fn pixel_weights_weight_positions_and_normalise_per_sample() {
    let device = test_device();
    let cfg = SchedulerConfig {
        variance_type: VarianceType::FixedSmallLog,
        prediction_type: PredictionType::Sample,
        ..Default::default()
    };
    let objective = TrainingObjective::new(&cfg);
    let mut rng = SeededNoise::new(33);
    let (b, c, h, w) = (3usize, 2usize, 3usize, 4usize);
    let x0 = rng.randn([b, c, h, w], &device).unwrap();
    let eps = rng.randn([b, c, h, w], &device).unwrap();
    let pred = rng.randn([b, c, h, w], &device).unwrap();
    let ts = [5usize, 400, 900];
    let x_t = objective.noisy_input(x0.clone(), eps.clone(), &ts).unwrap();
    // Weights in 0..3, position-dependent and different per sample; one sample's weights
    // are zero except at one position.
    let mut wv: Vec<f32> = (0..b * h * w)
        .map(|i| ((i * 7) % 4) as f32 * 0.75)
        .collect();
    for (i, v) in wv[2 * h * w..].iter_mut().enumerate() {
        *v = if i == 5 { 2.0 } else { 0.0 };
    }
    let weights = Tensor::<4>::from_data(TensorData::new(wv.clone(), [b, 1, h, w]), &device);

    let (p, x) = (to_vec(pred.clone()), to_vec(x0.clone()));
    let expected: f32 = (0..b)
        .map(|s| {
            let mut num = 0.0f32;
            let mut den = 0.0f32;
            for pos in 0..h * w {
                let wt = wv[s * h * w + pos];
                den += wt * c as f32;
                for ch in 0..c {
                    let i = (s * c + ch) * h * w + pos;
                    num += wt * (p[i] - x[i]).powi(2);
                }
            }
            num / den
        })
        .sum::<f32>()
        / b as f32;
    let got = objective
        .loss_with_pixel_weights(
            pred.clone(),
            x0.clone(),
            eps.clone(),
            x_t.clone(),
            &ts,
            Some(weights),
        )
        .unwrap()
        .loss
        .into_scalar::<f32>();
    assert!(
        (got - expected).abs() <= 1e-5 * expected,
        "{got} vs {expected}"
    );
    // The plain loss is a different number with these weights.
    let plain = objective
        .loss(pred.clone(), x0.clone(), eps.clone(), x_t.clone(), &ts)
        .unwrap()
        .loss
        .into_scalar::<f32>();
    assert!(
        (plain - expected).abs() > 1e-3 * expected,
        "{plain} vs {expected}"
    );

    // Uniform weights (any positive constant) are the plain loss, also under a timestep
    // weighting.
    let uniform = Tensor::<4>::full([b, 1, h, w], 2.5, &device);
    for weighting in [
        LossWeighting::Uniform,
        LossWeighting::SnrPlusOne { max_snr: 5.0 },
    ] {
        let obj = objective.clone().with_weighting(weighting).unwrap();
        let a = obj
            .loss(pred.clone(), x0.clone(), eps.clone(), x_t.clone(), &ts)
            .unwrap()
            .loss
            .into_scalar::<f32>();
        let u = obj
            .loss_with_pixel_weights(
                pred.clone(),
                x0.clone(),
                eps.clone(),
                x_t.clone(),
                &ts,
                Some(uniform.clone()),
            )
            .unwrap()
            .loss
            .into_scalar::<f32>();
        assert!((a - u).abs() <= 1e-5 * a, "{weighting:?}: {a} vs {u}");
    }

    // Wrong shape (channels), a negative weight and an all-zero sample are typed errors.
    let bad_shape = Tensor::<4>::ones([b, c, h, w], &device);
    let mut negative = vec![1.0f32; b * h * w];
    negative[3] = -1.0;
    let mut zero = vec![1.0f32; b * h * w];
    zero[h * w..2 * h * w].fill(0.0);
    for (name, wt) in [
        ("channels", bad_shape),
        (
            "negative",
            Tensor::from_data(TensorData::new(negative, [b, 1, h, w]), &device),
        ),
        (
            "zero sum",
            Tensor::from_data(TensorData::new(zero, [b, 1, h, w]), &device),
        ),
    ] {
        let r = objective.loss_with_pixel_weights(
            pred.clone(),
            x0.clone(),
            eps.clone(),
            x_t.clone(),
            &ts,
            Some(wt),
        );
        assert!(
            matches!(
                r,
                Err(DiffusionError::ShapeMismatch {
                    what: "pixel_weights",
                    ..
                }) | Err(DiffusionError::InvalidArgument {
                    what: "pixel_weights",
                    ..
                })
            ),
            "{name}: {r:?}"
        );
    }
}
