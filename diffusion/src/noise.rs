//! The one noise-source abstraction of unclip.
//!
//! Noise is drawn on the host (`Vec<f32>`, row-major) and uploaded, so a seed gives the same
//! values on every device and backend. [`SeededNoise`] draws from a seeded ChaCha12 generator
//! through Box-Muller; [`ReplayNoise`] feeds recorded tensors back in order (parity tests,
//! reproducing a reference run).

use std::collections::VecDeque;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::ChaCha12Rng;
use rand::{Rng, SeedableRng};

/// A noise draw that could not be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoiseError {
    #[error(
        "replay noise exhausted: draw #{index} (shape {requested:?}) requested, but only {recorded} tensors were recorded"
    )]
    Exhausted {
        index: usize,
        requested: Vec<usize>,
        recorded: usize,
    },
    #[error(
        "replay noise draw #{index}: shape {requested:?} requested, but the recorded tensor has shape {recorded:?}"
    )]
    ShapeMismatch {
        index: usize,
        requested: Vec<usize>,
        recorded: Vec<usize>,
    },
    #[error("recorded noise tensor: {len} values do not fill shape {shape:?}")]
    BadRecording { shape: Vec<usize>, len: usize },
    #[error("noise state: word position {word_pos:?} is not a number")]
    BadState { word_pos: String },
}

/// What a diffusion trainer's checkpoint keeps besides weights, EMA and optimizer: its host
/// random stream's position and the learning rate a schedule set last (the `extra` of an
/// `unclip_nn::TrainSnapshot`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamState {
    pub noise: NoiseState,
    pub learning_rate_now: Option<f64>,
}

impl StreamState {
    /// The state of `noise` and the scheduled learning rate, as a checkpoint's `extra`.
    pub fn capture(noise: &SeededNoise, learning_rate_now: Option<f64>) -> serde_json::Value {
        serde_json::to_value(StreamState {
            noise: noise.state(),
            learning_rate_now,
        })
        .unwrap_or(serde_json::Value::Null)
    }

    /// The stream and learning rate a checkpoint saved with [`Self::capture`].
    pub fn restore(
        resume: &unclip_nn::TrainResume,
    ) -> Result<(SeededNoise, Option<f64>), unclip_nn::TrainCheckpointError> {
        let state: StreamState = resume.extra()?;
        let noise =
            SeededNoise::from_state(&state.noise).map_err(|e| resume.corrupt(e.to_string()))?;
        Ok((noise, state.learning_rate_now))
    }
}

/// The position of a [`SeededNoise`] stream: its seed and the ChaCha12 word offset (a decimal
/// string: the offset is a 68-bit number, beyond JSON's exact integers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoiseState {
    pub seed: u64,
    pub word_pos: String,
}

/// A source of standard-normal noise.
///
/// The required method works on the host for any rank; [`NoiseSource::randn`] (or the free
/// function [`randn`] for `dyn NoiseSource`) uploads a `Tensor<D>`.
pub trait NoiseSource {
    /// `prod(shape)` standard-normal values, row-major.
    fn randn_host(&mut self, shape: &[usize]) -> Result<Vec<f32>, NoiseError>;

    /// A `Tensor<D>` of shape `shape` on `device`.
    fn randn<const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>, NoiseError>
    where
        Self: Sized,
    {
        randn(self, shape, device)
    }
}

