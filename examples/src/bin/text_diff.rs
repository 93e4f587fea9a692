//! Text diff (DALL-E 2 §3.3): an image's CLIP embedding moved toward the difference of two
//! captions' text embeddings, by slerp with theta in [0, 0.5]; written as one strip PNG (left:
//! theta = 0, the image's own embedding). With `--xt inverted` (the default, the paper's) every
//! frame is decoded from the image's DDIM-inverted decoder latent, so the picture changes only
//! where the text asks; `--xt seed` decodes every frame from one noise draw of `--seed`.
//!
//! ```sh
//! cargo run -p unclip-examples --bin text_diff -- --image red_circle.png \
//!     --from "a large red circle in the top left" --to "a large blue circle in the top left"
//! cargo run -p unclip-examples --bin text_diff -- --model karlo-v1-alpha-image-variations \
//!     --image cat.png --from "a photo of a cat" --to "an anime drawing of a super saiyan cat" --steps 5
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use unclip::XtMode;
use unclip_examples::{
    ModelArgs, ModelKind, StageBars, Xt, load_rgb, pictures, run, save_png, strip,
};

/// Edits an image by a text diff, as a strip over theta in [0, --max-theta] (needs an
/// image-variations checkpoint).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The input image (PNG).
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// A caption of the image as it is.
    #[arg(long, value_name = "TEXT")]
    from: String,
    /// A caption of the image as it should become.
    #[arg(long, value_name = "TEXT")]
    to: String,
    /// Frames of the strip (theta = 0, ..., --max-theta; at least 2).
    #[arg(long, value_name = "K", default_value_t = 5)]
    steps: usize,
    /// The last frame's theta (the paper goes to 0.5).
    #[arg(long, value_name = "T", default_value_t = 0.5)]
    max_theta: f32,
    /// Where the decoder's x_T comes from: `inverted` (the image's DDIM-inverted latent) or
    /// `seed` (one draw of --seed for every frame).
    #[arg(long, value_enum, value_name = "X", default_value_t = Xt::Inverted)]
    xt: Xt,
    /// Output PNG (the strip).
    #[arg(long, value_name = "FILE", default_value = "out/text_diff.png")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run(|| {
        if args.steps < 2 {
            return Err("--steps must be at least 2".into());
        }
        let xt = match args.xt {
            Xt::Inverted => XtMode::Inverted,
            Xt::Seed => XtMode::Fixed {
                seed: args.model.seed,
            },
            Xt::Interpolated => {
                return Err(
                    "--xt interpolated is for interpolations: a text diff holds x_T \
                            fixed (inverted or seed)"
                        .into(),
                );
            }
        };
        let image = load_rgb(&args.image)?;
        let pipe = args.model.load(ModelKind::ImageVariation)?;
        let thetas: Vec<f32> = (0..args.steps)
            .map(|k| args.max_theta * k as f32 / (args.steps - 1) as f32)
            .collect();
        let mut bars = StageBars::new(thetas.len());
        let frames = pipe.text_diff(image, &args.from, &args.to, &thetas, xt, &mut |p| {
            bars.update(p)
        })?;
        save_png(&strip(&pictures(&frames)?), &args.out)?;
        let thetas: Vec<String> = thetas.iter().map(|t| format!("{t:.3}")).collect();
        println!(
            "wrote {} ({} frames, theta = {}, x_T {:?})",
            args.out.display(),
            frames.len(),
            thetas.join(", "),
            args.xt
        );
        Ok(())
    })
}
