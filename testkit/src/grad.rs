//! Finite-difference checks of autodiff gradients, parameter tensor by parameter tensor.
//!
//! For every float parameter tensor `p_k` of a module (in visiting order) a seeded random
//! direction `d_k` is drawn (unit L2 norm), and the autodiff directional derivative `<dL/dp_k, d_k>`
//! is compared with the central difference `(L(p_k + eps d_k) - L(p_k - eps d_k)) / (2 eps)`,
//! every other parameter fixed. A wrong backward of any op on a parameter's path shows up as a
//! disagreement on the tensors upstream of it, so the first failing tensors name the op.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};

use crate::to_vec;

/// One parameter tensor's check.
#[derive(Debug, Clone)]
pub struct ParamCheck {
    /// Position in the module's visiting order.
    pub index: usize,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// `<dL/dp, d>` from autodiff (0 when autodiff returned no gradient for the tensor).
    pub analytic: f64,
    /// The central difference along `d`.
    pub numeric: f64,
}

impl ParamCheck {
    /// `|analytic - numeric| / max(|analytic|, |numeric|, floor)`.
    pub fn relative_error(&self, floor: f64) -> f64 {
        (self.analytic - self.numeric).abs()
            / self.analytic.abs().max(self.numeric.abs()).max(floor)
    }
}

struct Collect<'a> {
    grads: &'a Gradients,
    out: Vec<(Vec<usize>, Option<Vec<f32>>)>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let g = t.grad(self.grads).map(to_vec);
        self.out.push((shape, g));
    }
}

/// Adds `delta` to the `target`-th float parameter (visiting order), leaves the others.
struct Nudge {
    target: usize,
    next: usize,
    delta: Vec<f32>,
}

impl ModuleMapper for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let i = self.next;
        self.next += 1;
        if i != self.target {
            return param;
        }
        let delta = std::mem::take(&mut self.delta);
        param.map(|t| {
            let dims = t.dims();
            let d = Tensor::<D>::from_data(TensorData::new(delta, dims), &t.device());
            t + d
        })
    }
}

/// Seeded standard normal draws (splitmix64 + Box-Muller): the directions need no RNG crate.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Checks every float parameter tensor of `model` (which must live on an autodiff device) for the
/// scalar loss `loss(model)` (a `[1]` tensor). `eps` is the step along a unit-norm direction.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let device = Device::flex().autodiff();
/// let lin = burn::nn::LinearConfig::new(3, 2).init(&device);
/// let x = Tensor::<2>::from_floats([[0.5, -1.0, 2.0]], &device);
/// let loss = |m: &burn::nn::Linear| m.forward(x.clone()).powf_scalar(2.0).sum();
/// let checks = unclip_testkit::grad::check_parameters(&lin, loss, 1e-2, 7);
/// assert!(checks.iter().all(|c| c.relative_error(1e-3) < 1e-2));
/// ```
pub fn check_parameters<M, F>(model: &M, loss: F, eps: f64, seed: u64) -> Vec<ParamCheck>
where
    M: Module + Clone,
    F: Fn(&M) -> Tensor<1>,
{
    let grads = loss(model).backward();
    let mut collect = Collect {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut collect);
    let value = |m: &M| -> f64 { f64::from(to_vec(loss(m))[0]) };
    let mut rng = Normal(seed);
    collect
        .out
        .into_iter()
        .enumerate()
        .map(|(index, (shape, grad))| {
            let n: usize = shape.iter().product();
            let mut dir: Vec<f64> = (0..n).map(|_| rng.sample()).collect();
            let norm = dir
                .iter()
                .map(|d| d * d)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            dir.iter_mut().for_each(|d| *d /= norm);
            let analytic = grad
                .map(|g| g.iter().zip(&dir).map(|(&g, &d)| f64::from(g) * d).sum())
                .unwrap_or(0.0);
            let nudged = |sign: f64| {
                let delta = dir.iter().map(|&d| (sign * eps * d) as f32).collect();
                let m = model.clone().map(&mut Nudge {
                    target: index,
                    next: 0,
                    delta,
                });
                value(&m)
            };
            let numeric = (nudged(1.0) - nudged(-1.0)) / (2.0 * eps);
            ParamCheck {
                index,
                shape,
                analytic,
                numeric,
            }
        })
        .collect()
}

/// Prints the tensors whose relative error (floor 1e-2) exceeds 3e-3 and the worst error, then
/// asserts that the check means something and passed: more than `min_tensors` tensors were
/// visited, more than half with a non-negligible directional derivative (`|<g, d>| > 1e-2`),
/// and every relative error is below `max_relative`.
pub fn assert_agree(checks: &[ParamCheck], min_tensors: usize, max_relative: f64) {
    let mut worst = 0f64;
    for c in checks {
        let r = c.relative_error(1e-2);
        worst = worst.max(r);
        if r > 3e-3 {
            println!(
                "{:3} {:?}: autodiff {:+.5e}, finite difference {:+.5e}, relative error {r:.2e}",
                c.index, c.shape, c.analytic, c.numeric
            );
        }
    }
    println!(
        "{} parameter tensors, worst relative error {worst:.2e}",
        checks.len()
    );
    assert!(
        checks.len() > min_tensors,
        "only {} parameter tensors visited",
        checks.len()
    );
    assert!(
        checks.iter().filter(|c| c.analytic.abs() > 1e-2).count() > checks.len() / 2,
        "most gradients are zero: the loss does not reach the parameters"
    );
    assert!(
        worst < max_relative,
        "a gradient disagrees with its finite difference: {worst:.3}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    /// A fixed layer (not a random draw, so the checked derivatives are the same every run and
    /// well away from zero) and input.
    fn setup() -> (Linear, Tensor<2>) {
        let device = Device::flex().autodiff();
        let mut lin = LinearConfig::new(3, 2).init(&device);
        // burn's Linear weight is [d_in, d_out].
        lin.weight = Param::from_tensor(Tensor::<2>::from_floats(
            [[0.3, 0.05], [-0.2, 0.4], [0.1, -0.3]],
            &device,
        ));
        lin.bias = Some(Param::from_tensor(Tensor::<1>::from_floats(
            [0.1, -0.1],
            &device,
        )));
        let x = Tensor::<2>::from_floats([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], &device);
        (lin, x)
    }

    #[test]
    fn a_correct_backward_agrees() {
        let (lin, x) = setup();
        let loss = |m: &Linear| m.forward(x.clone()).tanh().sum();
        let checks = check_parameters(&lin, loss, 1e-2, 1);
        assert_eq!(checks.len(), 2, "weight and bias");
        for c in &checks {
            assert!(c.relative_error(1e-3) < 1e-2, "{c:?}");
            assert!(c.analytic.abs() > 1e-2, "{c:?}");
        }
    }

    /// A loss part that autodiff does not see (detached) is what a wrong backward looks like.
    #[test]
    fn a_missing_gradient_is_caught() {
        let (lin, x) = setup();
        let loss = |m: &Linear| {
            let y = m.forward(x.clone());
            y.clone().tanh().sum() + y.detach().mul_scalar(3.0).sum()
        };
        let checks = check_parameters(&lin, loss, 1e-2, 1);
        assert!(
            checks.iter().all(|c| c.relative_error(1e-3) > 0.5),
            "{checks:?}"
        );
    }
}
