//! Shared helpers of the command-line examples (`generate`, `variations`, `interpolate`,
//! `text_diff`): the common flags, finding the model folder, loading the pipeline, a progress
//! bar per stage, reading / writing PNGs and contact sheets, and error reporting.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use burn::tensor::FloatDType;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use unclip::{
    Control, Generation, MemoryMode, Progress, Settings, Stage, UnclipBuilder, UnclipPipeline,
};

/// The examples' allocator. The networks allocate a fresh activation buffer per op, and
/// glibc's malloc hands large freed buffers back to the kernel, so the next op faults them in
/// (and zeroes them) again; mimalloc keeps them for reuse. Measured in `docs/benchmarks.md`
/// ("Allocator"); a program of your own that embeds unclip can do the same in one line.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The examples' error type: anything printable.
pub type Error = Box<dyn std::error::Error>;
pub type Result<T> = std::result::Result<T, Error>;

/// Flags every example takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a diffusers folder in the Karlo v1-alpha layout (`model_index.json` and one
    /// folder per component). Without it, the embedded shapes-world model (`models/shapes`).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Device: flex (pure-Rust CPU), ndarray, wgpu, wgpu-cpu (backends compiled in as cargo
    /// features of unclip-examples).
    #[arg(long, value_name = "D", default_value = "flex")]
    pub device: String,
    /// Seed of the noise: the same seed and settings give the same pictures.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Decoder denoising steps (default: the model folder's `unclip_settings.json`, else 25).
    #[arg(long, value_name = "N")]
    pub decoder_steps: Option<usize>,
    /// Super-resolution denoising steps (default: the model folder's, else 7).
    #[arg(long, value_name = "N")]
    pub super_res_steps: Option<usize>,
    /// Decoder classifier-free guidance scale, <= 1 for none (default: the model folder's,
    /// else 8).
    #[arg(long, value_name = "S")]
    pub decoder_guidance: Option<f32>,
    /// Decoder sampler: `ancestral` (Karlo's), `ddim` or `ddim:<eta>` (default: the model
    /// folder's, else ancestral).
    #[arg(long, value_name = "S")]
    pub decoder_sampler: Option<unclip::Sampler>,
    /// Decoder samples per image, the one closest to the image embedding in CLIP kept (default:
    /// the model folder's, else 1; needs an image encoder in the folder).
    #[arg(long, value_name = "K")]
    pub decoder_candidates: Option<usize>,
    /// GLIDE's CLIP guidance of the decoder by a noised CLIP, 0 for none (default: the model
    /// folder's, else 0; needs a `noised_image_encoder` in the folder).
    #[arg(long, value_name = "S")]
    pub clip_guidance: Option<f32>,
    /// Prior denoising steps (default: the model folder's, else 25).
    #[arg(long, value_name = "N")]
    pub prior_steps: Option<usize>,
    /// Prior classifier-free guidance scale, <= 1 for none (default: the model folder's, else 4).
    #[arg(long, value_name = "S")]
    pub prior_guidance: Option<f32>,
    /// Prior samples per prompt, the one closest to the caption in CLIP kept (default: the
    /// model folder's, else 1).
    #[arg(long, value_name = "K")]
    pub prior_candidates: Option<usize>,
    /// Float dtype every model computes in (f16 and bf16 need a backend that has them: flex does,
    /// ndarray does not).
    #[arg(long, value_enum, value_name = "T", default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// Where the weights live: `resident` (all loaded once) or `staged` (each stage's models
    /// loaded right before the stage and dropped after it: less memory, more loading).
    #[arg(long, value_enum, value_name = "M", default_value_t = Memory::Resident)]
    pub memory: Memory,
}

/// `--dtype`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats (the default).
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl From<Dtype> for FloatDType {
    fn from(d: Dtype) -> FloatDType {
        match d {
            Dtype::F32 => FloatDType::F32,
            Dtype::F16 => FloatDType::F16,
            Dtype::Bf16 => FloatDType::BF16,
        }
    }
}

