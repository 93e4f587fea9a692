//! Parity of `PriorTransformer` with diffusers on the `unclip_tiny` fixture (every `prior.*`
//! tensor of `io.safetensors`), plus strict-loading errors on doctored checkpoint copies.
//!
//! Everything (config, weights, inputs, outputs) is read from the fixture folder, so the test
//! runs unchanged against another fixture root (`UNCLIP_FIXTURES`) with other sizes.

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Tensor};
use unclip_nn::{Checkpoint, LoadError};
use unclip_prior::{KARLO_PRIOR_KEYS, PriorConditioning, PriorError, PriorTransformer};
use unclip_testkit::{Io, assert_close, fixture_dir, test_device};

const TOL: f32 = 1e-4;

fn prior_dir() -> PathBuf {
    fixture_dir("unclip_tiny").join("prior")
}

fn timestep(io: &Io, name: &str, device: &Device) -> Tensor<1> {
    let t = io.get(name).f32();
    Tensor::from_data(burn::tensor::TensorData::new(t.clone(), [t.len()]), device)
}

fn mask(io: &Io, name: &str, device: &Device) -> Tensor<2, Bool> {
    io.get(name).int::<2>(device).equal_elem(1)
}

fn load(device: &Device) -> PriorTransformer {
    PriorTransformer::from_pretrained(prior_dir(), device).expect("load the fixture prior")
}

#[test]
fn prior_forward_matches_diffusers() {
    let device = test_device();
    let io = Io::open_dir(&fixture_dir("unclip_tiny"));
    let prior = load(&device);
    let x = io.get("prior.hidden_states").float::<2>(&device);
    let cond = PriorConditioning {
        proj_embedding: io.get("prior.proj_embedding").float::<2>(&device),
        encoder_hidden_states: Some(io.get("prior.encoder_hidden_states").float::<3>(&device)),
        attention_mask: Some(mask(&io, "prior.attention_mask", &device)),
    };

    // Masked call at the stored timestep.
    let t = timestep(&io, "prior.timestep", &device);
    let out = prior.forward(x.clone(), t, &cond).unwrap();
    assert_close(
        "prior.predicted_image_embedding",
        out,
        io.get("prior.predicted_image_embedding"),
        TOL,
    );

    // timestep=5 (python int), attention_mask=None.
    let nomask = PriorConditioning {
        attention_mask: None,
        ..cond.clone()
    };
    let t5 = Tensor::<1>::from_floats([5.0], &device);
    let out = prior.forward(x.clone(), t5, &nomask).unwrap();
    assert_close(
        "prior.nomask_t5.predicted_image_embedding",
        out,
        io.get("prior.nomask_t5.predicted_image_embedding"),
        TOL,
    );

    // post_process_latents.
    let out = prior.post_process_latents(x.clone());
    assert_close(
        "prior.post_process_latents.out",
        out.clone(),
        io.get("prior.post_process_latents.out"),
        TOL,
    );
    // ... and its inverse.
    assert_close(
        "normalize(post_process(x))",
        prior.normalize_embeddings(out),
        io.get("prior.hidden_states"),
        TOL,
    );
}

/// The raw prior calls of the end-to-end pipeline run (CFG batches: uncond rows first).
#[test]
fn prior_forward_matches_e2e_steps() {
    let device = test_device();
    let io = Io::open_dir(&fixture_dir("unclip_tiny"));
    if !io.has("e2e.prior.step0.hidden_states") {
        return;
    }
    let prior = load(&device);
    let cond = PriorConditioning {
        proj_embedding: io.get("e2e.prior.proj_embedding").float::<2>(&device),
        encoder_hidden_states: Some(
            io.get("e2e.prior.encoder_hidden_states")
                .float::<3>(&device),
        ),
        attention_mask: Some(mask(&io, "e2e.prior.attention_mask", &device)),
    };
    let mut i = 0;
    while io.has(&format!("e2e.prior.step{i}.hidden_states")) {
        let x = io
            .get(&format!("e2e.prior.step{i}.hidden_states"))
            .float::<2>(&device);
        let t = timestep(&io, &format!("e2e.prior.step{i}.timestep"), &device);
        let out = prior.forward(x, t, &cond).unwrap();
        let name = format!("e2e.prior.step{i}.predicted_image_embedding");
        assert_close(&name, out, io.get(&name), TOL);
        i += 1;
    }
    assert!(i > 0);
}

/// Every key of the fixture checkpoint maps onto a module path and every parameter is covered.
#[test]
fn key_map_covers_the_karlo_checkpoint() {
    let device = test_device();
    let ckpt = Checkpoint::open_dir(prior_dir(), "diffusion_pytorch_model").unwrap();
    let keys: Vec<String> = ckpt.keys().iter().map(|s| s.to_string()).collect();
    let remapped = ckpt.remap(&KARLO_PRIOR_KEYS).unwrap();
    let mut module_keys: Vec<String> = remapped.keys().iter().map(|s| s.to_string()).collect();
    assert_eq!(module_keys.len(), keys.len(), "renames must be injective");
    // The module's own paths are exactly the remapped key set.
    let config = unclip_nn::read_json(prior_dir().join("config.json")).unwrap();
    let model = PriorTransformer::new(&config, &device).unwrap();
    use burn::store::ModuleSnapshot;
    let mut paths: Vec<String> = model
        .collect(None, None, false)
        .into_iter()
        .map(|t| t.name)
        .collect();
    paths.sort();
    module_keys.sort();
    assert_eq!(paths, module_keys);
    // And saving writes the checkpoint's own keys back.
    let mut saved: Vec<String> = paths.iter().map(|p| unclip_prior::save_key(p)).collect();
    saved.sort();
    let mut orig = keys.clone();
    orig.sort();
    assert_eq!(saved, orig);
}

