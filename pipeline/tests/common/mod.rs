//! Shared by the pipeline's tests: editable copies of the fixture folders, and a tiny random
//! second super-resolution stage.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor};
use unclip::upsampler::{UNet2DConfig, UNet2DModel};
use unclip_testkit::{fixture_dir, read_json, temp_dir};

/// A temporary copy of fixture `name` (its component folders linked, `model_index.json` copied so
/// it can be edited), without the components in `drop`.
pub fn fixture_copy(name: &str, drop: &[&str]) -> PathBuf {
    let src = fixture_dir(name);
    let dst = temp_dir(&format!("pipe-{name}"));
    for entry in std::fs::read_dir(&src).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let file = entry.file_name();
        let file = file.to_str().expect("utf-8 name");
        if drop.contains(&file) {
            continue;
        }
        if entry.file_type().expect("file type").is_dir() {
            std::os::unix::fs::symlink(entry.path(), dst.join(file)).expect("link component");
        } else {
            std::fs::copy(entry.path(), dst.join(file)).expect("copy file");
        }
    }
    let mut index = read_json(&dst.join("model_index.json"));
    let obj = index.as_object_mut().expect("model_index object");
    for d in drop {
        obj.remove(*d);
    }
    write_index(&dst, &index);
    dst
}

pub fn write_index(dir: &Path, index: &serde_json::Value) {
    let path = dir.join("model_index.json");
    let _ = std::fs::remove_file(&path); // the copy of a read-only file is read-only
    std::fs::write(&path, serde_json::to_string_pretty(index).expect("json")).expect("write index");
}

/// The output side of the first super-resolution stage of fixture folder `dir` (its
/// `super_res_first` config's `sample_size`).
pub fn first_stage_size(dir: &Path) -> usize {
    UNet2DConfig::from_file(dir.join("super_res_first/config.json"))
        .expect("super_res_first config")
        .sample_size
        .expect("sample_size")
        .hw()[0]
}

/// A tiny random super-resolution UNet for `2 * first_size` outputs (6 -> 3 channels, blocks
/// [8, 16], no attention).
pub fn tiny_super_res_2(first_size: usize, device: &Device) -> UNet2DModel {
    let config: UNet2DConfig = serde_json::from_value(serde_json::json!({
        "in_channels": 6,
        "out_channels": 3,
        "block_out_channels": [8, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "down_block_types": ["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"],
        "up_block_types": ["ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"],
        "mid_block_type": "UNetMidBlock2D",
        "add_attention": false,
        "attention_head_dim": 8,
        "sample_size": 2 * first_size,
    }))
    .expect("config");
    UNet2DModel::new(&config, device).expect("tiny UNet2DModel")
}

/// Adds `model` as `super_res_2` to the folder `dir` (with the first stage's scheduler config as
/// `super_res_2_scheduler`).
pub fn add_super_res_2(dir: &Path, model: &UNet2DModel) {
    model
        .save_pretrained(dir.join("super_res_2"))
        .expect("save super_res_2");
    std::fs::create_dir_all(dir.join("super_res_2_scheduler")).expect("scheduler dir");
    std::fs::copy(
        dir.join("super_res_scheduler/scheduler_config.json"),
        dir.join("super_res_2_scheduler/scheduler_config.json"),
    )
    .expect("copy scheduler config");
    let mut index = read_json(&dir.join("model_index.json"));
    let obj = index.as_object_mut().expect("model_index object");
    obj.insert(
        "super_res_2".into(),
        serde_json::json!(["unclip", "UNet2DModel"]),
    );
    obj.insert(
        "super_res_2_scheduler".into(),
        serde_json::json!(["unclip", "UnCLIPScheduler"]),
    );
    write_index(dir, &index);
}

/// The dtypes of every float parameter of `module`.
pub fn float_dtypes<M: Module>(module: &M) -> Vec<DType> {
    struct Dtypes(Vec<DType>);
    impl ModuleVisitor for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().dtype());
        }
    }
    let mut v = Dtypes(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Asserts two tensors are identical: same shape, same bits everywhere (NaN-safe); the message
/// gives how many values differ and the first.
pub fn assert_identical<const D: usize>(what: &str, a: Tensor<D>, b: Tensor<D>) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (unclip_testkit::to_vec(a), unclip_testkit::to_vec(b));
    let differ: Vec<usize> = (0..a.len())
        .filter(|&i| a[i].to_bits() != b[i].to_bits())
        .collect();
    if let Some(&i) = differ.first() {
        panic!(
            "{what}: {} of {} values differ; first at {i}: {} vs {}",
            differ.len(),
            a.len(),
            a[i],
            b[i]
        );
    }
}

/// Whether two tensors differ anywhere (shapes equal).
pub fn differ<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> bool {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (unclip_testkit::to_vec(a), unclip_testkit::to_vec(b));
    a.iter().zip(&b).any(|(x, y)| x.to_bits() != y.to_bits())
}

