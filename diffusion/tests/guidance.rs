//! Classifier (gradient) guidance: the shift applied to a model output must be the same
//! score shift `score' = score + scale * grad` whatever the prediction type.

use burn::tensor::{Tensor, TensorData};
use unclip_diffusion::{PredictionType, SeededNoise, apply_gradient_guidance, randn};
use unclip_testkit::{test_device, to_vec};

/// eps implied by a model output of `kind` at `x_t` with `a = alpha_prod_t`.
fn implied_eps(out: Tensor<2>, x_t: Tensor<2>, kind: PredictionType, a: f32) -> Tensor<2> {
    let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
    match kind {
        PredictionType::Epsilon => out,
        // x_t = sa x0 + sb eps
        PredictionType::Sample => (x_t - out.mul_scalar(sa)).div_scalar(sb),
        // v = sa eps - sb x0  =>  eps = sa v + sb x_t
        PredictionType::VPrediction => out.mul_scalar(sa) + x_t.mul_scalar(sb),
    }
}

#[test]
fn guidance_shifts_the_score_by_scale_times_grad_for_every_prediction_type() {
    let device = test_device();
    let mut noise = SeededNoise::new(3);
    let x_t: Tensor<2> = randn(&mut noise, [2, 5], &device).unwrap();
    let out: Tensor<2> = randn(&mut noise, [2, 5], &device).unwrap();
    let grad: Tensor<2> = randn(&mut noise, [2, 5], &device).unwrap();
    for a in [0.9f32, 0.3, 0.01] {
        for kind in [
            PredictionType::Epsilon,
            PredictionType::Sample,
            PredictionType::VPrediction,
        ] {
            let scale = 2.5;
            let guided =
                apply_gradient_guidance(out.clone(), grad.clone(), kind, a, scale).unwrap();
            // score = -eps / sqrt(1 - a): the guided score minus the plain one is scale * grad.
            let sb = (1.0 - a).sqrt();
            let shift = (implied_eps(out.clone(), x_t.clone(), kind, a)
                - implied_eps(guided, x_t.clone(), kind, a))
            .div_scalar(sb);
            let want = to_vec(grad.clone().mul_scalar(scale));
            let got = to_vec(shift);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-3 * (1.0 + w.abs()),
                    "{kind:?} at a = {a}: score shift {g}, want {w}"
                );
            }
        }
    }
}

#[test]
fn guidance_rejects_a_mis_shaped_gradient_and_a_bad_alpha() {
    let device = test_device();
    let out = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 4], [2, 2]), &device);
    let bad = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 6], [2, 3]), &device);
    let err = apply_gradient_guidance(out.clone(), bad, PredictionType::Epsilon, 0.5, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 3]") && err.contains("[2, 2]"), "{err}");
    let err = apply_gradient_guidance(out.clone(), out, PredictionType::Epsilon, 0.0, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("alpha_prod_t"), "{err}");
}
