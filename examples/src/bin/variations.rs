//! Image -> K variations (CLIP image embedding -> decoder -> super-resolution), written as one
//! contact sheet PNG. `--mode fresh` (the default, Karlo's image-variation pipeline) decodes from
//! fresh noise; `--mode inverted` starts from the image's DDIM-inverted decoder latent and
//! samples back with DDIM of `--eta` (DALL-E 2 §3.1: 0 gives the image back, larger gives freer
//! variations).
//!
//! ```sh
//! cargo run -p unclip-examples --bin variations -- --model karlo-v1-alpha-image-variations --image in.png -k 4
//! cargo run -p unclip-examples --bin variations -- --image in.png --mode inverted --eta 0.5
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use unclip::diffusion::SeededNoise;
use unclip_examples::{ModelArgs, ModelKind, StageBars, load_rgb, run, save_png, sheet};

/// Where a variation's decoder latent comes from.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fresh noise for each variation.
    Fresh,
    /// The input's DDIM-inverted latent, sampled back with DDIM of `--eta`.
    Inverted,
}

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
    /// Where the decoder starts: fresh noise, or the input's DDIM-inverted latent.
    #[arg(long, value_enum, value_name = "M", default_value_t = Mode::Fresh)]
    mode: Mode,
    /// With `--mode inverted`: how far to invert, in (0, 1] (1: all the way to x_T).
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    strength: f32,
    /// With `--mode inverted`: DDIM's eta when sampling back (0: the input again; 1: about as
    /// free as ancestral sampling).
    #[arg(long, value_name = "ETA", default_value_t = 0.5)]
    eta: f32,
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
        let pipe = args.model.load(ModelKind::ImageVariation)?;
        let mut bars = StageBars::new(1);
        let out = match args.mode {
            Mode::Fresh => pipe.variations(&[image], args.k, &mut |p| bars.update(p))?,
            Mode::Inverted => {
                let latent = pipe.invert_to(&[image], args.strength, &mut |p| bars.update(p))?;
                let mut noise = SeededNoise::new(args.model.seed);
                pipe.decode_latent(
                    &latent.repeat(args.k),
                    None,
                    args.eta,
                    &mut noise,
                    &mut |p| bars.update(p),
                )?
            }
        };
        let pictures = out.to_rgb8()?;
        let columns = args.columns.unwrap_or(args.k.min(4));
        save_png(&sheet(&pictures, columns), &args.out)?;
        let (w, h) = (pictures[0].width(), pictures[0].height());
        println!(
            "wrote {} ({} variations of {}, {w}x{h} each, {:?})",
            args.out.display(),
            args.k,
            args.image.display(),
            args.mode
        );
        Ok(())
    })
}