/// `--memory`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Every model loaded once and kept.
    Resident,
    /// Each stage's models loaded for the stage only.
    Staged,
}

impl From<Memory> for MemoryMode {
    fn from(m: Memory) -> MemoryMode {
        match m {
            Memory::Resident => MemoryMode::Resident,
            Memory::Staged => MemoryMode::Staged,
        }
    }
}

/// `--xt` of the editing examples (`interpolate`, `text_diff`): where the decoder's `x_T` comes
/// from.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xt {
    /// The DDIM-inverted latent of the input image(s), as DALL-E 2 edits (decoded with DDIM).
    Inverted,
    /// One noise draw from `--seed`, the same for every frame.
    Seed,
    /// (interpolate) noise slerped from `--seed`'s draw to `--seed-b`'s.
    Interpolated,
}

/// Which kind of checkpoint an example needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Text -> image (`UnCLIPPipeline`: has a prior).
    TextToImage,
    /// Image -> variations (`UnCLIPImageVariationPipeline`: has a CLIP image encoder).
    ImageVariation,
}

impl ModelKind {
    fn checkpoint(self) -> &'static str {
        match self {
            ModelKind::TextToImage => "kakaobrain/karlo-v1-alpha",
            ModelKind::ImageVariation => "kakaobrain/karlo-v1-alpha-image-variations",
        }
    }
}

impl ModelArgs {
    /// The pipeline settings: the model folder's recommended settings (`unclip_settings.json`;
    /// Karlo's defaults when it has none) with the flags applied.
    pub fn settings(&self, dir: &Path) -> Result<Settings> {
        let d = Settings::from_model_dir(dir)?;
        Ok(Settings {
            prior_steps: self.prior_steps.unwrap_or(d.prior_steps),
            prior_guidance_scale: self.prior_guidance.unwrap_or(d.prior_guidance_scale),
            prior_candidates: self.prior_candidates.unwrap_or(d.prior_candidates),
            decoder_steps: self.decoder_steps.unwrap_or(d.decoder_steps),
            super_res_steps: self.super_res_steps.unwrap_or(d.super_res_steps),
            decoder_guidance_scale: self.decoder_guidance.unwrap_or(d.decoder_guidance_scale),
            decoder_sampler: self.decoder_sampler.unwrap_or(d.decoder_sampler),
            decoder_candidates: self.decoder_candidates.unwrap_or(d.decoder_candidates),
            decoder_clip_guidance_scale: self
                .clip_guidance
                .unwrap_or(d.decoder_clip_guidance_scale),
            seed: self.seed,
            ..d
        })
    }

    /// The device named by `--device`.
    pub fn device(&self) -> Result<Device> {
        unclip::nn::parse_device(&self.device).map_err(|e| format!("--device: {e}").into())
    }

    /// The model folder: `--model`, else the embedded default model (with a note).
    pub fn model_dir(&self, kind: ModelKind) -> Result<PathBuf> {
        resolve_model(self.model.as_deref(), kind)
    }

    /// Loads the pipeline of `--model` (or the fallback) on `--device`.
    pub fn load(&self, kind: ModelKind) -> Result<UnclipPipeline> {
        self.load_with(UnclipBuilder::new(), kind)
    }

    /// [`Self::load`] with a builder that may already hold components.
    pub fn load_with(&self, builder: UnclipBuilder, kind: ModelKind) -> Result<UnclipPipeline> {
        let dir = self.model_dir(kind)?;
        eprintln!(
            "loading {} (device {}, {:?}, {:?})",
            dir.display(),
            self.device,
            self.dtype,
            self.memory
        );
        let pipe = builder
            .device(self.device()?)
            .from_pretrained(&dir)
            .settings(self.settings(&dir)?)
            .dtype(self.dtype.into())
            .memory(self.memory.into())
            .build()
            .map_err(|e| format!("loading the model from {}: {e}", dir.display()))?;
        check_kind(&pipe, kind, &dir)?;
        Ok(pipe)
    }
}

