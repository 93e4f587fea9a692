//! `eval-shapes`: measures a shapes model (by default the embedded `models/shapes`) through
//! the public pipeline, as a user runs it:
//!
//! - caption fidelity: text -> image for the canonical caption of every held-out combination
//!   and of as many seen ones, scored by the pixel oracle (per attribute and all four);
//! - variations: held-out renders -> variations, oracle agreement with the input's attributes;
//! - interpolation: frames between two renders with different attributes, read by the oracle
//!   (the first frames should read as image A, the last as image B);
//! - contact sheets of each, written as PNG.

use std::fmt::Write as _;
use std::path::PathBuf;

use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use unclip::{Control, Settings, UnclipBuilder, UnclipPipeline};
use unclip_shapes::{
    Attributes, Background, Scene, Score, Split, caption, combinations, contact_sheet, oracle,
};

use crate::shapes::Error;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// The model folder.
    #[arg(long, default_value = "models/shapes")]
    pub model: PathBuf,
    /// Images per combination.
    #[arg(long, default_value_t = 2)]
    pub per_combo: usize,
    /// Seen (training) combinations to score, drawn at random (the held-out ones are all
    /// scored).
    #[arg(long, default_value_t = 40)]
    pub seen: usize,
    /// Held-out combinations to score (default: all 40).
    #[arg(long)]
    pub held: Option<usize>,
    /// Prompts per pipeline call.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long)]
    pub decoder_steps: Option<usize>,
    #[arg(long)]
    pub prior_steps: Option<usize>,
    #[arg(long)]
    pub super_res_steps: Option<usize>,
    #[arg(long)]
    pub decoder_guidance: Option<f32>,
    #[arg(long)]
    pub prior_guidance: Option<f32>,
    /// Decoder sampler: `ancestral`, `ddim` or `ddim:<eta>` (default: the folder's).
    #[arg(long)]
    pub decoder_sampler: Option<unclip::Sampler>,
    /// Decoder samples per image reranked by CLIP (default: the folder's).
    #[arg(long)]
    pub decoder_candidates: Option<usize>,
    /// GLIDE's CLIP guidance scale of the decoder (default: the folder's).
    #[arg(long)]
    pub decoder_clip_guidance: Option<f32>,
    /// Seed of the first pipeline call of the caption-fidelity check (call k uses seed + k).
    #[arg(long, default_value_t = 1000)]
    pub seed: u64,
    /// Skip the variations and interpolation checks.
    #[arg(long)]
    pub text_only: bool,
    /// Held-out renders to take variations of (3 each).
    #[arg(long, default_value_t = 16)]
    pub variation_inputs: usize,
    /// Skip the interpolation strips.
    #[arg(long)]
    pub no_interpolation: bool,
    /// Where to write the contact sheets (none when absent).
    #[arg(long)]
    pub sheets: Option<PathBuf>,
    /// Write the report (markdown) here as well as to stdout.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Per-attribute tallies.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tally {
    pub n: usize,
    pub shape: usize,
    pub colour: usize,
    pub size: usize,
    pub position: usize,
    pub all: usize,
    /// `[wanted shape][read shape, or 3 when the oracle could not read the image]`.
    pub shape_confusion: [[usize; 4]; 3],
    /// Right shapes among `[small, large]` wanted sizes, and the counts.
    pub shape_by_size: [(usize, usize); 2],
}

impl Tally {
    pub fn add(&mut self, s: &Score) {
        self.n += 1;
        self.shape += s.shape as usize;
        self.colour += s.colour as usize;
        self.size += s.size as usize;
        self.position += s.position as usize;
        self.all += s.all() as usize;
    }

    /// Scores an image against the wanted attributes and records the shape read.
    pub fn add_image(&mut self, image: &RgbImage, want: &Attributes) {
        let read = oracle::read(image).ok();
        self.add_reading(want, read.map(|r| r.attributes).as_ref());
    }

    /// Scores a reading (`None`: unreadable) against the wanted attributes and records its
    /// shape.
    pub fn add_reading(&mut self, want: &Attributes, read: Option<&Attributes>) {
        let score = read.map(|r| Score::compare(r, want)).unwrap_or_default();
        self.add(&score);
        let got = read.map(|r| r.shape.index()).unwrap_or(3);
        self.shape_confusion[want.shape.index()][got] += 1;
        let by = &mut self.shape_by_size[want.size.index()];
        by.0 += score.shape as usize;
        by.1 += 1;
    }

    /// The shape confusion and the shape accuracy per size, as markdown.
    pub fn shape_breakdown(&self) -> String {
        let names = unclip_shapes::Shape::all().map(|s| s.name());
        let mut out = String::from(
            "| wanted \\ read | circle | square | triangle | unreadable |\n|---|---|---|---|---|\n",
        );
        for (i, row) in self.shape_confusion.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
            out += &format!("| {} | {} |\n", names[i], cells.join(" | "));
        }
        out += &format!("\nShape right: {}.\n", self.shape_by_size_line());
        out
    }

    /// `small a/b, large c/d`: right shapes per wanted size.
    pub fn shape_by_size_line(&self) -> String {
        let [small, large] = self.shape_by_size;
        format!(
            "small {}/{}, large {}/{}",
            small.0, small.1, large.0, large.1
        )
    }

    fn pct(&self, c: usize) -> f64 {
        100.0 * c as f64 / self.n.max(1) as f64
    }

    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
            self.n,
            self.pct(self.shape),
            self.pct(self.colour),
            self.pct(self.size),
            self.pct(self.position),
            self.pct(self.all)
        )
    }
}

/// The model folder's recommended settings with the flags applied.
fn settings(args: &EvalArgs) -> Result<Settings, Error> {
    let d = Settings::from_model_dir(&args.model)?;
    Ok(Settings {
        decoder_steps: args.decoder_steps.unwrap_or(d.decoder_steps),
        prior_steps: args.prior_steps.unwrap_or(d.prior_steps),
        super_res_steps: args.super_res_steps.unwrap_or(d.super_res_steps),
        decoder_guidance_scale: args.decoder_guidance.unwrap_or(d.decoder_guidance_scale),
        prior_guidance_scale: args.prior_guidance.unwrap_or(d.prior_guidance_scale),
        decoder_sampler: args.decoder_sampler.unwrap_or(d.decoder_sampler),
        decoder_candidates: args.decoder_candidates.unwrap_or(d.decoder_candidates),
        decoder_clip_guidance_scale: args
            .decoder_clip_guidance
            .unwrap_or(d.decoder_clip_guidance_scale),
        ..d
    })
}

