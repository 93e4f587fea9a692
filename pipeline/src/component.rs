//! The pipeline's models as [`Component`]s: held in memory for the pipeline's lifetime
//! ([`MemoryMode::Resident`]) or loaded from their folder right before the stage that needs them
//! and dropped after it ([`MemoryMode::Staged`]); and the float dtype they compute in.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, DeviceError, FloatDType, Tensor};
use unclip_clip::{
    ClipTextConfig, ClipTextModelWithProjection, ClipVisionConfig, ClipVisionModelWithProjection,
    NoisedClipVisionModel,
};
use unclip_decoder::{
    TextProjConfig, UNet2DConditionConfig, UNet2DConditionModel, UnCLIPTextProjModel,
};
use unclip_prior::{PriorTransformer, PriorTransformerConfig};
use unclip_upsampler::{UNet2DConfig, UNet2DModel};

use crate::UnclipError;

/// Where the pipeline keeps the weights of the components it loads from a folder.
///
/// Components given to the builder explicitly (`.decoder(model)`, ...) are always resident:
/// the pipeline cannot load them again. The tokenizer, the image processor and the schedulers
/// are small and always resident.
///
/// ```no_run
/// use burn::tensor::Device;
/// use unclip::{MemoryMode, UnclipBuilder};
/// let pipe = UnclipBuilder::new()
///     .device(Device::flex())
///     .from_pretrained("karlo-v1-alpha")
///     .memory(MemoryMode::Staged)
///     .build()?;
/// assert!(pipe.resident_components().is_empty()); // nothing loaded between calls
/// # Ok::<(), unclip::UnclipError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    /// Every model is loaded by `build` and kept (the fastest; memory = all models together).
    #[default]
    Resident,
    /// Each stage's models are loaded from their folder right before the stage runs and dropped
    /// after it (text encoder; image encoder; prior; decoder + text projection; super-resolution
    /// first + last; second super-resolution stage), so the peak is the largest stage's models
    /// instead of all of them, at the cost of reading and building each model once per call
    /// that uses it. `build` still reads every config and checks every weights file exists.
    ///
    /// Measured (`cargo run -p unclip --example staged_memory`, peak RSS of one text-to-image
    /// call, flex): with 474 MiB of weights (the tiny fixture plus three random 155 MiB
    /// super-resolution UNets: first, last, second stage) resident mode peaks at 665 MiB (while
    /// building) and holds 653 MiB between calls; staged mode holds 22 MiB between calls and
    /// peaks at 507 MiB during the first super-resolution stage, which needs `super_res_first`
    /// and `super_res_last` at once, and loading a model briefly takes about twice its size
    /// (the freshly built module and the checkpoint's tensors). So the saving is the weights of
    /// the other stages, not more: large when the stages are of similar size, nothing on a
    /// checkpoint dominated by one stage. On the 5 MiB `unclip_tiny` fixture: 32 vs 31 MiB.
    Staged,
}

mod sealed {
    pub trait Sealed {}
}

/// A model type the pipeline holds as a [`Component`]: the pipeline's own model types, which
/// know how to read their config and load themselves from a diffusers component folder.
/// Sealed: it is implemented for the types listed in its implementors only.
pub trait ComponentModel: Module + sealed::Sealed + Sized + 'static {
    /// What [`Component::config`] gives without loading the weights (`()` for the CLIP towers,
    /// whose modules keep no config).
    type Config: Clone + fmt::Debug + Send + Sync;
    /// The weights file stem in the folder (`model` or `diffusion_pytorch_model`, as
    /// `.safetensors` or PyTorch `.bin`).
    #[doc(hidden)]
    const WEIGHTS_STEM: &'static str;
    /// Reads (and checks) the folder's config.
    #[doc(hidden)]
    fn read_config(dir: &Path) -> Result<Self::Config, UnclipError>;
    /// Loads the folder's model (f32).
    #[doc(hidden)]
    fn load(dir: &Path, device: &Device) -> Result<Self, UnclipError>;
    /// The config of a model in memory.
    #[doc(hidden)]
    fn config_of(&self) -> Self::Config;
}