/// Checks that a loaded pipeline has what `kind` needs (a prior for text -> image, an image
/// encoder for the image examples), with an error that says which checkpoint to use.
pub fn check_kind(pipe: &UnclipPipeline, kind: ModelKind, dir: &Path) -> Result<()> {
    let missing = match kind {
        ModelKind::TextToImage => pipe.prior.is_none().then_some("diffusion prior"),
        ModelKind::ImageVariation => pipe.image_encoder.is_none().then_some("CLIP image encoder"),
    };
    match missing {
        Some(what) => Err(format!(
            "{} has no {what}: this example needs {} checkpoint (e.g. {})",
            dir.display(),
            match kind {
                ModelKind::TextToImage => "a text-to-image",
                ModelKind::ImageVariation => "an image-variations",
            },
            kind.checkpoint()
        )
        .into()),
        None => Ok(()),
    }
}

/// The workspace root this binary was built from.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The embedded default model: the shapes-world model trained by unclip itself
/// (`cargo run -p xtask -- train-shapes`, see `docs/shapes.md`), committed in `models/shapes`.
pub fn default_model_dir() -> PathBuf {
    workspace_root().join("models").join("shapes")
}

/// `--model` when given (it must be a folder), else the embedded default model
/// ([`default_model_dir`]); a clear error when neither exists.
pub fn resolve_model(model: Option<&Path>, kind: ModelKind) -> Result<PathBuf> {
    if let Some(dir) = model {
        if !dir.is_dir() {
            return Err(format!("--model {}: not a folder", dir.display()).into());
        }
        return Ok(dir.to_path_buf());
    }
    let dir = default_model_dir();
    if dir.join("model_index.json").is_file() {
        eprintln!(
            "note: no --model given, using the embedded shapes-world model {}\n      \
             (trained by unclip on captions like \"a large red circle in the top left\"; pass \
             --model DIR with a diffusers folder such as a download of {} for other pictures)",
            dir.display(),
            kind.checkpoint()
        );
        return Ok(dir);
    }
    Err(format!(
        "no model: pass --model DIR, a diffusers folder such as a download of {} (the embedded \
         default model {} is missing from this checkout)",
        kind.checkpoint(),
        dir.display()
    )
    .into())
}

/// A progress bar per stage (prior, decoder, super-resolution), on standard error. With several
/// frames (interpolations, text diffs) the bars are prefixed with the frame number; when
/// standard error is not a terminal, one line is printed per finished stage instead.
pub struct StageBars {
    frames: usize,
    frame: usize,
    bar: Option<(Stage, ProgressBar)>,
}

impl StageBars {
    /// Bars for a call that decodes `frames` pictures one after the other (1 for one call).
    pub fn new(frames: usize) -> Self {
        StageBars {
            frames,
            frame: 0,
            bar: None,
        }
    }

    fn prefix(&self) -> String {
        if self.frames > 1 && self.frame > 0 {
            format!("frame {}/{} ", self.frame.max(1), self.frames)
        } else {
            String::new()
        }
    }

    /// The pipeline's progress callback: `pipe.text_to_image(.., &mut |p| bars.update(p))`.
    pub fn update(&mut self, p: Progress) -> Control {
        let new_stage = match &self.bar {
            Some((stage, _)) => *stage != p.stage || p.step == 1,
            None => true,
        };
        if new_stage {
            if let Some((_, old)) = self.bar.take() {
                old.abandon();
            }
            if p.stage == Stage::Decoder {
                self.frame += 1;
            }
            let bar = ProgressBar::new(p.total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix}{msg} [{bar:30}] {pos}/{len} ({elapsed})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(self.prefix());
            self.bar = Some((p.stage, bar));
        }
        let (_, bar) = self.bar.as_ref().expect("a bar");
        bar.set_message(format!("{:<16} t={:>4}", p.stage.to_string(), p.timestep));
        bar.set_position(p.step as u64);
        if p.step == p.total {
            bar.finish();
            if bar.is_hidden() {
                eprintln!("{}{}: {}/{} steps", self.prefix(), p.stage, p.step, p.total);
            }
        }
        Control::Continue
    }
}

