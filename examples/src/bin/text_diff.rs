//! Text diff (DALL-E 2 §3): an image's CLIP embedding moved toward the difference of two captions'
//! text embeddings, by slerp with theta in [0, 0.5], decoded with the same noise for every frame;
//! written as one strip PNG (left: theta = 0, the image's own embedding).
//!
//! ```sh
//! cargo run -p unclip-examples --bin text_diff -- --model karlo-v1-alpha-image-variations \
//!     --image cat.png --from "a photo of a cat" --to "an anime drawing of a super saiyan cat" --steps 5
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use unclip_examples::{ModelArgs, ModelKind, StageBars, load_rgb, pictures, run, save_png, strip};

/// Edits an image by a text diff, as a strip over theta in [0, 0.5] (needs an image-variations
/// checkpoint).
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
    /// Frames of the strip (theta = 0, ..., 0.5; at least 2).
    #[arg(long, value_name = "K", default_value_t = 5)]
    steps: usize,
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
        let image = load_rgb(&args.image)?;
        let pipe = args.model.load(ModelKind::ImageVariation, None)?;
        let z = pipe.encode_images(&[image])?;
        let thetas: Vec<f32> = (0..args.steps)
            .map(|k| 0.5 * k as f32 / (args.steps - 1) as f32)
            .collect();
        let mut bars = StageBars::new(thetas.len());
        let frames = pipe.text_diff(z, &args.from, &args.to, &thetas, &mut |p| bars.update(p))?;
        save_png(&strip(&pictures(&frames)?), &args.out)?;
        let thetas: Vec<String> = thetas.iter().map(|t| format!("{t:.3}")).collect();
        println!(
            "wrote {} ({} frames, theta = {})",
            args.out.display(),
            frames.len(),
            thetas.join(", ")
        );
        Ok(())
    })
}