macro_rules! component_model {
    ($model:ty, $config:ty, $stem:literal, |$dir:ident| $read:expr, |$m:ident| $of:expr) => {
        impl sealed::Sealed for $model {}
        impl ComponentModel for $model {
            type Config = $config;
            const WEIGHTS_STEM: &'static str = $stem;
            fn read_config($dir: &Path) -> Result<Self::Config, UnclipError> {
                Ok($read)
            }
            fn load(dir: &Path, device: &Device) -> Result<Self, UnclipError> {
                Ok(<$model>::from_pretrained(dir, device)?)
            }
            fn config_of(&self) -> Self::Config {
                let $m = self;
                $of
            }
        }
    };
}

component_model!(
    ClipTextModelWithProjection,
    (),
    "model",
    |dir| {
        ClipTextConfig::from_file(dir.join("config.json"))?;
    },
    |_m| ()
);
component_model!(
    ClipVisionModelWithProjection,
    (),
    "model",
    |dir| {
        ClipVisionConfig::from_file(dir.join("config.json"))?;
    },
    |_m| ()
);
component_model!(
    NoisedClipVisionModel,
    (),
    "model",
    |dir| {
        ClipVisionConfig::from_file(dir.join("config.json"))?;
    },
    |_m| ()
);
component_model!(
    PriorTransformer,
    PriorTransformerConfig,
    "diffusion_pytorch_model",
    |dir| {
        let c: PriorTransformerConfig = unclip_nn::read_json(dir.join("config.json"))?;
        c.validate()?;
        c
    },
    |m| m.config().clone()
);
component_model!(
    UnCLIPTextProjModel,
    (),
    "diffusion_pytorch_model",
    |dir| {
        TextProjConfig::from_file(dir.join("config.json"))?;
    },
    |_m| ()
);
component_model!(
    UNet2DConditionModel,
    UNet2DConditionConfig,
    "diffusion_pytorch_model",
    |dir| UNet2DConditionConfig::from_file(dir.join("config.json"))?,
    |m| m.config.clone()
);
component_model!(
    UNet2DModel,
    UNet2DConfig,
    "diffusion_pytorch_model",
    |dir| UNet2DConfig::from_file(dir.join("config.json"))?,
    |m| m.config.clone()
);

enum Source<M> {
    Resident(Arc<M>),
    Staged {
        dir: PathBuf,
        device: Device,
        dtype: FloatDType,
    },
}

/// One model of the pipeline (`decoder`, `prior`, ...): resident in memory, or (in
/// [`MemoryMode::Staged`]) a folder it is loaded from whenever a stage needs it.
///
/// ```no_run
/// # use burn::tensor::Device;
/// # let pipe = unclip::UnclipBuilder::new().device(Device::flex()).from_pretrained("karlo").build()?;
/// let decoder = pipe.decoder.model()?; // the resident model, or loaded now
/// println!("{:?}, resident: {}", pipe.decoder.config().sample_size, pipe.decoder.is_resident());
/// # Ok::<(), unclip::UnclipError>(())
/// ```
pub struct Component<M: ComponentModel> {
    name: &'static str,
    config: M::Config,
    source: Source<M>,
}

impl<M: ComponentModel> Clone for Component<M> {
    fn clone(&self) -> Self {
        Component {
            name: self.name,
            config: self.config.clone(),
            source: match &self.source {
                Source::Resident(m) => Source::Resident(m.clone()),
                Source::Staged { dir, device, dtype } => Source::Staged {
                    dir: dir.clone(),
                    device: device.clone(),
                    dtype: *dtype,
                },
            },
        }
    }
}

impl<M: ComponentModel> fmt::Debug for Component<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Component");
        s.field("name", &self.name);
        match &self.source {
            Source::Resident(_) => s.field("resident", &true),
            Source::Staged { dir, .. } => s.field("staged_from", dir),
        };
        s.finish()
    }
}

impl<M: ComponentModel> Component<M> {
    /// A resident component of `model`, cast to `dtype`.
    pub(crate) fn resident(name: &'static str, model: M, dtype: FloatDType) -> Self {
        let model = cast_module(model, dtype);
        Component {
            name,
            config: model.config_of(),
            source: Source::Resident(Arc::new(model)),
        }
    }

