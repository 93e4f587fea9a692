//! Each example program, run once as a user would on the embedded model with tiny step counts:
//! it exits successfully and writes a PNG of the expected size that is a picture (not one flat
//! colour). Between them the runs use the flags that expose the library's options (prior
//! guidance and candidates, decoder candidates, dtype, memory mode, variation mode, x_T modes).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use image::RgbImage;
use unclip_shapes::Attributes;

use common::{GREEN_SQUARE, RED_CIRCLE, render};

/// Steps small enough for a test, on every stage.
const FAST: &[&str] = &[
    "--prior-steps",
    "2",
    "--decoder-steps",
    "3",
    "--super-res-steps",
    "2",
];

fn out_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("unclip-example-bins-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn run(bin: &str, args: &[&str]) {
    let out = Command::new(bin)
        .args(FAST)
        .args(args)
        .output()
        .expect("the example starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{bin} {args:?} failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    assert!(stdout.contains("wrote"), "{bin}: {stdout}");
}

fn write_render(dir: &Path, name: &str, a: Attributes) -> String {
    let path = dir.join(name);
    render(a).save(&path).expect("input PNG");
    path.display().to_string()
}

/// Reads a PNG and checks its size and that it is a picture: some channel spans more than a
/// quarter of the range.
fn check_png(path: &Path, width: u32, height: u32) -> RgbImage {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (width, height), "{}", path.display());
    let spread = (0..3)
        .map(|c| {
            let v = img.pixels().map(|p| p.0[c]);
            v.clone().max().unwrap_or(0) - v.min().unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    assert!(spread > 64, "{} is blank (spread {spread})", path.display());
    img
}

/// A contact sheet's side for `n` 128x128 pictures along it: 2-pixel gaps between and around.
fn sheet_side(n: u32) -> u32 {
    n * 128 + (n + 1) * 2
}

#[test]
fn generate_writes_one_png_per_prompt() {
    let dir = out_dir("generate");
    let out = dir.join("gen");
    run(
        env!("CARGO_BIN_EXE_generate"),
        &[
            "--out",
            out.to_str().expect("utf-8 path"),
            "--prior-guidance",
            "3",
            "--prior-candidates",
            "2",
            "--decoder-candidates",
            "2",
            "--memory",
            "staged",
            "a large red circle in the top left",
            "a small blue square in the center",
        ],
    );
    check_png(&out.join("000.png"), 128, 128);
    check_png(&out.join("001.png"), 128, 128);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn variations_writes_a_contact_sheet() {
    let dir = out_dir("variations");
    let image = write_render(&dir, "in.png", RED_CIRCLE);
    let out = dir.join("sheet.png");
    run(
        env!("CARGO_BIN_EXE_variations"),
        &[
            "--image",
            &image,
            "-k",
            "2",
            "--mode",
            "inverted",
            "--eta",
            "0.5",
            "--dtype",
            "f16",
            "--out",
            out.to_str().expect("utf-8 path"),
        ],
    );
    check_png(&out, sheet_side(2), sheet_side(1));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn interpolate_writes_a_strip() {
    let dir = out_dir("interpolate");
    let a = write_render(&dir, "a.png", RED_CIRCLE);
    let b = write_render(&dir, "b.png", GREEN_SQUARE);
    let out = dir.join("strip.png");
    run(
        env!("CARGO_BIN_EXE_interpolate"),
        &[
            "--image-a",
            &a,
            "--image-b",
            &b,
            "--frames",
            "3",
            "--xt",
            "inverted",
            "--out",
            out.to_str().expect("utf-8 path"),
        ],
    );
    check_png(&out, sheet_side(3), sheet_side(1));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn text_diff_writes_a_strip() {
    let dir = out_dir("text_diff");
    let image = write_render(&dir, "in.png", RED_CIRCLE);
    let out = dir.join("strip.png");
    run(
        env!("CARGO_BIN_EXE_text_diff"),
        &[
            "--image",
            &image,
            "--from",
            "a large red circle in the top left",
            "--to",
            "a large blue circle in the top left",
            "--steps",
            "2",
            "--xt",
            "seed",
            "--out",
            out.to_str().expect("utf-8 path"),
        ],
    );
    check_png(&out, sheet_side(2), sheet_side(1));
    std::fs::remove_dir_all(&dir).ok();
}
