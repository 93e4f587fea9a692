//! Parity of the decoder and text_proj against diffusers 0.42 outputs stored in the fixture
//! folder (`$UNCLIP_FIXTURES/unclip_tiny`): configs, weights, inputs and reference outputs are all
//! read from there, so another fixture root with other sizes runs unchanged.

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Tensor, TensorData};
use unclip_decoder::{DecoderError, UNet2DConditionModel, UnCLIPTextProjModel};
use unclip_nn::{Checkpoint, LoadError};
use unclip_testkit::{HostTensor, Io, assert_close, fixture_dir, test_device};

const TOL: f32 = 1e-4;

fn root() -> PathBuf {
    fixture_dir("unclip_tiny")
}

fn timesteps(h: &HostTensor, device: &Device) -> Tensor<1> {
    let v = h.f32();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

fn bool_mask(h: &HostTensor, device: &Device) -> Tensor<2, Bool> {
    h.int::<2>(device).equal_elem(1)
}

/// Rows `start..start + n` of a host tensor, as a device tensor.
fn rows<const D: usize>(h: &HostTensor, start: usize, n: usize, device: &Device) -> Tensor<D> {
    let t = h.float::<D>(device);
    t.narrow(0, start, n)
}

#[test]
fn text_proj_parity() {
    let device = test_device();
    let dir = root();
    let io = Io::open_dir(&dir);
    let model = UnCLIPTextProjModel::from_pretrained(dir.join("text_proj"), &device)
        .expect("load text_proj");
    let img = io.get("text_proj.image_embeddings");
    let prompt = io.get("text_proj.prompt_embeds");
    let hidden = io.get("text_proj.text_encoder_hidden_states");

    // With CFG: image embeddings [Bi, E], prompt rows [uncond.., cond..] = 2 Bi.
    let out = model
        .forward(
            img.float(&device),
            prompt.float(&device),
            hidden.float(&device),
            true,
        )
        .expect("text_proj cfg");
    assert_close(
        "text_proj.cfg.text_encoder_hidden_states_out",
        out.encoder_hidden_states,
        io.get("text_proj.cfg.text_encoder_hidden_states_out"),
        TOL,
    );
    assert_close(
        "text_proj.cfg.additive_clip_time_embeddings",
        out.additive_clip_time_embeddings,
        io.get("text_proj.cfg.additive_clip_time_embeddings"),
        TOL,
    );

    // Without CFG: the conditional rows only.
    let bi = img.shape[0];
    let out = model
        .forward(
            img.float(&device),
            rows::<2>(prompt, bi, bi, &device),
            rows::<3>(hidden, bi, bi, &device),
            false,
        )
        .expect("text_proj nocfg");
    assert_close(
        "text_proj.nocfg.text_encoder_hidden_states_out",
        out.encoder_hidden_states,
        io.get("text_proj.nocfg.text_encoder_hidden_states_out"),
        TOL,
    );
    assert_close(
        "text_proj.nocfg.additive_clip_time_embeddings",
        out.additive_clip_time_embeddings,
        io.get("text_proj.nocfg.additive_clip_time_embeddings"),
        TOL,
    );
}

#[test]
fn decoder_parity() {
    let device = test_device();
    let dir = root();
    let io = Io::open_dir(&dir);
    let unet =
        UNet2DConditionModel::from_pretrained(dir.join("decoder"), &device).expect("load decoder");
    let sample = io.get("decoder.sample").float::<4>(&device);
    let t = timesteps(io.get("decoder.timestep"), &device);
    let ctx = io.get("decoder.encoder_hidden_states").float::<3>(&device);
    let class_labels = io.get("decoder.class_labels").float::<2>(&device);
    let mask = bool_mask(io.get("decoder.attention_mask"), &device);

    let out = unet
        .forward(
            sample.clone(),
            t.clone(),
            ctx.clone(),
            Some(class_labels.clone()),
            Some(mask),
        )
        .expect("decoder forward");
    assert_close("decoder.out", out, io.get("decoder.out"), TOL);

    let out = unet
        .forward(sample, t, ctx, Some(class_labels), None)
        .expect("decoder forward (no mask)");
    assert_close("decoder.nomask.out", out, io.get("decoder.nomask.out"), TOL);
}

/// The e2e decoder calls of the pipeline run (text_proj output -> decoder, with CFG and mask),
/// when the fixture stores them.
#[test]
fn e2e_text_proj_and_decoder_steps() {
    let device = test_device();
    let dir = root();
    let io = Io::open_dir(&dir);
    if !io.has("e2e.text_proj.image_embeddings") {
        println!("no e2e text_proj tensors in {}", io.path.display());
        return;
    }
    let text_proj = UnCLIPTextProjModel::from_pretrained(dir.join("text_proj"), &device)
        .expect("load text_proj");
    let out = text_proj
        .forward(
            io.get("e2e.text_proj.image_embeddings").float(&device),
            io.get("e2e.text_proj.prompt_embeds").float(&device),
            io.get("e2e.text_proj.text_encoder_hidden_states")
                .float(&device),
            true,
        )
        .expect("text_proj");
    assert_close(
        "e2e.text_proj.out.text_encoder_hidden_states",
        out.encoder_hidden_states.clone(),
        io.get("e2e.text_proj.out.text_encoder_hidden_states"),
        TOL,
    );
    assert_close(
        "e2e.text_proj.out.additive_clip_time_embeddings",
        out.additive_clip_time_embeddings.clone(),
        io.get("e2e.text_proj.out.additive_clip_time_embeddings"),
        TOL,
    );
    // The decoder mask = the prior's text mask with K true columns prepended.
    let mask = bool_mask(io.get("e2e.decoder.attention_mask"), &device);
    if io.has("e2e.prior.attention_mask") {
        let ext =
            text_proj.extend_attention_mask(bool_mask(io.get("e2e.prior.attention_mask"), &device));
        assert!(
            ext.equal(mask.clone()).all().into_scalar::<bool>(),
            "extended attention mask differs from the pipeline's"
        );
    }
    let unet =
        UNet2DConditionModel::from_pretrained(dir.join("decoder"), &device).expect("load decoder");
    let mut i = 0;
    while io.has(&format!("e2e.decoder.step{i}.out")) {
        let p = format!("e2e.decoder.step{i}");
        let y = unet
            .forward(
                io.get(&format!("{p}.sample")).float(&device),
                timesteps(io.get(&format!("{p}.timestep")), &device),
                out.encoder_hidden_states.clone(),
                Some(out.additive_clip_time_embeddings.clone()),
                Some(mask.clone()),
            )
            .expect("decoder step");
        assert_close(&format!("{p}.out"), y, io.get(&format!("{p}.out")), TOL);
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Strict loading: a checkpoint with a missing / extra / mis-shaped tensor is a typed error naming it.

/// Minimal safetensors writer (f32 tensors) for the corrupted copies.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let n = values.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        offset += n;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).expect("write safetensors");
}

/// The first key of the fixture checkpoint of `component` matching `pred`.
fn fixture_key(component: &str, pred: impl Fn(&str) -> bool) -> String {
    let ckpt = Checkpoint::open_dir(root().join(component), "diffusion_pytorch_model")
        .expect("open checkpoint");
    let keys = ckpt.keys();
    keys.iter()
        .find(|k| pred(k))
        .map(|k| k.to_string())
        .unwrap_or_else(|| keys[0].to_string())
}

/// Copies `<fixture>/<component>` into a temp folder with the tensor list edited by `edit`.
fn corrupted_copy(
    component: &str,
    tag: &str,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> PathBuf {
    let src = root().join(component);
    let dst = std::env::temp_dir().join(format!(
        "unclip_decoder_{component}_{tag}_{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dst).expect("temp dir");
    std::fs::copy(src.join("config.json"), dst.join("config.json")).expect("copy config");
    let ckpt = Checkpoint::open_dir(&src, "diffusion_pytorch_model").expect("open checkpoint");
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = ckpt
        .keys()
        .into_iter()
        .map(|k| {
            (
                k.to_string(),
                ckpt.shape(k).unwrap_or_default(),
                ckpt.values(k).unwrap_or_default(),
            )
        })
        .collect();
    edit(&mut tensors);
    write_safetensors(&dst.join("diffusion_pytorch_model.safetensors"), &tensors);
    dst
}

#[test]
fn text_proj_missing_tensor_is_named() {
    let key = "encoder_hidden_states_proj.bias".to_string();
    let dir = corrupted_copy("text_proj", "missing", |t| t.retain(|(k, _, _)| *k != key));
    let err = UnCLIPTextProjModel::from_pretrained(&dir, &test_device()).expect_err("must fail");
    match &err {
        DecoderError::Load(LoadError::MissingTensors { keys, .. }) => {
            assert!(keys.contains(&key), "{err}")
        }
        other => panic!("expected MissingTensors, got {other}"),
    }
    assert!(err.to_string().contains(&key));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn text_proj_extra_tensor_is_named() {
    let key = "some_extra.weight";
    let dir = corrupted_copy("text_proj", "extra", |t| {
        t.push((key.to_string(), vec![2], vec![1.0, 2.0]))
    });
    let err = UnCLIPTextProjModel::from_pretrained(&dir, &test_device()).expect_err("must fail");
    match &err {
        DecoderError::Load(LoadError::UnusedTensors { keys, .. }) => {
            assert!(keys.iter().any(|k| k == key), "{err}")
        }
        other => panic!("expected UnusedTensors, got {other}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decoder_misshaped_tensor_is_named() {
    // An attention output bias (checkpoint key `...to_out.0.bias`, module path `...to_out.bias`).
    let key = fixture_key("decoder", |k| k.ends_with("to_out.0.bias"));
    let dir = corrupted_copy("decoder", "misshaped", |t| {
        for (k, shape, values) in t.iter_mut() {
            if *k == key {
                shape[0] += 1;
                values.push(0.0);
            }
        }
    });
    let err = UNet2DConditionModel::from_pretrained(&dir, &test_device()).expect_err("must fail");
    match &err {
        DecoderError::Load(LoadError::ShapeMismatch {
            key: k,
            expected,
            found,
            ..
        }) => {
            // The error names the module path (the checkpoint key after the to_out.0 rename).
            assert_eq!(k, &key.replace("to_out.0.", "to_out."), "{err}");
            assert_eq!(found[0], expected[0] + 1);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decoder_missing_tensor_is_named() {
    let key = fixture_key("decoder", |k| {
        k.contains("downsamplers.0.time_emb_proj.weight")
    });
    let dir = corrupted_copy("decoder", "missing", |t| t.retain(|(k, _, _)| *k != key));
    let err = UNet2DConditionModel::from_pretrained(&dir, &test_device()).expect_err("must fail");
    match &err {
        DecoderError::Load(LoadError::MissingTensors { keys, .. }) => {
            assert!(keys.contains(&key), "{err}")
        }
        other => panic!("expected MissingTensors, got {other}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unsupported_config_value_names_the_field() {
    let src = root().join("decoder");
    let text = std::fs::read_to_string(src.join("config.json")).expect("config");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["resnet_time_scale_shift"] = serde_json::json!("spatial");
    let cfg: unclip_decoder::UNet2DConditionConfig =
        serde_json::from_value(v.clone()).expect("deserialises");
    let err = cfg.validate().expect_err("must fail");
    assert!(
        matches!(&err, DecoderError::UnsupportedConfig { field, .. } if field == "resnet_time_scale_shift"),
        "{err}"
    );
    v["resnet_time_scale_shift"] = serde_json::json!("scale_shift");
    v["down_block_types"][1] = serde_json::json!("CrossAttnDownBlock2D");
    let cfg: unclip_decoder::UNet2DConditionConfig =
        serde_json::from_value(v).expect("deserialises");
    let err = cfg.validate().expect_err("must fail");
    assert!(
        err.to_string().contains("down_block_types[1]")
            && err.to_string().contains("CrossAttnDownBlock2D"),
        "{err}"
    );
}