/// Generates the canonical caption of each combination `per` times and scores the images.
/// Returns the tally, the tally of the decoder's own outputs (bicubic to the final size, no
/// super-resolution) and the images (in order).
pub fn caption_fidelity(
    pipe: &mut UnclipPipeline,
    combos: &[Attributes],
    per: usize,
    batch: usize,
    seed: u64,
) -> Result<(Tally, Tally, Vec<RgbImage>), Error> {
    let prompts: Vec<(Attributes, String)> = (0..per)
        .flat_map(|_| combos.iter().map(|a| (*a, caption(a, 0))))
        .collect();
    let mut tally = Tally::default();
    let mut small_tally = Tally::default();
    let mut images = Vec::new();
    for (k, chunk) in prompts.chunks(batch).enumerate() {
        pipe.settings.seed = seed + k as u64;
        let texts: Vec<&str> = chunk.iter().map(|(_, p)| p.as_str()).collect();
        let out = pipe.text_to_image(&texts, &mut |_| Control::Continue)?;
        let [_, _, side, _] = out.images.dims();
        let small =
            unclip_upsampler::resize_bicubic_antialias(out.image_small.clone(), [side, side])
                .clamp(-1.0, 1.0);
        let small = unclip_upsampler::to_rgb8(unclip_upsampler::to_unit_range(small))?;
        for ((img, sm), (a, _)) in out.to_rgb8()?.into_iter().zip(small).zip(chunk) {
            tally.add_image(&img, a);
            small_tally.add_image(&sm, a);
            images.push(img);
        }
        eprint!(".");
    }
    eprintln!();
    Ok((tally, small_tally, images))
}