/// Reads an image file (PNG) as 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let img = image::open(path)
        .map_err(|e| format!("reading {}: {e} (PNG images are supported)", path.display()))?;
    Ok(img.to_rgb8())
}

/// Writes a PNG, creating its folder.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    img.save(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// Every picture of a list of generations, in order.
pub fn pictures(generations: &[Generation]) -> Result<Vec<RgbImage>> {
    let mut out = Vec::new();
    for g in generations {
        out.extend(g.to_rgb8()?);
    }
    Ok(out)
}

/// Pictures side by side (one row), 2 pixels apart.
pub fn strip(images: &[RgbImage]) -> RgbImage {
    unclip_shapes::contact_sheet(images, images.len(), 2)
}

/// Pictures in a grid of `columns`, 2 pixels apart.
pub fn sheet(images: &[RgbImage], columns: usize) -> RgbImage {
    unclip_shapes::contact_sheet(images, columns, 2)
}

/// Runs an example's body; prints an error (with its causes) and exits non-zero on failure.
pub fn run(body: impl FnOnce() -> Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    /// The flags replace the folder's recommendations field by field; the rest stay the folder's.
    #[test]
    fn flags_override_the_folder_settings() {
        let dir =
            std::env::temp_dir().join(format!("unclip-examples-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join(unclip::SETTINGS_FILE),
            r#"{"decoder_steps": 250, "decoder_guidance_scale": 3.0, "prior_guidance_scale": 2.0, "decoder_candidates": 3, "decoder_clip_guidance_scale": 20.0}"#,
        )
        .expect("write");
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .expect("flags");
            cli.model.settings(&dir).expect("settings")
        };
        let s = parse(&[]);
        assert_eq!(
            (
                s.decoder_steps,
                s.decoder_guidance_scale,
                s.prior_guidance_scale
            ),
            (250, 3.0, 2.0)
        );
        assert_eq!(s.decoder_sampler, unclip::Sampler::Ancestral);
        assert_eq!(s.decoder_candidates, 3);
        assert_eq!(s.decoder_clip_guidance_scale, 20.0);
        let s = parse(&[
            "--clip-guidance",
            "0",
            "--decoder-candidates",
            "1",
            "--decoder-guidance",
            "1",
            "--decoder-sampler",
            "ddim:0.5",
            "--seed",
            "4",
        ]);
        assert_eq!(
            (s.decoder_steps, s.decoder_guidance_scale, s.seed),
            (250, 1.0, 4)
        );
        assert_eq!(s.decoder_sampler, unclip::Sampler::Ddim { eta: 0.5 });
        assert_eq!(s.decoder_candidates, 1);
        assert_eq!(s.decoder_clip_guidance_scale, 0.0);
        assert!(Cli::try_parse_from(["x", "--decoder-sampler", "euler"]).is_err());
        let s = parse(&[
            "--prior-steps",
            "7",
            "--prior-guidance",
            "1.5",
            "--prior-candidates",
            "2",
        ]);
        assert_eq!(
            (s.prior_steps, s.prior_guidance_scale, s.prior_candidates),
            (7, 1.5, 2)
        );
        assert_eq!(s.decoder_steps, 250);
        let cli =
            Cli::try_parse_from(["x", "--dtype", "bf16", "--memory", "staged"]).expect("flags");
        assert_eq!(FloatDType::from(cli.model.dtype), FloatDType::BF16);
        assert_eq!(MemoryMode::from(cli.model.memory), MemoryMode::Staged);
        let cli = Cli::try_parse_from(["x"]).expect("no flags");
        assert_eq!(FloatDType::from(cli.model.dtype), FloatDType::F32);
        assert_eq!(MemoryMode::from(cli.model.memory), MemoryMode::Resident);
        assert!(Cli::try_parse_from(["x", "--dtype", "f64"]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