    /// The component of folder `dir`: loaded now (resident) or checked now and loaded on use
    /// (staged).
    pub(crate) fn from_dir(
        name: &'static str,
        dir: PathBuf,
        mode: MemoryMode,
        device: &Device,
        dtype: FloatDType,
    ) -> Result<Self, UnclipError> {
        match mode {
            MemoryMode::Resident => {
                let model = load_cast::<M>(&dir, device, dtype)?;
                Ok(Self::resident(name, model, dtype))
            }
            MemoryMode::Staged => {
                let config = M::read_config(&dir)?;
                let candidates = unclip_nn::candidate_files(M::WEIGHTS_STEM);
                if !candidates.iter().any(|c| dir.join(c).is_file()) {
                    return Err(unclip_nn::LoadError::NoCheckpoint { dir, candidates }.into());
                }
                Ok(Component {
                    name,
                    config,
                    source: Source::Staged {
                        dir,
                        device: device.clone(),
                        dtype,
                    },
                })
            }
        }
    }

    /// The same weights under another component name (`super_res_last` that is
    /// `super_res_first`).
    pub(crate) fn shared_as(&self, name: &'static str) -> Self {
        Component {
            name,
            ..self.clone()
        }
    }

    /// The component's name in `model_index.json` (`decoder`, `super_res_first`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The model's config, without loading the weights.
    pub fn config(&self) -> &M::Config {
        &self.config
    }

    /// Whether the weights are held in memory for the pipeline's lifetime.
    pub fn is_resident(&self) -> bool {
        matches!(self.source, Source::Resident(_))
    }

    /// The resident model (`None` when the component is staged).
    pub fn resident_model(&self) -> Option<&M> {
        match &self.source {
            Source::Resident(m) => Some(m),
            Source::Staged { .. } => None,
        }
    }

    /// The folder a staged component is loaded from (`None` when resident).
    pub fn staged_dir(&self) -> Option<&Path> {
        match &self.source {
            Source::Resident(_) => None,
            Source::Staged { dir, .. } => Some(dir),
        }
    }

    /// The model: the resident one (shared, not copied), or a staged one loaded from its folder
    /// now (dropped with the last clone of the returned `Arc`).
    pub fn model(&self) -> Result<Arc<M>, UnclipError> {
        match &self.source {
            Source::Resident(m) => Ok(m.clone()),
            Source::Staged { dir, device, dtype } => {
                Ok(Arc::new(load_cast::<M>(dir, device, *dtype)?))
            }
        }
    }

    /// Whether `self` and `other` are the same weights (one resident model, or one folder).
    pub fn shares_weights_with(&self, other: &Component<M>) -> bool {
        match (&self.source, &other.source) {
            (Source::Resident(a), Source::Resident(b)) => Arc::ptr_eq(a, b),
            (Source::Staged { dir: a, .. }, Source::Staged { dir: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Component<UNet2DModel> {
    /// One forward of the super-resolution UNet (loading it first when staged):
    /// `sample [B, in, H, W]`, `timesteps [1]` or `[B]` -> `[B, out, H, W]`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: Tensor<1>,
    ) -> Result<Tensor<4>, UnclipError> {
        Ok(self.model()?.forward(sample, timesteps)?)
    }
}

fn load_cast<M: ComponentModel>(
    dir: &Path,
    device: &Device,
    dtype: FloatDType,
) -> Result<M, UnclipError> {
    Ok(cast_module(M::load(dir, device)?, dtype))
}

/// Casts every float parameter of `module` to `dtype` (the loaders give f32).
pub(crate) fn cast_module<M: Module>(module: M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            if param.val().dtype() == dtype.into() {
                return param;
            }
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}

/// Makes `device` create float tensors of `dtype` by default (burn 0.22's per-device setting,
/// which every tensor the stages create follows), or checks that it already does.
pub(crate) fn prepare_device(device: &mut Device, dtype: FloatDType) -> Result<(), UnclipError> {
    if device.settings().float_dtype == dtype {
        return Ok(());
    }
    let unsupported = |why: String| UnclipError::UnsupportedDtype { dtype, why };
    if !device.supports_dtype(dtype) {
        return Err(unsupported(format!(
            "{device:?} cannot compute in it (burn's ndarray backend has f32 and f64 only)"
        )));
    }
    device.configure(dtype).or_else(|e| match e {
        // Configured by someone else (another thread's build) since the check above.
        DeviceError::AlreadyInitialized { .. } if device.settings().float_dtype == dtype => Ok(()),
        DeviceError::AlreadyInitialized { .. } => Err(unsupported(format!(
            "{device:?} already makes {:?} tensors: burn fixes a device's float dtype at its \
             first tensor, process-wide; build the pipeline before any other tensor is made \
             on this device (one float dtype per device and process)",
            device.settings().float_dtype
        ))),
        e => Err(unsupported(e.to_string())),
    })
}
