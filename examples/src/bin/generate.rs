//! Text -> image: one PNG per prompt, `OUT/000.png`, `OUT/001.png`, ... in prompt order.
//!
//! ```sh
//! cargo run -p unclip-examples --bin generate -- --model karlo-v1-alpha "a red circle" "a blue square"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use unclip_examples::{ModelArgs, ModelKind, StageBars, run, save_png};

/// Generates one picture per prompt (DALL-E 2 / unCLIP: prior -> decoder -> super-resolution).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Output folder: OUT/000.png, OUT/001.png, ... one per prompt, in order.
    #[arg(long, value_name = "DIR", default_value = "out/generate")]
    out: PathBuf,
    /// The prompts (one picture each).
    #[arg(value_name = "PROMPT", required = true)]
    prompts: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run(|| {
        let pipe = args.model.load(ModelKind::TextToImage)?;
        let prompts: Vec<&str> = args.prompts.iter().map(String::as_str).collect();
        let mut bars = StageBars::new(1);
        let out = pipe.text_to_image(&prompts, &mut |p| bars.update(p))?;
        for (i, (img, prompt)) in out.to_rgb8()?.iter().zip(&prompts).enumerate() {
            let path = args.out.join(format!("{i:03}.png"));
            save_png(img, &path)?;
            println!(
                "{}  ({}x{})  {prompt:?}",
                path.display(),
                img.width(),
                img.height()
            );
        }
        println!(
            "wrote {} picture(s) to {}",
            prompts.len(),
            args.out.display()
        );
        Ok(())
    })
}