pub fn eval(args: &EvalArgs) -> Result<(), Error> {
    let t0 = std::time::Instant::now();
    let mut pipe = UnclipBuilder::new()
        .device(crate::shapes::compute_device()?)
        .from_pretrained(&args.model)
        .settings(settings(args)?)
        .build()?;
    let s = pipe.settings.clone();
    let mut report = String::new();
    writeln!(
        report,
        "Model `{}`; settings: prior {} steps (guidance {}), decoder {} steps (guidance {}, {}, \
         {} candidate(s) per image reranked by CLIP, CLIP guidance {}), super-resolution {} steps per stage; \
         canonical captions (\"a {{size}} {{colour}} {{shape}} in the {{position}}\"), {} image(s) \
         per combination.\n",
        args.model.display(),
        s.prior_steps,
        s.prior_guidance_scale,
        s.decoder_steps,
        s.decoder_guidance_scale,
        s.decoder_sampler,
        s.decoder_candidates,
        s.decoder_clip_guidance_scale,
        s.super_res_steps,
        args.per_combo
    )?;
    let mut held = combinations(Split::HeldOut);
    held.truncate(args.held.unwrap_or(held.len()));
    let mut seen = combinations(Split::Train);
    seen.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    seen.truncate(args.seen);
    let (th, thd, ih) = caption_fidelity(&mut pipe, &held, args.per_combo, args.batch, args.seed)?;
    let (ts, tsd, is) = caption_fidelity(&mut pipe, &seen, args.per_combo, args.batch, args.seed)?;
    writeln!(report, "Caption fidelity (oracle on the final images):\n")?;
    writeln!(
        report,
        "| combinations | images | shape | colour | size | position | all four |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|---|")?;
    writeln!(report, "{}", th.row("held out"))?;
    if ts.n > 0 {
        writeln!(report, "{}", ts.row("seen"))?;
    }
    writeln!(
        report,
        "{}",
        thd.row("held out, decoder output (bicubic, no super-resolution)")
    )?;
    if tsd.n > 0 {
        writeln!(
            report,
            "{}",
            tsd.row("seen, decoder output (bicubic, no super-resolution)")
        )?;
    }
    writeln!(
        report,
        "\nShapes read on the held-out images:\n\n{}",
        th.shape_breakdown()
    )?;
    if let Some(dir) = &args.sheets {
        std::fs::create_dir_all(dir)?;
        let n = ih.len().min(24);
        contact_sheet(&ih[..n], 8, 2).save(dir.join("shapes_held_out.png"))?;
        contact_sheet(&is[..n.min(is.len())], 8, 2).save(dir.join("shapes_seen.png"))?;
    }
    if !args.text_only {
        pipe.settings.seed = 5;
        // Variations of held-out renders.
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let side = 128;
        let inputs: Vec<(Attributes, RgbImage)> = combinations(Split::HeldOut)
            .iter()
            .take(args.variation_inputs)
            .map(|a| (*a, Scene::random(*a, &mut rng).render(side)))
            .collect();
        let per = 3;
        let mut tally = Tally::default();
        let mut sheet = Vec::new();
        for chunk in inputs.chunks(4) {
            let imgs: Vec<RgbImage> = chunk.iter().map(|(_, i)| i.clone()).collect();
            let out = pipe
                .variations(&imgs, per, &mut |_| Control::Continue)?
                .to_rgb8()?;
            // Output order: image-major (per_image variations of each input in turn).
            for (i, (a, input)) in chunk.iter().enumerate() {
                sheet.push(input.clone());
                for v in &out[i * per..(i + 1) * per] {
                    tally.add(&oracle::score(v, a));
                    sheet.push(v.clone());
                }
            }
        }
        writeln!(
            report,
            "\nVariations of {} held-out renders ({per} each): agreement of the oracle's reading \
             with the input's attributes:\n",
            inputs.len()
        )?;
        writeln!(
            report,
            "| inputs | variations | shape | colour | size | position | all four |"
        )?;
        writeln!(report, "|---|---|---|---|---|---|---|")?;
        writeln!(report, "{}", tally.row(&inputs.len().to_string()))?;
        if let Some(dir) = &args.sheets {
            contact_sheet(&sheet[..sheet.len().min(32)], 1 + per, 2)
                .save(dir.join("shapes_variations.png"))?;
        }
        // Interpolation between two renders with every attribute different.
        let pairs = if args.no_interpolation {
            vec![]
        } else {
            vec![
                (
                    Attributes::all()[0],
                    Attributes::all()[Attributes::COUNT - 1],
                ),
                (Attributes::all()[40], Attributes::all()[250]),
                (Attributes::all()[100], Attributes::all()[300]),
            ]
        };
        let frames = 7;
        let mut strips = Vec::new();
        let mut ends_ok = 0;
        let mut moves = Vec::new();
        for &(a, b) in &pairs {
            let ia = Scene::new(a, Background::Black).render(side);
            let ib = Scene::new(b, Background::Black).render(side);
            let emb = pipe.encode_images(&[ia.clone(), ib.clone()])?;
            let ea = emb.clone().slice([0..1]);
            let eb = emb.slice([1..2]);
            let fixed = unclip::XtMode::Fixed {
                seed: pipe.settings.seed,
            };
            let gens = pipe.interpolate(ea, eb, frames, fixed, &mut |_| Control::Continue)?;
            let mut row = vec![ia.clone()];
            let mut from_a = Vec::new();
            for g in &gens {
                let img = g.to_rgb8()?.remove(0);
                // Fraction of attributes matching A minus matching B, in [-1, 1].
                let (sa, sb) = (oracle::score(&img, &a), oracle::score(&img, &b));
                from_a.push(sa.count() as f64 / 4.0 - sb.count() as f64 / 4.0);
                row.push(img);
            }
            row.push(ib);
            if from_a.first().copied().unwrap_or(0.0) > 0.0
                && from_a.last().copied().unwrap_or(0.0) < 0.0
            {
                ends_ok += 1;
            }
            moves.push(from_a);
            strips.extend(row);
        }
        if !pairs.is_empty() {
            writeln!(
                report,
                "\nInterpolation ({frames} frames, x_T fixed) between renders A and B that differ in every \
             attribute; per frame (matching attributes of A - matching of B) / 4, +1 = reads as A, \
             -1 = reads as B:\n"
            )?;
            for (i, m) in moves.iter().enumerate() {
                let cells: Vec<String> = m.iter().map(|v| format!("{v:+.2}")).collect();
                writeln!(
                    report,
                    "- {} -> {}: {}",
                    caption(&pairs[i].0, 0),
                    caption(&pairs[i].1, 0),
                    cells.join(" ")
                )?;
            }
            writeln!(
                report,
                "\n{ends_ok}/{} strips start reading as A and end reading as B.",
                pairs.len()
            )?;
            if let Some(dir) = &args.sheets {
                contact_sheet(&strips, frames + 2, 2).save(dir.join("shapes_interpolation.png"))?;
            }
        }
    }
    writeln!(
        report,
        "\n(eval wall time {:.0} s, device `{}`)",
        t0.elapsed().as_secs_f64(),
        crate::shapes::compute_device_name()
    )?;
    println!("{report}");
    if let Some(p) = &args.report {
        std::fs::write(p, &report)?;
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalSrArgs {
    /// The run folder written by `train-shapes`.
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    /// Stage: 1 (32 -> 64) or 2 (64 -> 128).
    #[arg(long, default_value_t = 1)]
    pub stage: usize,
    /// Sampling steps.
    #[arg(long, default_value_t = 7)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub images: usize,
    /// The stage's folder name in the run (default sr1 / sr2).
    #[arg(long)]
    pub folder: Option<String>,
    /// Write a sheet (rows: target, bicubic, sample) here.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
}

/// A crop-trained super-resolution stage on full held-out images: MSE of its samples and of
/// the plain bicubic upsample against the full-resolution render (in [-1, 1]), and the oracle
/// on both.
pub fn eval_sr(args: &EvalSrArgs) -> Result<(), Error> {
    use unclip_diffusion::{SeededNoise, UnCLIPScheduler};
    use unclip_upsampler::{
        SuperResRequest, UNet2DModel, resize_bicubic_antialias, sample_super_res,
    };
    let device = crate::shapes::compute_device()?;
    let default = if args.stage == 1 { "sr1" } else { "sr2" };
    let name = args.folder.as_deref().unwrap_or(default);
    let model = UNet2DModel::from_pretrained(args.run.join(name), &device)?;
    let side = crate::shapes::BASE << args.stage;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let held = combinations(Split::HeldOut);
    let scenes: Vec<(Attributes, Scene)> = (0..args.images)
        .map(|i| {
            let a = held[i % held.len()];
            (a, Scene::random(a, &mut rng))
        })
        .collect();
    let examples: Vec<unclip_shapes::Example> = scenes
        .iter()
        .map(|(a, s)| unclip_shapes::Example {
            scene: s.clone(),
            caption: caption(a, 0),
            template: 0,
        })
        .collect();
    let target = crate::shapes::images_signed(&examples, side, &device); // [N, 3, S, S]
    let s = side as usize;
    let low = resize_bicubic_antialias(target.clone(), [s / 2, s / 2]).clamp(-1.0, 1.0);
    let bicubic = resize_bicubic_antialias(low.clone(), [s, s]).clamp(-1.0, 1.0);
    // The run's own training schedule, sampled as the exported model is (clipped x_0).
    let state: unclip_upsampler::train::SuperResTrainerState =
        unclip_nn::read_json(args.run.join(name).join("trainer_state.json"))?;
    let mut scheduler = UnCLIPScheduler::new(crate::shapes::super_res_scheduler(&state.train));
    // Denoising error at fixed timesteps, on the full images and on their centre crops of the
    // training size (a quarter of the side): MSE of the model's prediction against its target
    // (eps or x_0, as the scheduler config says).
    {
        use unclip_diffusion::{NoiseSource, TrainingObjective};
        let obj = TrainingObjective::new(scheduler.config());
        let c = s / 4;
        let x0_model = obj.prediction_type() == unclip_diffusion::PredictionType::Sample;
        let mut line = format!(
            "{} MSE at t (full image / centre crop of the training size):",
            if x0_model { "x_0" } else { "eps" }
        );
        for t in [1usize, 10, 50, 200, 500, 900, 999] {
            let mut noise = SeededNoise::new(t as u64);
            let n = target.dims()[0];
            let eps = noise.randn([n, 3, s, s], &device)?;
            let ts = vec![t; n];
            let xt = obj.noisy_input(target.clone(), eps.clone(), &ts)?;
            let tt = burn::tensor::Tensor::<1>::from_floats(vec![t as f32; n].as_slice(), &device);
            let full = model.forward(
                burn::tensor::Tensor::cat(vec![xt.clone(), bicubic.clone()], 1),
                tt.clone(),
            )?;
            let want = if x0_model {
                target.clone()
            } else {
                eps.clone()
            };
            let full_mse = mse(full, want.clone());
            let o = (s - c) / 2;
            let crop = |x: burn::tensor::Tensor<4>| x.slice([0..n, 0..3, o..o + c, o..o + c]);
            let out = model.forward(
                burn::tensor::Tensor::cat(vec![crop(xt), crop(bicubic.clone())], 1),
                tt,
            )?;
            let crop_mse = mse(out, crop(want));
            line.push_str(&format!(" t={t}: {full_mse:.4}/{crop_mse:.4}"));
        }
        println!("{line}");
    }
    let t0 = std::time::Instant::now();
    let x = sample_super_res(
        &model,
        &model,
        &mut scheduler,
        SuperResRequest {
            image_small: low,
            num_inference_steps: args.steps,
            latents: None,
            output_size: Some([s, s]),
        },
        &mut SeededNoise::new(1),
        &mut |info: &unclip_upsampler::StepInfo<'_>| {
            let x0 = mse(info.pred_original.clone(), target.clone());
            let xs = mse(info.sample.clone(), target.clone());
            println!(
                "step {} t={}: x0-pred MSE {x0:.4}, sample MSE {xs:.4}",
                info.index, info.timestep
            );
            std::ops::ControlFlow::Continue(())
        },
    )?
    .clamp(-1.0, 1.0);
    let secs = t0.elapsed().as_secs_f64();
    let to_imgs = |t: burn::tensor::Tensor<4>| -> Result<Vec<RgbImage>, Error> {
        Ok(unclip_upsampler::to_rgb8(unclip_upsampler::to_unit_range(
            t,
        ))?)
    };
    let (ti, bi, xi) = (
        to_imgs(target.clone())?,
        to_imgs(bicubic.clone())?,
        to_imgs(x.clone())?,
    );
    let mut ob = Tally::default();
    let mut ox = Tally::default();
    for (i, (a, _)) in scenes.iter().enumerate() {
        ob.add(&oracle::score(&bi[i], a));
        ox.add(&oracle::score(&xi[i], a));
    }
    println!(
        "stage {} ({}x{} from {}x{}, {} steps, {} held-out images, sampled in {secs:.1} s):\n\
         MSE vs the full-resolution render ([-1, 1] scale): sample {:.4}, bicubic {:.4}\n\
         | input | images | shape | colour | size | position | all four |\n|---|---|---|---|---|---|---|\n{}\n{}",
        args.stage,
        s,
        s,
        s / 2,
        s / 2,
        args.steps,
        args.images,
        mse(x.clone(), target.clone()),
        mse(bicubic.clone(), target.clone()),
        ob.row("bicubic"),
        ox.row("sample")
    );
    if let Some(p) = &args.sheet {
        let n = args.images.min(8);
        let mut tiles = Vec::new();
        tiles.extend_from_slice(&ti[..n]);
        tiles.extend_from_slice(&bi[..n]);
        tiles.extend_from_slice(&xi[..n]);
        contact_sheet(&tiles, n, 2).save(p)?;
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalDecoderArgs {
    /// The run folder written by `train-shapes`.
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub images: usize,
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f32,
    #[arg(long)]
    pub sheet: Option<PathBuf>,
    /// Inference timestep spacing: linspace (UnCLIPScheduler's) or leading.
    #[arg(long, default_value = "linspace")]
    pub spacing: String,
    /// Sampling variance: the trained `learned_range` (default) or `fixed_small_log` (the
    /// posterior variance; `sample_decoder` then ignores the UNet's variance channels).
    #[arg(long, default_value = "learned_range", value_parser = crate::shapes::parse_variance)]
    pub variance: unclip_diffusion::VarianceType,
    /// Evaluate on seen (training) combinations instead of the held-out ones.
    #[arg(long)]
    pub seen: bool,
    /// Sample without clipping x_0 to [-1, 1] (the exported scheduler clips).
    #[arg(long)]
    pub no_clip: bool,
    /// Sampler: `ancestral` (Karlo's), `ddim` or `ddim:<eta>`.
    #[arg(long, default_value = "ancestral")]
    pub sampler: unclip::Sampler,
    /// A second run whose decoder samples the low-noise steps (`t < --expert-below`;
    /// `unclip_decoder::LowNoiseExpert`); it must share the run's prediction target and noise
    /// schedule. The fixed-t measurements are of the main decoder.
    #[arg(long)]
    pub expert_run: Option<PathBuf>,
    /// The timestep below which `--expert-run`'s decoder takes over.
    #[arg(long, default_value_t = 400)]
    pub expert_below: usize,
    /// Image-to-image (SDEdit, `unclip_decoder::InitImage`): start from the renders noised to
    /// the last `ceil(S * steps)` steps instead of from noise. Tells whether the decoder keeps
    /// (or, with `--sdedit-swap`, redraws) an outline present in x_t at that noise level.
    #[arg(long)]
    pub sdedit_strength: Option<f32>,
    /// With `--sdedit-strength`: condition on the same scenes with the next shape (circle ->
    /// square -> triangle -> circle) and score against them: can the decoder turn the render's
    /// outline into the conditioning's from that noise level?
    #[arg(long)]
    pub sdedit_swap: bool,
    /// From noise, give the decoder two shapes at once: `text` takes the caption of the
    /// shape-swapped scene (the image embedding stays the render's), `image` takes the
    /// swapped scene's CLIP image embedding (the caption stays the render's). The samples are
    /// scored against both scenes: which conditioning channel decides the shape?
    #[arg(long, value_enum)]
    pub conflict: Option<Channel>,
}

/// A conditioning channel of the decoder (`eval-decoder --conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Channel {
    /// The caption's text-encoder states.
    Text,
    /// The CLIP image embedding.
    Image,
}

/// Mean squared difference of two same-shaped tensors (a host scalar).
fn mse<const D: usize>(a: burn::tensor::Tensor<D>, b: burn::tensor::Tensor<D>) -> f32 {
    (a - b).powi_scalar(2).mean().into_scalar::<f32>()
}

/// The decoder of a run on held-out renders with their true CLIP image embeddings and captions:
/// denoising error at fixed t, then a sampling trajectory (x_0-prediction MSE per step).
pub fn eval_decoder(args: &EvalDecoderArgs) -> Result<(), Error> {
    use burn::tensor::Tensor;
    use unclip_decoder::{
        DecoderRequest, TextConditioning, UNet2DConditionModel, UnCLIPTextProjModel,
    };
    use unclip_diffusion::{NoiseSource, SeededNoise, TrainingObjective, UnCLIPScheduler};
    if args.sdedit_swap && args.sdedit_strength.is_none() {
        return Err("--sdedit-swap needs --sdedit-strength".into());
    }
    if args.conflict.is_some() && args.sdedit_strength.is_some() {
        return Err("--conflict samples from noise; it does not take --sdedit-strength".into());
    }
    let device = crate::shapes::compute_device()?;
    let tok = unclip_tokenizer::ClipTokenizer::from_dir("models/shapes/tokenizer")?;
    let (text, vision) =
        unclip_clip::ClipModel::from_pretrained(args.run.join("clip"), &device)?.into_towers();
    let unet = UNet2DConditionModel::from_pretrained(args.run.join("decoder/decoder"), &device)?;
    let text_proj =
        UnCLIPTextProjModel::from_pretrained(args.run.join("decoder/text_proj"), &device)?;
    // The decoder's side (32, or larger for a run continued at a higher resolution); its CLIP
    // conditioning is computed at the base resolution.
    let side = crate::shapes::decoder_side(&unet.config)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let held = combinations(if args.seen {
        Split::Train
    } else {
        Split::HeldOut
    });
    let examples: Vec<unclip_shapes::Example> = (0..args.images)
        .map(|i| {
            let a = held[i * 5 % held.len()];
            unclip_shapes::Example {
                scene: Scene::random(a, &mut rng),
                caption: caption(&a, 0),
                template: 0,
            }
        })
        .collect();
    let processor = unclip_clip::ClipImageProcessor::for_size(crate::shapes::BASE as usize);
    let (e, h, m) = crate::shapes::encode_text(
        &tok,
        &text,
        &examples
            .iter()
            .map(|e| e.caption.clone())
            .collect::<Vec<_>>(),
        &device,
    )?;
    let (img_emb, _) = vision.forward(crate::shapes::clip_pixels(&processor, &examples, &device)?);
    let target = crate::shapes::images_signed(&examples, side, &device);
    // The same scenes with the next shape (circle -> square -> triangle -> circle), everything
    // else equal: does the decoder follow the shape of its conditioning?
    let swapped: Vec<unclip_shapes::Example> = examples
        .iter()
        .map(|ex| {
            let mut scene = ex.scene.clone();
            scene.shape = unclip_shapes::Shape::from_index((scene.shape.index() + 1) % 3)
                .unwrap_or(scene.shape);
            let a = unclip_shapes::Attributes::new(
                scene.shape,
                scene.colour,
                scene.size,
                scene.position,
            );
            unclip_shapes::Example {
                scene,
                caption: caption(&a, 0),
                template: 0,
            }
        })
        .collect();
    let (se, sh, smk) = crate::shapes::encode_text(
        &tok,
        &text,
        &swapped
            .iter()
            .map(|e| e.caption.clone())
            .collect::<Vec<_>>(),
        &device,
    )?;
    let (swapped_emb, _) =
        vision.forward(crate::shapes::clip_pixels(&processor, &swapped, &device)?);
    let swapped_target = crate::shapes::images_signed(&swapped, side, &device);
    // The empty prompt's conditioning (no-conditioning rows and guidance).
    let (ue, uh, um) =
        crate::shapes::encode_text(&tok, &text, &vec![String::new(); examples.len()], &device)?;
    // The renders, the top row of every contact sheet.
    let renders: Vec<RgbImage> = examples.iter().map(|e| e.scene.render(side)).collect();
    let n = examples.len();
    // [B, 1, S, S]: 1 on the shape's pixels (where the render differs from its background).
    let bg = Tensor::<1>::from_floats(
        examples
            .iter()
            .map(|e| match e.scene.background {
                Background::Black => -1.0f32,
                Background::White => 1.0,
            })
            .collect::<Vec<_>>()
            .as_slice(),
        &device,
    )
    .reshape([n, 1, 1, 1]);
    let shape_mask = (target.clone() - bg)
        .abs()
        .sum_dim(1)
        .greater_elem(0.1)
        .float(); // [B, 1, S, S]
    let shape_px = shape_mask.clone().sum().into_scalar::<f32>() * 3.0;
    // The x_0 error on the shape's pixels only: the background is a nuisance the conditioning
    // does not carry (CLIP's image embedding barely changes with it), so the whole-image error
    // is dominated by guessing it.
    let shape_mse = |x0: Tensor<4>| -> f32 {
        ((x0 - target.clone()).powi_scalar(2) * shape_mask.clone())
            .sum()
            .into_scalar::<f32>()
            / shape_px
    };
    let state: unclip_decoder::train::DecoderTrainerState =
        unclip_nn::read_json(args.run.join("decoder/trainer_state.json"))?;
    let mut sc = crate::shapes::decoder_scheduler(&state.train);
    sc.timestep_spacing = match args.spacing.as_str() {
        "leading" => unclip_diffusion::TimestepSpacing::Leading,
        _ => unclip_diffusion::TimestepSpacing::Linspace,
    };
    sc.variance_type = args.variance;
    sc.clip_sample = !args.no_clip;
    let obj = TrainingObjective::new(&sc);
    let cond = text_proj.forward(img_emb.clone(), e.clone(), h.clone(), false)?;
    let mask = text_proj.extend_attention_mask(m.clone());
    let mut line = String::from("eps MSE / x0 MSE at t:");
    for t in [10usize, 100, 300, 500, 700, 900, 999] {
        let eps = SeededNoise::new(t as u64).randn(target.dims(), &device)?;
        let xt = obj.noisy_input(target.clone(), eps.clone(), &vec![t; n])?;
        let out = unet.forward(
            xt.clone(),
            Tensor::<1>::from_floats(vec![t as f32; n].as_slice(), &device),
            cond.encoder_hidden_states.clone(),
            Some(cond.additive_clip_time_embeddings.clone()),
            Some(mask.clone()),
        )?;
        let (x0, eps_pred) = obj.schedule().to_x0_eps(
            obj.prediction_type(),
            out.narrow(1, 0, 3),
            xt,
            &vec![t; n],
        )?;
        let x0 = x0.clamp(-1.0, 1.0);
        let em = mse(eps_pred, eps.clone());
        let xm = mse(x0.clone(), target.clone());
        line.push_str(&format!(" t={t}: {em:.4}/{xm:.4}"));
        if t <= 100 {
            // Where the low-noise error is: the shape, the background, the 2-pixel border ring;
            // and its signed mean (a colour cast) against what x_t alone would give.
            let s = side as usize;
            let mut ring = vec![0f32; s * s];
            for y in 0..s {
                for x in 0..s {
                    if x < 2 || y < 2 || x + 2 >= s || y + 2 >= s {
                        ring[y * s + x] = 1.0;
                    }
                }
            }
            let ring = Tensor::<1>::from_floats(ring.as_slice(), &device).reshape([1, 1, s, s]);
            let err = (x0.clone() - target.clone()).powi_scalar(2); // [B, 3, S, S]
            let part = |m: Tensor<4>| -> f32 {
                let m = m.expand([n, 3, s, s]);
                (err.clone() * m.clone()).sum().into_scalar::<f32>()
                    / m.sum().into_scalar::<f32>().max(1.0)
            };
            let bg_mask = shape_mask.clone().neg().add_scalar(1.0);
            let xt_mse = mse(
                obj.noisy_input(target.clone(), eps.clone(), &vec![t; n])?,
                target.clone(),
            );
            println!(
                "t={t}: x0 error on shape {:.4}, background {:.4}, border ring {:.4}; mean signed error {:+.4}; x_t itself {:.4}",
                part(shape_mask.clone()),
                part(bg_mask),
                part(ring),
                (x0 - target.clone()).mean().into_scalar::<f32>(),
                xt_mse
            );
        }
    }
    println!("{line}");
    // Does the conditioning matter? x_0 error at t = 999 (x_t carries no signal) with the
    // right embeddings and captions, with them rolled by one row, and with none (the learned
    // null image embedding and the empty prompt).
    {
        let roll = |t: Tensor<2>| Tensor::cat(vec![t.clone().slice([1..n]), t.slice([0..1])], 0);
        let roll3 = |t: Tensor<3>| Tensor::cat(vec![t.clone().slice([1..n]), t.slice([0..1])], 0);
        for tc in [10usize, 500, 800, 999] {
            let eps = SeededNoise::new(999).randn(target.dims(), &device)?;
            let xt = obj.noisy_input(target.clone(), eps.clone(), &vec![tc; n])?;
            let (ue, uh, um) = (ue.clone(), uh.clone(), um.clone());
            let null = text_proj
                .learned_classifier_free_guidance_embeddings
                .val()
                .reshape([1, img_emb.dims()[1]])
                .expand(img_emb.dims());
            let mut right_x0 = None;
            for (name, ie, pe, hs, mk) in [
                ("right", img_emb.clone(), e.clone(), h.clone(), m.clone()),
                (
                    "shape-swapped",
                    swapped_emb.clone(),
                    se.clone(),
                    sh.clone(),
                    smk.clone(),
                ),
                (
                    "rolled",
                    roll(img_emb.clone()),
                    roll(e.clone()),
                    roll3(h.clone()),
                    m.clone(),
                ),
                ("none", null, ue, uh, um),
            ] {
                let c = text_proj.forward(ie, pe, hs, false)?;
                let mk = text_proj.extend_attention_mask(mk);
                let out = unet.forward(
                    xt.clone(),
                    Tensor::<1>::from_floats(vec![tc as f32; n].as_slice(), &device),
                    c.encoder_hidden_states,
                    Some(c.additive_clip_time_embeddings),
                    Some(mk),
                )?;
                let (x0, _) = obj.schedule().to_x0_eps(
                    obj.prediction_type(),
                    out.narrow(1, 0, 3),
                    xt.clone(),
                    &vec![tc; n],
                )?;
                let x0 = x0.clamp(-1.0, 1.0);
                let sm = shape_mse(x0.clone());
                if let (Some(p), "right") = (&args.sheet, name) {
                    // The x_0 predictions beside the renders: where the conditioning puts what.
                    let mut tiles = renders.clone();
                    tiles.extend(unclip_upsampler::to_rgb8(unclip_upsampler::to_unit_range(
                        x0.clone(),
                    ))?);
                    contact_sheet(&tiles, n, 2).save(p.with_extension(format!("x0_t{tc}.png")))?;
                }
                if name == "right" {
                    right_x0 = Some(x0.clone());
                }
                if let (Some(r), "shape-swapped") = (&right_x0, name) {
                    // How far the prediction moves, against how far the renders differ.
                    let moved = mse(x0.clone(), r.clone());
                    let apart = mse(swapped_target.clone(), target.clone());
                    println!(
                        "t={tc} shape swap moves x_0 by {moved:.4} (MSE; the two renders differ by {apart:.4}); x_0 MSE to the swapped render {:.4}",
                        mse(x0.clone(), swapped_target.clone())
                    );
                }
                let xm = mse(x0, target.clone());
                println!("t={tc} x_0 MSE with {name} conditioning: {xm:.4} (shape pixels {sm:.4})");
            }
        }
    }
    let expert = match &args.expert_run {
        Some(r) => {
            let es: unclip_decoder::train::DecoderTrainerState =
                unclip_nn::read_json(r.join("decoder/trainer_state.json"))?;
            let esc = crate::shapes::decoder_scheduler(&es.train);
            let key = |c: &unclip_diffusion::SchedulerConfig| {
                (
                    c.prediction_type,
                    c.beta_schedule,
                    c.beta_start,
                    c.beta_end,
                    c.num_train_timesteps,
                )
            };
            if key(&esc) != key(&sc) {
                return Err(format!(
                    "--expert-run {}: its target / schedule differ from the run's",
                    r.display()
                )
                .into());
            }
            Some((
                UNet2DConditionModel::from_pretrained(r.join("decoder/decoder"), &device)?,
                UnCLIPTextProjModel::from_pretrained(r.join("decoder/text_proj"), &device)?,
            ))
        }
        None => None,
    };
    let swap = args.sdedit_swap;
    // Which channels come from the shape-swapped scenes (both with --sdedit-swap, one with
    // --conflict).
    let swap_image = swap || args.conflict == Some(Channel::Image);
    let swap_text = swap || args.conflict == Some(Channel::Text);
    // What the samples are compared with: the renders, or their shape-swapped twins.
    let goal = if swap { &swapped_target } else { &target };
    let mut scheduler = UnCLIPScheduler::new(sc);
    let out = unclip_decoder::sample_decoder_with_expert(
        &unet,
        &text_proj,
        expert
            .as_ref()
            .map(|(unet, text_proj)| unclip_decoder::LowNoiseExpert {
                unet,
                text_proj,
                below: args.expert_below,
            }),
        &mut scheduler,
        DecoderRequest {
            image_embeddings: if swap_image { swapped_emb } else { img_emb },
            text: if swap_text {
                TextConditioning {
                    prompt_embeds: se,
                    hidden_states: sh,
                    mask: smk,
                }
            } else {
                TextConditioning {
                    prompt_embeds: e,
                    hidden_states: h,
                    mask: m,
                }
            },
            uncond_text: (args.guidance > 1.0).then_some(TextConditioning {
                prompt_embeds: ue,
                hidden_states: uh,
                mask: um,
            }),
            guidance_scale: args.guidance,
            num_inference_steps: args.steps,
            latents: None,
            sampler: args.sampler,
            init_image: args
                .sdedit_strength
                .map(|strength| unclip_decoder::InitImage {
                    image: target.clone(),
                    strength,
                }),
        },
        &mut SeededNoise::new(3),
        &mut |info: &unclip_decoder::StepInfo<'_>| {
            let x0 = mse(info.pred_original.clone(), goal.clone());
            println!(
                "step {} t={}: x0-pred MSE {x0:.4}",
                info.index, info.timestep
            );
            std::ops::ControlFlow::Continue(())
        },
    )?;
    let imgs = unclip_upsampler::to_rgb8(unclip_upsampler::to_unit_range(out))?;
    let mut tally = Tally::default();
    for (img, ex) in imgs.iter().zip(if swap { &swapped } else { &examples }) {
        tally.add(&oracle::score(img, &ex.attributes()));
    }
    if let Some(channel) = args.conflict {
        let channel = format!("{channel:?}").to_lowercase();
        // Scored against the swapped scenes too: the shape the samples follow.
        let mut followed = Tally::default();
        for (img, ex) in imgs.iter().zip(&swapped) {
            followed.add(&oracle::score(img, &ex.attributes()));
        }
        println!(
            "{}",
            tally.row(&format!("conflict {channel}: scored against the renders"))
        );
        println!(
            "{}",
            followed.row(&format!(
                "conflict {channel}: scored against the swapped scenes (the {channel} channel's)"
            ))
        );
    }
    let label = match (args.sdedit_strength, swap) {
        (None, _) => "reconstruction".to_string(),
        (Some(s), false) => format!("sdedit {s}"),
        (Some(s), true) => format!("sdedit {s}, shape swapped"),
    };
    if args.conflict.is_none() {
        println!("{}", tally.row(&label));
    }
    if let Some(p) = &args.sheet {
        let mut tiles = renders;
        tiles.extend(imgs);
        contact_sheet(&tiles, n, 2).save(p)?;
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct RenderArgs {
    /// A caption of the shapes world, e.g. "a large red circle in the top left".
    pub caption: String,
    #[arg(long, default_value_t = 128)]
    pub side: u32,
    /// black or white.
    #[arg(long, default_value = "black")]
    pub background: String,
    #[arg(long)]
    pub out: PathBuf,
}

/// Renders a caption of the shapes world (no jitter) as a PNG: inputs for the image examples.
pub fn render(args: &RenderArgs) -> Result<(), Error> {
    let a = unclip_shapes::parse_caption(&args.caption)
        .ok_or_else(|| format!("{:?} is not a caption of the shapes world", args.caption))?;
    let bg = match args.background.as_str() {
        "black" => Background::Black,
        "white" => Background::White,
        other => return Err(format!("background {other:?}: black or white").into()),
    };
    if let Some(p) = args.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    Scene::new(a, bg).render(args.side).save(&args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalPriorArgs {
    /// The model folder.
    #[arg(long, default_value = "models/shapes")]
    pub model: PathBuf,
    /// Prior guidance scales to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub guidance: Vec<f32>,
    /// Prior steps (default: the folder's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seen (training) combinations to score besides the 40 held-out ones.
    #[arg(long, default_value_t = 40)]
    pub seen: usize,
    /// Samples per caption.
    #[arg(long, default_value_t = 2)]
    pub per_combo: usize,
}

/// Rows of `x [N, E]` scaled to unit length, as host vectors.
fn unit_rows(x: burn::tensor::Tensor<2>) -> Result<Vec<Vec<f32>>, Error> {
    let [_, e] = x.dims();
    let v = x
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|err| format!("embeddings to host: {err:?}"))?;
    Ok(v.chunks(e.max(1))
        .map(|r| {
            let norm = r.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(|a| a / norm).collect()
        })
        .collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The prior alone, in CLIP image-embedding space: the canonical caption of every held-out
/// combination (and of `seen` training ones) -> prior samples; each sample is read as the
/// attributes of its nearest CLIP image embedding among renders of all 324 combinations on both
/// backgrounds (cosine). The same read-out of fresh jittered renders' own embeddings is the
/// ceiling (what the image encoder separates).
pub fn eval_prior(args: &EvalPriorArgs) -> Result<(), Error> {
    use unclip_diffusion::SeededNoise;
    let t0 = std::time::Instant::now();
    let d = Settings::from_model_dir(&args.model)?;
    let mut pipe = UnclipBuilder::new()
        .device(crate::shapes::compute_device()?)
        .from_pretrained(&args.model)
        .settings(Settings {
            prior_steps: args.steps.unwrap_or(d.prior_steps),
            ..d
        })
        .build()?;
    // Reference embeddings: every combination on both backgrounds.
    let all = Attributes::all();
    let mut refs: Vec<(Attributes, Vec<f32>)> = Vec::new();
    for bg in Background::all() {
        for chunk in all.chunks(64) {
            let imgs: Vec<RgbImage> = chunk
                .iter()
                .map(|a| Scene::new(*a, bg).render(128))
                .collect();
            let emb = unit_rows(pipe.encode_images(&imgs)?)?;
            refs.extend(chunk.iter().copied().zip(emb));
        }
    }
    let read = |e: &[f32]| -> Attributes {
        refs.iter()
            .map(|(a, r)| (*a, dot(e, r)))
            .fold((refs[0].0, f32::MIN), |b, x| if x.1 > b.1 { x } else { b })
            .0
    };
    let held = combinations(Split::HeldOut);
    let mut seen = combinations(Split::Train);
    seen.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    seen.truncate(args.seen);
    println!(
        "Prior of `{}`, {} steps; each sample read as its nearest render embedding (cosine) among \
         the 324 combinations x 2 backgrounds.\n",
        args.model.display(),
        pipe.settings.prior_steps
    );
    println!(
        "| embeddings | combinations | n | shape | colour | size | position | all four | mean cos to own renders | mean L2 norm |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut shape_lines = Vec::new();
    for (name, combos) in [("held out", &held), ("seen", &seen)] {
        if combos.is_empty() {
            continue;
        }
        // Ceiling: jittered renders on a random background.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut tally = Tally::default();
        let (mut cos, mut norm) = (0.0f32, 0.0f32);
        for chunk in combos.chunks(64) {
            for _ in 0..args.per_combo {
                let imgs: Vec<RgbImage> = chunk
                    .iter()
                    .map(|a| Scene::random(*a, &mut rng).render(128))
                    .collect();
                let emb = pipe.encode_images(&imgs)?;
                norm += norm_sum(emb.clone())?;
                for (a, e) in chunk.iter().zip(unit_rows(emb)?) {
                    tally.add_reading(a, Some(&read(&e)));
                    cos += own_cos(&refs, a, &e);
                }
            }
        }
        let row = tally.row(&format!("renders | {name}"));
        let n = tally.n.max(1) as f32;
        println!("{row} {:.3} | {:.3} |", cos / n, norm / n);
        shape_lines.push(format!("renders, {name}: {}", tally.shape_by_size_line()));
        for &g in &args.guidance {
            pipe.settings.prior_guidance_scale = g;
            let mut tally = Tally::default();
            let (mut cos, mut norm) = (0.0f32, 0.0f32);
            for chunk in combos.chunks(64) {
                let texts: Vec<String> = chunk.iter().map(|a| caption(a, 0)).collect();
                let texts: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
                let empty = vec![""; texts.len()];
                let cond = pipe.encode_text(&texts)?;
                let uncond = pipe.encode_text(&empty)?;
                for k in 0..args.per_combo {
                    let mut noise = SeededNoise::new(100 + k as u64);
                    let emb = pipe.sample_prior(&cond, &uncond, None, &mut noise, &mut |_| {
                        Control::Continue
                    })?;
                    norm += norm_sum(emb.clone())?;
                    for (a, e) in chunk.iter().zip(unit_rows(emb)?) {
                        tally.add_reading(a, Some(&read(&e)));
                        cos += own_cos(&refs, a, &e);
                    }
                }
            }
            let row = tally.row(&format!("prior, guidance {g} | {name}"));
            let n = tally.n.max(1) as f32;
            println!("{row} {:.3} | {:.3} |", cos / n, norm / n);
            shape_lines.push(format!(
                "prior, guidance {g}, {name}: {}",
                tally.shape_by_size_line()
            ));
        }
    }
    println!("\nShape right by size:");
    for line in &shape_lines {
        println!("- {line}");
    }
    println!("\n(wall time {:.0} s)", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The sum of the rows' L2 norms of `x [N, E]`.
fn norm_sum(x: burn::tensor::Tensor<2>) -> Result<f32, Error> {
    let [_, e] = x.dims();
    let v = x
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| format!("embeddings to host: {err:?}"))?;
    Ok(v.chunks(e.max(1))
        .map(|r| r.iter().map(|a| a * a).sum::<f32>().sqrt())
        .sum())
}

/// Mean cosine of `e` to the reference renders of its own combination.
fn own_cos(refs: &[(Attributes, Vec<f32>)], a: &Attributes, e: &[f32]) -> f32 {
    let own: Vec<f32> = refs
        .iter()
        .filter(|(r, _)| r == a)
        .map(|(_, r)| dot(e, r))
        .collect();
    own.iter().sum::<f32>() / own.len().max(1) as f32
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalRerankArgs {
    /// The model folder.
    #[arg(long, default_value = "models/shapes")]
    pub model: PathBuf,
    /// Decoder candidates per prior sample.
    #[arg(long, default_value_t = 8)]
    pub candidates: usize,
    /// Held-out combinations to score (default: all 40).
    #[arg(long)]
    pub held: Option<usize>,
    /// Captions per pipeline call (each drawn `candidates` times).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long)]
    pub decoder_steps: Option<usize>,
    #[arg(long)]
    pub decoder_guidance: Option<f32>,
    /// Decoder sampler: `ancestral`, `ddim` or `ddim:<eta>` (default: the folder's).
    #[arg(long)]
    pub decoder_sampler: Option<unclip::Sampler>,
    /// Write the report (markdown) here as well as to stdout.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// How far reranking decoder samples can go, and how far CLIP's scores take it: the canonical
/// caption of each held-out combination -> one prior sample -> `candidates` decoder samples
/// (the decoder's own output, bicubic to 128x128, no super-resolution), read by the oracle.
/// Rows: a single candidate (the mean over candidates), the best of K by the image-embedding
/// cosine (the pipeline's `decoder_candidates`), by the caption's text-embedding cosine, by
/// their sum, and the oracle's own pick (an upper bound that no model can use: whether any of
/// the K is right).
pub fn eval_rerank(args: &EvalRerankArgs) -> Result<(), Error> {
    use unclip_diffusion::SeededNoise;
    let t0 = std::time::Instant::now();
    let d = Settings::from_model_dir(&args.model)?;
    let k = args.candidates.max(1);
    let settings = Settings {
        decoder_steps: args.decoder_steps.unwrap_or(d.decoder_steps),
        decoder_guidance_scale: args.decoder_guidance.unwrap_or(d.decoder_guidance_scale),
        decoder_sampler: args.decoder_sampler.unwrap_or(d.decoder_sampler),
        decoder_candidates: 1,
        super_res: false,
        ..d
    };
    let pipe = UnclipBuilder::new()
        .device(crate::shapes::compute_device()?)
        .from_pretrained(&args.model)
        .settings(settings.clone())
        .build()?;
    let mut held = combinations(Split::HeldOut);
    held.truncate(args.held.unwrap_or(held.len()));
    // Per caption: the oracle scores and the three CLIP scores of its K candidates.
    let mut rows: Vec<(Vec<Score>, Vec<f32>, Vec<f32>)> = Vec::new();
    for (ci, chunk) in held.chunks(args.batch.max(1)).enumerate() {
        let texts: Vec<String> = chunk.iter().map(|a| caption(a, 0)).collect();
        let texts: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let b = texts.len();
        let cond = pipe.encode_text(&texts)?;
        let uncond = pipe.encode_text(&vec![""; b])?;
        let mut noise = SeededNoise::new(1000 + ci as u64);
        let emb =
            pipe.sample_prior(&cond, &uncond, None, &mut noise, &mut |_| Control::Continue)?; // [B, E]
        let emb_k = burn::tensor::Tensor::cat(vec![emb.clone(); k], 0); // [K * B, E]
        let out = pipe.decode(
            emb_k,
            &UnclipPipeline::repeat_text(&cond, k),
            &UnclipPipeline::repeat_text(&uncond, k),
            None,
            None,
            &mut noise,
            &mut |_| Control::Continue,
        )?;
        // Candidate c of caption i at row c * B + i.
        let (_, img_cos) = pipe.best_candidates(out.image_small.clone(), &emb, k)?;
        let rgb =
            unclip_upsampler::to_rgb8(unclip_upsampler::to_unit_range(out.image_small.clone()))?;
        let cand = unit_rows(pipe.encode_images(&rgb)?)?; // [K * B][E]
        let txt = unit_rows(cond.embeds.clone())?; // [B][E]
        let big = unclip_upsampler::resize_bicubic_antialias(out.image_small, [128, 128])
            .clamp(-1.0, 1.0);
        let big = unclip_upsampler::to_rgb8(unclip_upsampler::to_unit_range(big))?;
        for (i, a) in chunk.iter().enumerate() {
            let rows_i: Vec<usize> = (0..k).map(|c| c * b + i).collect();
            rows.push((
                rows_i.iter().map(|&r| oracle::score(&big[r], a)).collect(),
                rows_i.iter().map(|&r| img_cos[r]).collect(),
                rows_i.iter().map(|&r| dot(&cand[r], &txt[i])).collect(),
            ));
        }
        eprint!(".");
    }
    eprintln!();
    let argmax = |v: &[f32]| {
        (0..v.len())
            .max_by(|&x, &y| v[x].total_cmp(&v[y]))
            .unwrap_or(0)
    };
    let (mut single, mut by_img, mut by_txt, mut by_sum, mut best) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let all = |s: &Score| s.shape && s.colour && s.size && s.position;
    for (scores, ic, tc) in &rows {
        for s in scores {
            single.add(s);
        }
        by_img.add(&scores[argmax(ic)]);
        by_txt.add(&scores[argmax(tc)]);
        let sum: Vec<f32> = ic.iter().zip(tc).map(|(a, b)| a + b).collect();
        by_sum.add(&scores[argmax(&sum)]);
        // The oracle's pick: an all-four-right candidate if any, else a right-shaped one.
        let pick = scores
            .iter()
            .position(all)
            .or_else(|| scores.iter().position(|s| s.shape))
            .unwrap_or(0);
        best.add(&scores[pick]);
    }
    let mut report = String::new();
    writeln!(
        report,
        "Model `{}`; {} held-out canonical captions, one prior sample each (guidance {}), {k} \
         decoder samples each ({} steps, guidance {}, {}); the decoder's output, bicubic to \
         128x128; {:.0} s.\n",
        args.model.display(),
        rows.len(),
        settings.prior_guidance_scale,
        settings.decoder_steps,
        settings.decoder_guidance_scale,
        settings.decoder_sampler,
        t0.elapsed().as_secs_f64()
    )?;
    writeln!(
        report,
        "| pick | images | shape | colour | size | position | all four |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|---|")?;
    writeln!(report, "{}", single.row("any one candidate (mean)"))?;
    writeln!(report, "{}", by_img.row("best image-embedding cosine"))?;
    writeln!(report, "{}", by_txt.row("best caption (text) cosine"))?;
    writeln!(report, "{}", by_sum.row("best sum of both"))?;
    writeln!(report, "{}", best.row("oracle's pick (upper bound)"))?;
    print!("{report}");
    if let Some(p) = &args.report {
        std::fs::write(p, &report)?;
    }
    Ok(())
}
