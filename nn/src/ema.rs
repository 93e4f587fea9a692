//! Exponential moving average of a model's weights, shared by every stage's trainer.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Collects every float parameter (flattened, detached) in visiting order.
struct Gather(Vec<Tensor<1>>);

impl ModuleVisitor for Gather {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

/// `ema = decay * ema + (1 - decay) * model`, parameter by parameter in visiting order.
struct Blend {
    src: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.src.next() {
            Some(s) => {
                let decay = self.decay;
                param.map(|t| {
                    let dims = t.dims();
                    t * decay + s.reshape(dims) * (1.0 - decay)
                })
            }
            None => param,
        }
    }
}

/// One EMA update: returns `decay * ema + (1 - decay) * model` for every float parameter. `ema`
/// and `model` must have the same structure (the EMA copy is usually kept on a non-autodiff
/// device: pass `model.valid()`).
///
/// ```
/// use burn::tensor::Device;
/// let device = Device::flex();
/// let model = unclip_nn::Linear::new(2, 2, true, &device);
/// let ema = unclip_nn::Linear::new(2, 2, true, &device);
/// let ema = unclip_nn::ema_update(ema, &model, 0.999);
/// ```
pub fn ema_update<M: Module>(ema: M, model: &M, decay: f64) -> M {
    let mut gather = Gather(Vec::new());
    model.visit(&mut gather);
    ema.map(&mut Blend {
        src: gather.0.into_iter(),
        decay,
    })
}