/// The checks of a pipeline computing in a low-precision float dtype, against the f32 diffusers
/// reference of `unclip_tiny` (`tol`: scaled tolerance of single forwards and embeddings).
/// Returns the pipeline for further checks.
pub fn check_low_precision(dtype: burn::tensor::FloatDType, tol: f32) -> unclip::UnclipPipeline {
    use burn::tensor::Bool;
    use unclip::diffusion::ReplayNoise;
    use unclip::{Control, Latents, Settings, UnclipBuilder};
    use unclip_testkit::{Io, assert_close, test_device};

    let device = test_device();
    let dir = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&dir);
    let meta = read_json(&dir.join("io.json"));
    let e2e = &meta["e2e"];
    let n = |v: &serde_json::Value| v.as_u64().map(|x| x as usize);
    let g = |v: &serde_json::Value| v.as_f64().map(|x| x as f32);
    let d = Settings::default();
    let settings = Settings {
        prior_steps: n(&e2e["steps"]["prior"]).unwrap_or(d.prior_steps),
        decoder_steps: n(&e2e["steps"]["decoder"]).expect("decoder steps"),
        super_res_steps: n(&e2e["steps"]["super_res"]).expect("super_res steps"),
        prior_guidance_scale: g(&e2e["guidance"]["prior"]).unwrap_or(d.prior_guidance_scale),
        decoder_guidance_scale: g(&e2e["guidance"]["decoder"]).expect("decoder guidance"),
        ..d
    };
    let pipe = UnclipBuilder::new()
        .device(device.clone())
        .dtype(dtype)
        .from_pretrained(&dir)
        .settings(settings)
        .build()
        .expect("pipeline");
    assert_eq!(pipe.dtype(), dtype);
    let want: DType = dtype.into();
    // Every parameter of every model is in the dtype.
    let all = [
        float_dtypes(&*pipe.text_encoder.model().unwrap()),
        float_dtypes(&*pipe.prior.as_ref().unwrap().model().unwrap()),
        float_dtypes(&*pipe.text_proj.model().unwrap()),
        float_dtypes(&*pipe.decoder.model().unwrap()),
        float_dtypes(&*pipe.super_res_first.model().unwrap()),
        float_dtypes(&*pipe.super_res_last.model().unwrap()),
    ];
    for dtypes in &all {
        assert!(
            !dtypes.is_empty() && dtypes.iter().all(|d| *d == want),
            "{dtypes:?}"
        );
    }

    // The text encoder.
    let prompts: Vec<&str> = e2e["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let cond = pipe.encode_text(&prompts).unwrap();
    assert_eq!(cond.embeds.dtype(), want);
    assert_close(
        "text_embeds",
        cond.embeds.clone(),
        io.get("e2e.text_encoder.prompt.text_embeds"),
        tol,
    );
    assert_close(
        "last_hidden_state",
        cond.hidden_states.clone(),
        io.get("e2e.text_encoder.prompt.last_hidden_state"),
        tol,
    );

    // One decoder forward and one super-resolution forward on the reference's inputs.
    let t = |name: &str| Tensor::<1>::from_floats([io.get(name).f32()[0]], &device);
    let decoder = pipe.decoder.model().unwrap();
    let mask: Tensor<2, Bool> = io
        .get("e2e.decoder.attention_mask")
        .int::<2>(&device)
        .equal_elem(1);
    let out = decoder
        .forward(
            io.get("e2e.decoder.step0.sample").float::<4>(&device),
            t("e2e.decoder.step0.timestep"),
            io.get("e2e.text_proj.out.text_encoder_hidden_states")
                .float::<3>(&device),
            Some(
                io.get("e2e.text_proj.out.additive_clip_time_embeddings")
                    .float::<2>(&device),
            ),
            Some(mask),
        )
        .unwrap();
    assert_eq!(out.dtype(), want);
    assert_close(
        "decoder.step0.out",
        out,
        io.get("e2e.decoder.step0.out"),
        tol,
    );
    let unet = match io.get("e2e.super_res.step0.model").i64()[0] {
        0 => &pipe.super_res_first,
        _ => &pipe.super_res_last,
    };
    let x = Tensor::cat(
        vec![
            io.get("e2e.super_res_latents").float::<4>(&device),
            io.get("e2e.image_upscaled").float::<4>(&device),
        ],
        1,
    );
    let out = unet.forward(x, t("e2e.super_res.step0.timestep")).unwrap();
    assert_close(
        "super_res.step0.out",
        out,
        io.get("e2e.super_res.step0.out"),
        tol,
    );

    // The whole chain with the recorded noise and latents: the prior's output is close; the
    // images are valid (the decoder's first step at t = 999 amplifies the model's rounding by
    // 1 / sqrt(alpha_bar_999) ~ 2e4 before clipping, so they are not compared value for value).
    let mut noise = ReplayNoise::new();
    for name in e2e["noise_order"].as_array().unwrap() {
        let t = io.get(name.as_str().unwrap());
        noise.push(t.shape.clone(), t.f32()).unwrap();
    }
    let latents = Latents {
        prior: Some(io.get("e2e.prior_latents").float::<2>(&device)),
        decoder: Some(io.get("e2e.decoder_latents").float::<4>(&device)),
        super_res: Some(io.get("e2e.super_res_latents").float::<4>(&device)),
    };
    let out = pipe
        .text_to_image_with(&prompts, &mut noise, latents, &mut |_| Control::Continue)
        .unwrap();
    assert_eq!(noise.remaining(), 0);
    assert_eq!(out.images.dtype(), want);
    assert_close(
        "image_embeddings",
        out.image_embeddings.clone(),
        io.get("e2e.image_embeddings"),
        tol,
    );
    let images = unclip_testkit::to_vec(out.images.clone().permute([0, 2, 3, 1]));
    assert!(
        images.iter().all(|v| (0.0..=1.0).contains(v)),
        "images in [0, 1]"
    );
    let reference = io.get("e2e.images").f32();
    assert_eq!(images.len(), reference.len());
    let mae = images
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / images.len() as f32;
    println!("{dtype:?}: mean abs difference of the images from the f32 reference {mae:.4}");
    pipe
}
