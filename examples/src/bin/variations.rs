//! Image -> K variations (CLIP image embedding -> decoder -> super-resolution, fresh noise per
//! variation), written as one contact sheet PNG.
//!
//! ```sh
//! cargo run -p unclip-examples --bin variations -- --model karlo-v1-alpha-image-variations --image in.png -k 4
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use unclip_examples::{ModelArgs, ModelKind, StageBars, load_rgb, run, save_png, sheet};

/// Variations of an image, as one contact sheet (needs an image-variations checkpoint).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The input image (PNG).
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// Number of variations.
    #[arg(short = 'k', long = "count", value_name = "K", default_value_t = 4)]
    k: usize,
    /// Columns of the contact sheet (default: up to 4).
    #[arg(long, value_name = "N")]
    columns: Option<usize>,
    /// Output PNG (the contact sheet).
    #[arg(long, value_name = "FILE", default_value = "out/variations.png")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run(|| {
        if args.k == 0 {
            return Err("-k must be at least 1".into());
        }
        let image = load_rgb(&args.image)?;
        let pipe = args.model.load(ModelKind::ImageVariation, None)?;
        let mut bars = StageBars::new(1);
        let out = pipe.variations(&[image], args.k, &mut |p| bars.update(p))?;
        let pictures = out.to_rgb8()?;
        let columns = args.columns.unwrap_or(args.k.min(4));
        save_png(&sheet(&pictures, columns), &args.out)?;
        let (w, h) = (pictures[0].width(), pictures[0].height());
        println!(
            "wrote {} ({} variations of {}, {w}x{h} each)",
            args.out.display(),
            args.k,
            args.image.display()
        );
        Ok(())
    })
}