// ---------- strict loading: doctored copies of the fixture checkpoint ----------

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("unclip-prior-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Copies the fixture prior to a temp folder, rewriting its tensors with `edit`.
fn doctored_copy(tag: &str, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) -> TempDir {
    let src = prior_dir();
    let dir = temp_dir(tag);
    std::fs::copy(src.join("config.json"), dir.0.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.0.join("diffusion_pytorch_model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    dir
}

fn load_err(dir: &Path) -> LoadError {
    match PriorTransformer::from_pretrained(dir, &test_device()) {
        Err(PriorError::Load(e)) => e,
        Err(other) => panic!("expected a load error, got {other}"),
        Ok(_) => panic!("a doctored checkpoint loaded"),
    }
}

#[test]
fn missing_key_is_a_typed_error_naming_it() {
    let dir = doctored_copy("missing", |t| {
        t.retain(|(n, _, _)| n != "transformer_blocks.1.ff.net.2.weight")
    });
    match load_err(&dir.0) {
        LoadError::MissingTensors { keys, .. } => {
            assert!(
                keys.iter()
                    .any(|k| k.contains("transformer_blocks.1.ff.proj_out.weight")),
                "{keys:?}"
            )
        }
        other => panic!("expected MissingTensors, got {other}"),
    }
}

#[test]
fn extra_key_is_a_typed_error_naming_it() {
    let dir = doctored_copy("extra", |t| {
        t.push((
            "transformer_blocks.0.attn2.to_q.weight".into(),
            vec![2],
            vec![0u8; 8],
        ))
    });
    match load_err(&dir.0) {
        LoadError::UnusedTensors { keys, .. } => {
            assert!(
                keys.iter()
                    .any(|k| k == "transformer_blocks.0.attn2.to_q.weight"),
                "{keys:?}"
            )
        }
        other => panic!("expected UnusedTensors, got {other}"),
    }
}

#[test]
fn wrong_shape_is_a_typed_error_naming_the_key() {
    let dir = doctored_copy("shape", |t| {
        let e = t
            .iter_mut()
            .find(|(n, _, _)| n == "proj_in.weight")
            .unwrap();
        let n: usize = e.1.iter().product();
        e.1 = vec![n]; // flatten [inner, E] -> [inner * E]
    });
    match load_err(&dir.0) {
        LoadError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "proj_in.weight");
            assert_eq!(expected.len(), 2);
            assert_eq!(found.len(), 1);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn a_bad_config_value_is_a_typed_error() {
    let dir = temp_dir("badcfg");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prior_dir().join("config.json")).unwrap())
            .unwrap();
    cfg["norm_in_type"] = serde_json::Value::String("batch".into());
    std::fs::write(dir.0.join("config.json"), cfg.to_string()).unwrap();
    match PriorTransformer::from_pretrained(&dir.0, &test_device()) {
        Err(PriorError::UnsupportedConfig { field, .. }) => assert_eq!(field, "norm_in_type"),
        Err(other) => panic!("expected UnsupportedConfig, got {other}"),
        Ok(_) => panic!("loaded"),
    }
}

#[test]
fn save_pretrained_round_trips() {
    let device = test_device();
    let prior = load(&device);
    let dir = temp_dir("roundtrip");
    prior.save_pretrained(&dir.0).unwrap();
    let back = PriorTransformer::from_pretrained(&dir.0, &device).unwrap();
    assert_eq!(back.config(), prior.config());
    let io = Io::open_dir(&fixture_dir("unclip_tiny"));
    let x = io.get("prior.hidden_states").float::<2>(&device);
    let cond = PriorConditioning {
        proj_embedding: io.get("prior.proj_embedding").float::<2>(&device),
        encoder_hidden_states: Some(io.get("prior.encoder_hidden_states").float::<3>(&device)),
        attention_mask: Some(mask(&io, "prior.attention_mask", &device)),
    };
    let t = timestep(&io, "prior.timestep", &device);
    let out = back.forward(x, t, &cond).unwrap();
    assert_close(
        "reloaded prior",
        out,
        io.get("prior.predicted_image_embedding"),
        TOL,
    );
}

#[test]
fn wrong_input_shapes_are_typed_errors() {
    let device = test_device();
    let prior = load(&device);
    let c = prior.config().clone();
    let b = 2;
    let cond = PriorConditioning {
        proj_embedding: Tensor::zeros([b, c.embedding_proj_dim()], &device),
        encoder_hidden_states: Some(Tensor::zeros(
            [b, c.num_embeddings, c.embedding_dim],
            &device,
        )),
        attention_mask: None,
    };
    let t = Tensor::<1>::from_floats([3.0], &device);
    let bad_x = Tensor::<2>::zeros([b, c.embedding_dim + 1], &device);
    assert!(matches!(
        prior.forward(bad_x, t.clone(), &cond),
        Err(PriorError::Shape {
            input: "hidden_states",
            ..
        })
    ));
    let x = Tensor::<2>::zeros([b, c.embedding_dim], &device);
    let short = PriorConditioning {
        encoder_hidden_states: Some(Tensor::zeros(
            [b, c.num_embeddings - 1, c.embedding_dim],
            &device,
        )),
        ..cond.clone()
    };
    assert!(prior.forward(x.clone(), t.clone(), &short).is_err());
    let no_text = PriorConditioning {
        encoder_hidden_states: None,
        ..cond.clone()
    };
    assert!(matches!(
        prior.forward(x.clone(), t, &no_text),
        Err(PriorError::InvalidArgument { .. })
    ));
    assert_eq!(
        prior
            .forward(x, Tensor::from_floats([1.0, 2.0], &device), &cond)
            .unwrap()
            .dims(),
        [b, c.clip_embed_dim()]
    );
}
