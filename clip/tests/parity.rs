//! Parity of the CLIP towers with transformers, on every CLIP fixture folder
//! (`clip_tiny_quickgelu`, `clip_tiny_gelu`): every output in `io.safetensors` within 1e-4 max abs
//! error scaled by max(1, max|ref|). Config, weights, inputs and expected outputs are all read from
//! the fixture folder.

use unclip_clip::{
    ClipModel, ClipTextModelWithProjection, ClipVisionModelWithProjection, contrastive_loss,
    l2_normalize,
};
use unclip_testkit::{Io, assert_close, fixture_dir, test_device};

const TOL: f32 = 1e-4;

fn check_clip_folder(name: &str) {
    let device = test_device();
    let dir = fixture_dir(name);
    let io = Io::open_dir(&dir);
    let model = ClipModel::from_pretrained(&dir, &device).expect("load CLIPModel");

    let ids = io.get("input_ids").int::<2>(&device);
    let mask = io.get("attention_mask").int::<2>(&device);
    let pixels = io.get("pixel_values").float::<4>(&device);
    let out = model.forward(ids.clone(), Some(mask), pixels.clone(), true);

    let n_text = io.names_with_prefix("text.hidden_states.").len();
    assert_eq!(
        out.text.hidden_states.len(),
        n_text,
        "{name}: number of text hidden states"
    );
    for (i, h) in out.text.hidden_states.iter().enumerate() {
        assert_close(
            &format!("{name} text.hidden_states.{i}"),
            h.clone(),
            io.get(&format!("text.hidden_states.{i}")),
            TOL,
        );
    }
    assert_close(
        &format!("{name} text.last_hidden_state"),
        out.text.last_hidden_state.clone(),
        io.get("text.last_hidden_state"),
        TOL,
    );
    // transformers 5's `CLIPModel.forward` returns the tower outputs of `get_text_features` /
    // `get_image_features`, whose `pooler_output` is already projected: the fixture's
    // `text.pooler_output` / `vision.pooler_output` equal `*_embeds_unnormalised` bit for bit and
    // have `projection_dim` columns (the raw pooled state is checked by the `_no_mask` call below
    // and through every projection-based output).
    let text_pooled_projected = model
        .text_projection
        .forward(out.text.pooler_output.clone());
    assert_close(
        &format!("{name} text.pooler_output (projected)"),
        text_pooled_projected,
        io.get("text.pooler_output"),
        TOL,
    );
    assert_close(
        &format!("{name} text_embeds"),
        out.text_embeds.clone(),
        io.get("text_embeds"),
        TOL,
    );

    let n_vis = io.names_with_prefix("vision.hidden_states.").len();
    assert_eq!(
        out.vision.hidden_states.len(),
        n_vis,
        "{name}: number of vision hidden states"
    );
    for (i, h) in out.vision.hidden_states.iter().enumerate() {
        assert_close(
            &format!("{name} vision.hidden_states.{i}"),
            h.clone(),
            io.get(&format!("vision.hidden_states.{i}")),
            TOL,
        );
    }
    assert_close(
        &format!("{name} vision.last_hidden_state"),
        out.vision.last_hidden_state.clone(),
        io.get("vision.last_hidden_state"),
        TOL,
    );
    let vision_pooled_projected = model
        .visual_projection
        .forward(out.vision.pooler_output.clone());
    assert_close(
        &format!("{name} vision.pooler_output (projected)"),
        vision_pooled_projected,
        io.get("vision.pooler_output"),
        TOL,
    );
    assert_close(
        &format!("{name} image_embeds"),
        out.image_embeds.clone(),
        io.get("image_embeds"),
        TOL,
    );
    assert_close(
        &format!("{name} logits_per_image"),
        out.logits_per_image.clone(),
        io.get("logits_per_image"),
        TOL,
    );
    assert_close(
        &format!("{name} logits_per_text"),
        out.logits_per_text.clone(),
        io.get("logits_per_text"),
        TOL,
    );
    assert_close(
        &format!("{name} loss"),
        contrastive_loss(out.logits_per_text.clone()),
        &reshape1(io.get("loss")),
        TOL,
    );
    assert_close(
        &format!("{name} logit_scale"),
        model.logit_scale.val(),
        &reshape1(io.get("logit_scale")),
        TOL,
    );

    // Unnormalised features (get_text_features / get_image_features).
    let mask = io.get("attention_mask").int::<2>(&device);
    assert_close(
        &format!("{name} text_embeds_unnormalised"),
        model.text_features(ids.clone(), Some(mask)),
        io.get("text_embeds_unnormalised"),
        TOL,
    );
    assert_close(
        &format!("{name} image_embeds_unnormalised"),
        model.image_features(pixels.clone()),
        io.get("image_embeds_unnormalised"),
        TOL,
    );

    // Without attention mask (causal only), as the unCLIP pipelines call the text encoder.
    let nomask = model.text_model.forward(ids.clone(), None, false);
    assert_close(
        &format!("{name} text.last_hidden_state_no_mask"),
        nomask.last_hidden_state,
        io.get("text.last_hidden_state_no_mask"),
        TOL,
    );
    assert_close(
        &format!("{name} text.pooler_output_no_mask"),
        nomask.pooler_output,
        io.get("text.pooler_output_no_mask"),
        TOL,
    );

    // The same checkpoint through the single-tower loaders.
    let text =
        ClipTextModelWithProjection::from_pretrained(&dir, &device).expect("load text tower");
    let mask = io.get("attention_mask").int::<2>(&device);
    let (te, _) = text.forward(ids, Some(mask));
    assert_close(
        &format!("{name} text tower text_embeds"),
        l2_normalize(te),
        io.get("text_embeds"),
        TOL,
    );
    let vision =
        ClipVisionModelWithProjection::from_pretrained(&dir, &device).expect("load vision tower");
    let (ie, _) = vision.forward(pixels);
    assert_close(
        &format!("{name} vision tower image_embeds"),
        l2_normalize(ie),
        io.get("image_embeds"),
        TOL,
    );
}

/// 0-dim reference tensors compare against burn's `[1]`.
fn reshape1(t: &unclip_testkit::HostTensor) -> unclip_testkit::HostTensor {
    let mut t = t.clone();
    if t.shape.is_empty() {
        t.shape = vec![1];
    }
    t
}

#[test]
fn clip_tiny_quickgelu() {
    check_clip_folder("clip_tiny_quickgelu");
}

#[test]
fn clip_tiny_gelu() {
    check_clip_folder("clip_tiny_gelu");
}
