//! Interpolation (DALL-E 2 §3.2): slerp between two CLIP image embeddings, written as one strip
//! PNG. The second end is another image, or a prompt (its image embedding sampled by the
//! diffusion prior). The decoder's x_T: `--xt inverted` (the default, the paper's) slerps the two
//! images' DDIM-inverted latents (a prompt end takes the image's), `--xt seed` uses one noise
//! draw of `--seed` for every frame, `--xt interpolated` slerps `--seed`'s draw to `--seed-b`'s.
//!
//! ```sh
//! cargo run -p unclip-examples --bin interpolate -- --model karlo-v1-alpha-image-variations \
//!     --image-a a.png --image-b b.png --frames 6
//! cargo run -p unclip-examples --bin interpolate -- --model karlo-v1-alpha-image-variations \
//!     --prior-model karlo-v1-alpha --image-a a.png --prompt "a blue square" --frames 6
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use unclip::diffusion::{SeededNoise, UnCLIPScheduler};
use unclip::prior::PriorTransformer;
use unclip::{Endpoint, UnclipBuilder, UnclipPipeline, XtMode};
use unclip_examples::{
    ModelArgs, ModelKind, Result, StageBars, Xt, load_rgb, pictures, run, save_png, strip,
};

/// Interpolates between an image and another image or a prompt, as a strip of frames (needs an
/// image-variations checkpoint; with --prompt also a diffusion prior).
#[derive(Parser, Debug)]
#[command(version, group(ArgGroup::new("end").required(true).args(["image_b", "prompt"])))]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The first end (PNG).
    #[arg(long, value_name = "A")]
    image_a: PathBuf,
    /// The second end: an image (PNG) ...
    #[arg(long, value_name = "B")]
    image_b: Option<PathBuf>,
    /// ... or a prompt, whose image embedding the diffusion prior samples.
    #[arg(long, value_name = "P")]
    prompt: Option<String>,
    /// Frames of the strip, both ends included (at least 2).
    #[arg(long, value_name = "K", default_value_t = 5)]
    frames: usize,
    /// With --prompt: a text-to-image folder (e.g. karlo-v1-alpha) to take the prior and its
    /// scheduler from, when --model (an image-variations folder) has none. Its prior must be
    /// conditioned on the same CLIP as --model's text encoder.
    #[arg(long, value_name = "DIR")]
    prior_model: Option<PathBuf>,
    /// Where the decoder's x_T comes from: `inverted` (the images' DDIM-inverted latents),
    /// `seed` (one draw of --seed for every frame) or `interpolated` (--seed's draw slerped to
    /// --seed-b's).
    #[arg(long, value_enum, value_name = "X", default_value_t = Xt::Inverted)]
    xt: Xt,
    /// With `--xt interpolated`: the seed of the last frame's x_T.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed_b: u64,
    /// Output PNG (the strip).
    #[arg(long, value_name = "FILE", default_value = "out/interpolate.png")]
    out: PathBuf,
}

fn load(args: &Args) -> Result<(UnclipPipeline, PathBuf)> {
    let device = args.model.device()?;
    let dir = args.model.model_dir(ModelKind::ImageVariation)?;
    let mut builder = UnclipBuilder::new();
    if let (Some(p), Some(_)) = (&args.prior_model, &args.prompt) {
        let prior = PriorTransformer::from_pretrained(p.join("prior"), &device)
            .map_err(|e| format!("--prior-model {}: {e}", p.display()))?;
        let scheduler = UnCLIPScheduler::from_file(p.join("prior_scheduler/scheduler_config.json"))
            .map_err(|e| format!("--prior-model {}: {e}", p.display()))?;
        builder = builder.prior(prior).prior_scheduler(scheduler);
    }
    let pipe = args.model.load_with(builder, ModelKind::ImageVariation)?;
    Ok((pipe, dir))
}

fn main() -> ExitCode {
    let args = Args::parse();
    run(|| {
        if args.frames < 2 {
            return Err("--frames must be at least 2".into());
        }
        let image_a = load_rgb(&args.image_a)?;
        let image_b = args.image_b.as_deref().map(load_rgb).transpose()?;
        let (pipe, dir) = load(&args)?;
        let mut bars = StageBars::new(args.frames);
        let xt = match args.xt {
            Xt::Inverted => XtMode::Inverted,
            Xt::Seed => XtMode::Fixed {
                seed: args.model.seed,
            },
            Xt::Interpolated => XtMode::Interpolated {
                seed: args.model.seed,
                seed_b: args.seed_b,
            },
        };
        let (a, b, end): (Endpoint, Endpoint, String) = match (image_b, &args.prompt) {
            (Some(image_b), _) => {
                let name = args.image_b.as_ref().map(|p| p.display().to_string());
                (image_a.into(), image_b.into(), name.unwrap_or_default())
            }
            (None, Some(prompt)) => {
                let a = pipe.encode_images(std::slice::from_ref(&image_a))?;
                let Some(prior) = &pipe.prior else {
                    return Err(format!(
                        "--prompt needs a diffusion prior and {} has none (an image-variations \
                         checkpoint): pass --prior-model DIR, the text-to-image checkpoint of the same \
                         CLIP (e.g. karlo-v1-alpha)",
                        dir.display()
                    )
                    .into());
                };
                let cond = pipe.encode_text(&[prompt.as_str()])?;
                let uncond = pipe.encode_text(&[""])?;
                let (e_text, e_prior) = (cond.embeds.dims()[1], prior.config().embedding_dim);
                let (e_image, e_out) = (a.dims()[1], prior.config().clip_embed_dim());
                if e_text != e_prior || e_image != e_out {
                    return Err(format!(
                        "the prior does not fit this model: it takes {e_prior}-wide text embeddings and \
                         gives {e_out}-wide image embeddings, the model's CLIP has {e_text} / {e_image} \
                         (the prior must come from the text-to-image checkpoint of the same CLIP)"
                    )
                    .into());
                }
                let mut noise = SeededNoise::new(args.model.seed);
                let b =
                    pipe.sample_prior(&cond, &uncond, None, &mut noise, &mut |p| bars.update(p))?;
                (image_a.into(), b.into(), format!("{prompt:?}"))
            }
            (None, None) => return Err("give --image-b or --prompt".into()),
        };
        let frames = pipe.interpolate(a, b, args.frames, xt, &mut |p| bars.update(p))?;
        save_png(&strip(&pictures(&frames)?), &args.out)?;
        println!(
            "wrote {} ({} frames from {} to {end})",
            args.out.display(),
            frames.len(),
            args.image_a.display()
        );
        Ok(())
    })
}