/// [`NoiseSource::randn`] for any source, `dyn` included.
pub fn randn<const D: usize, N: NoiseSource + ?Sized>(
    source: &mut N,
    shape: [usize; D],
    device: &Device,
) -> Result<Tensor<D>, NoiseError> {
    let values = source.randn_host(&shape)?;
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

impl<N: NoiseSource + ?Sized> NoiseSource for &mut N {
    fn randn_host(&mut self, shape: &[usize]) -> Result<Vec<f32>, NoiseError> {
        (**self).randn_host(shape)
    }
}

impl<N: NoiseSource + ?Sized> NoiseSource for Box<N> {
    fn randn_host(&mut self, shape: &[usize]) -> Result<Vec<f32>, NoiseError> {
        (**self).randn_host(shape)
    }
}

/// Seeded host noise: ChaCha12 + Box-Muller in f64, rounded to f32.
///
/// The same seed gives the same values on every device (the values are made on the host and
/// uploaded). Each draw of `n` values consumes `ceil(n / 2)` pairs of uniforms, so the stream
/// depends on the sequence of draw sizes, not on the device.
///
/// ```
/// use burn::tensor::Device;
/// use unclip_diffusion::{NoiseSource, SeededNoise};
/// let device = Device::flex();
/// let a = SeededNoise::new(42).randn([2, 3, 4, 4], &device).unwrap();
/// let b = SeededNoise::new(42).randn([2, 3, 4, 4], &device).unwrap();
/// assert_eq!(a.into_data(), b.into_data());
/// ```
#[derive(Debug)]
pub struct SeededNoise {
    rng: ChaCha12Rng,
    seed: u64,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        SeededNoise {
            rng: ChaCha12Rng::seed_from_u64(seed),
            seed,
        }
    }

    /// The seed this source started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The stream's position, enough to continue it exactly ([`SeededNoise::from_state`]);
    /// serialisable (trainers save it in their checkpoints).
    pub fn state(&self) -> NoiseState {
        NoiseState {
            seed: self.seed,
            word_pos: self.rng.get_word_pos().to_string(),
        }
    }

    /// Continues the stream [`SeededNoise::state`] was taken from: every later draw is the
    /// same as the original source's.
    pub fn from_state(state: &NoiseState) -> Result<Self, NoiseError> {
        let pos: u128 = state.word_pos.parse().map_err(|_| NoiseError::BadState {
            word_pos: state.word_pos.clone(),
        })?;
        let mut s = SeededNoise::new(state.seed);
        s.rng.set_word_pos(pos);
        Ok(s)
    }

    /// The underlying generator (e.g. to draw training timesteps from the same stream).
    pub fn rng_mut(&mut self) -> &mut ChaCha12Rng {
        &mut self.rng
    }

    /// Uniform in (0, 1]: 53 random bits.
    fn uniform_open0(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl NoiseSource for SeededNoise {
    fn randn_host(&mut self, shape: &[usize]) -> Result<Vec<f32>, NoiseError> {
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let r = (-2.0 * self.uniform_open0().ln()).sqrt();
            let theta = 2.0 * std::f64::consts::PI * self.uniform();
            out.push((r * theta.cos()) as f32);
            out.push((r * theta.sin()) as f32);
        }
        out.truncate(n);
        Ok(out)
    }
}

/// Replays recorded noise tensors in order; a draw whose shape differs from the next recording,
/// or a draw after the last one, is a [`NoiseError`].
///
/// ```
/// use burn::tensor::Device;
/// use unclip_diffusion::{NoiseSource, ReplayNoise};
/// let device = Device::flex();
/// let mut replay = ReplayNoise::new();
/// replay.push(vec![2], vec![0.5, -1.0]).unwrap();
/// let x = replay.randn([2], &device).unwrap();
/// assert_eq!(x.into_data().try_to_vec::<f32>().unwrap(), vec![0.5, -1.0]);
/// assert!(replay.randn([2], &device).is_err()); // exhausted
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReplayNoise {
    queue: VecDeque<(Vec<usize>, Vec<f32>)>,
    served: usize,
}

impl ReplayNoise {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a recorded tensor (`values` row-major, `prod(shape)` of them).
    pub fn push(&mut self, shape: Vec<usize>, values: Vec<f32>) -> Result<(), NoiseError> {
        if shape.iter().product::<usize>() != values.len() {
            return Err(NoiseError::BadRecording {
                shape,
                len: values.len(),
            });
        }
        self.queue.push_back((shape, values));
        Ok(())
    }

    /// Appends a recorded tensor read back from a device.
    pub fn push_tensor<const D: usize>(&mut self, tensor: Tensor<D>) -> Result<(), NoiseError> {
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_default();
        self.push(shape, values)
    }

    /// Builds a replay from `(shape, values)` pairs in draw order.
    pub fn from_recordings(
        recordings: impl IntoIterator<Item = (Vec<usize>, Vec<f32>)>,
    ) -> Result<Self, NoiseError> {
        let mut r = Self::new();
        for (shape, values) in recordings {
            r.push(shape, values)?;
        }
        Ok(r)
    }

    /// Recorded tensors not yet served.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }

    /// Draws served so far.
    pub fn served(&self) -> usize {
        self.served
    }
}

impl NoiseSource for ReplayNoise {
    fn randn_host(&mut self, shape: &[usize]) -> Result<Vec<f32>, NoiseError> {
        let index = self.served;
        let Some((recorded, _)) = self.queue.front() else {
            return Err(NoiseError::Exhausted {
                index,
                requested: shape.to_vec(),
                recorded: index,
            });
        };
        if recorded.as_slice() != shape {
            return Err(NoiseError::ShapeMismatch {
                index,
                requested: shape.to_vec(),
                recorded: recorded.clone(),
            });
        }
        let (_, values) = self.queue.pop_front().expect("front checked above");
        self.served += 1;
        Ok(values)
    }
}

/// A source that records every draw of an inner source (to replay it later, or to save it).
#[derive(Debug, Clone)]
pub struct RecordingNoise<N> {
    inner: N,
    recorded: Vec<(Vec<usize>, Vec<f32>)>,
}

impl<N: NoiseSource> RecordingNoise<N> {
    pub fn new(inner: N) -> Self {
        RecordingNoise {
            inner,
            recorded: Vec::new(),
        }
    }

    /// The draws so far, `(shape, values)` in order.
    pub fn recorded(&self) -> &[(Vec<usize>, Vec<f32>)] {
        &self.recorded
    }

    /// A replay of everything drawn so far.
    pub fn replay(&self) -> ReplayNoise {
        ReplayNoise {
            queue: self.recorded.iter().cloned().collect(),
            served: 0,
        }
    }

    pub fn into_inner(self) -> N {
        self.inner
    }
}

impl<N: NoiseSource> NoiseSource for RecordingNoise<N> {
    fn randn_host(&mut self, shape: &[usize]) -> Result<Vec<f32>, NoiseError> {
        let values = self.inner.randn_host(shape)?;
        self.recorded.push((shape.to_vec(), values.clone()));
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream saved at any position (mid-block included) and restored continues exactly.
    #[test]
    fn noise_state_round_trips_at_every_offset() {
        for skip in [0usize, 1, 2, 3, 7, 8, 15, 16, 17, 31, 63, 64, 65, 200] {
            let mut a = SeededNoise::new(11);
            for _ in 0..skip {
                a.rng_mut().next_u32();
            }
            let _ = a.randn_host(&[3]).unwrap();
            let state = a.state();
            let json = serde_json::to_string(&state).unwrap();
            let mut b = SeededNoise::from_state(&serde_json::from_str(&json).unwrap()).unwrap();
            assert_eq!(
                a.randn_host(&[257]).unwrap(),
                b.randn_host(&[257]).unwrap(),
                "skip {skip}"
            );
            assert_eq!(a.rng_mut().next_u64(), b.rng_mut().next_u64());
        }
        let bad = NoiseState {
            seed: 1,
            word_pos: "x".into(),
        };
        assert!(matches!(
            SeededNoise::from_state(&bad),
            Err(NoiseError::BadState { .. })
        ));
    }

    #[test]
    fn seeded_noise_is_reproducible_and_standard_normal() {
        let a = SeededNoise::new(7).randn_host(&[3, 1001]).unwrap();
        let b = SeededNoise::new(7).randn_host(&[3, 1001]).unwrap();
        let c = SeededNoise::new(8).randn_host(&[3, 1001]).unwrap();
        assert_eq!(a.len(), 3003);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // moments of 100k draws
        let x = SeededNoise::new(1).randn_host(&[100_000]).unwrap();
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn seeded_noise_same_on_host_and_tensor() {
        let device = Device::flex();
        let host = SeededNoise::new(3).randn_host(&[2, 5]).unwrap();
        let t = SeededNoise::new(3).randn([2, 5], &device).unwrap();
        assert_eq!(t.into_data().try_to_vec::<f32>().unwrap(), host);
        let mut boxed: Box<dyn NoiseSource> = Box::new(SeededNoise::new(3));
        let t2 = randn(&mut *boxed, [2, 5], &device).unwrap();
        assert_eq!(t2.into_data().try_to_vec::<f32>().unwrap(), host);
    }

    #[test]
    fn replay_checks_order_shape_and_exhaustion() {
        let mut r = ReplayNoise::new();
        r.push(vec![2], vec![1.0, 2.0]).unwrap();
        r.push(vec![1, 1], vec![3.0]).unwrap();
        assert!(matches!(
            r.push(vec![2, 2], vec![0.0]),
            Err(NoiseError::BadRecording { .. })
        ));
        assert!(matches!(
            r.randn_host(&[1]),
            Err(NoiseError::ShapeMismatch { index: 0, .. })
        ));
        assert_eq!(r.randn_host(&[2]).unwrap(), vec![1.0, 2.0]);
        assert_eq!(r.randn_host(&[1, 1]).unwrap(), vec![3.0]);
        assert!(matches!(
            r.randn_host(&[1]),
            Err(NoiseError::Exhausted { index: 2, .. })
        ));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn recording_replays() {
        let mut rec = RecordingNoise::new(SeededNoise::new(5));
        let a = rec.randn_host(&[4]).unwrap();
        let b = rec.randn_host(&[2, 3]).unwrap();
        let mut replay = rec.replay();
        assert_eq!(replay.randn_host(&[4]).unwrap(), a);
        assert_eq!(replay.randn_host(&[2, 3]).unwrap(), b);
    }
}
