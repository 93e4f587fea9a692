//! Layers with PyTorch's parameter names and layouts, so checkpoints map onto them key for key.
//!
//! - [`Linear`]: `weight` `[out, in]` (torch layout, no transpose on load), optional `bias`.
//! - [`LayerNorm`], [`GroupNorm`]: `weight` / `bias` (torch names; burn's own use gamma/beta).
//! - Convolutions and embeddings use burn's `Conv2d` / `Embedding`, whose names and layouts
//!   (`weight [out, in, kh, kw]`, `bias`; `weight [n, d]`) already match torch.

use burn::module::{Module, Param};
use burn::tensor::Device;
use burn::tensor::module::layer_norm;
use burn::tensor::{Distribution, Tensor};

/// `y = x W^T + b` with `W: [out, in]` as torch stores it.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_out, d_in]`
    pub weight: Param<Tensor<2>>,
    /// `[d_out]`
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// torch's default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    ///
    /// ```
    /// # use burn::tensor::{Device, Tensor};
    /// let device = Device::flex();
    /// let lin = unclip_nn::Linear::new(4, 3, true, &device);
    /// let y = lin.forward(Tensor::<2>::ones([2, 4], &device));
    /// assert_eq!(y.dims(), [2, 3]);
    /// ```
    pub fn new(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Self {
        let k = 1.0 / (d_in.max(1) as f64).sqrt();
        let weight = Param::from_tensor(Tensor::random(
            [d_out, d_in],
            Distribution::Uniform(-k, k),
            device,
        ));
        let bias = bias.then(|| {
            Param::from_tensor(Tensor::random(
                [d_out],
                Distribution::Uniform(-k, k),
                device,
            ))
        });
        Linear { weight, bias }
    }

    /// `[..., in] -> [..., out]`
    ///
    /// The leading dimensions are folded into one, so that the product is a single
    /// `[rows, in] x [in, out]` matrix product (torch's `addmm`), not one per batch entry.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let w = self.weight.val().transpose(); // [in, out], a view of torch's [out, in]
        let y = x.reshape([rows, dims[D - 1]]).matmul(w); // [rows, out]
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze::<2>(),
            None => y,
        };
        dims[D - 1] = self.d_out();
        y.reshape(dims)
    }

    pub fn d_in(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn d_out(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// Layer normalisation over the last dimension (biased variance, as torch).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// `[d]`
    pub weight: Param<Tensor<1>>,
    /// `[d]`
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(d: usize, eps: f64, device: &Device) -> Self {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: Param::from_tensor(Tensor::zeros([d], device)),
            eps,
        }
    }

    /// `[..., d] -> [..., d]`, through the backend's fused layer norm (`module::layer_norm`:
    /// one kernel on flex, instead of six element-wise passes with their allocations).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}

/// Group normalisation of `[B, C, ...]` over groups of channels (torch `nn.GroupNorm`).
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// `[C]`
    pub weight: Param<Tensor<1>>,
    /// `[C]`
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    pub num_groups: usize,
    #[module(skip)]
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(num_groups: usize, channels: usize, eps: f64, device: &Device) -> Self {
        GroupNorm {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            num_groups,
            eps,
        }
    }

    /// `[B, C, H, W] -> [B, C, H, W]`.
    ///
    /// Each group `[B, G, (C/G)·H·W]` is normalised by the backend's fused layer norm
    /// (mean and biased variance per row, as torch), then the per-channel affine is applied:
    /// three passes over the activations where the written-out form takes seven.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let g = self.num_groups;
        let n = (c / g) * h * w;
        // no per-row affine (the channels' comes next); in x's dtype, as the kernel requires
        let ones = Tensor::<1>::ones([n], &x.device()).cast(x.dtype());
        let y = layer_norm(x.reshape([b, g, n]), ones, None, self.eps).reshape([b, c, h, w]);
        let wgt = self.weight.val().reshape([1, c, 1, 1]);
        let bias = self.bias.val().reshape([1, c, 1, 1]);
        y * wgt + bias
    }
}
