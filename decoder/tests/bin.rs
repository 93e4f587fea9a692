//! The decoder UNet and the text projection load from PyTorch `.bin` files (read without
//! executing pickle code) and reproduce the reference outputs.

use burn::tensor::{Tensor, TensorData};
use unclip_decoder::{UNet2DConditionModel, UnCLIPTextProjModel};
use unclip_testkit::{Io, assert_close, bin_copy_of, fixture_dir, test_device};

#[test]
fn decoder_and_text_proj_from_pytorch_bin_match_diffusers() {
    let device = test_device();
    let root = fixture_dir("unclip_tiny");
    let io = Io::open_dir(&root);
    let unet = UNet2DConditionModel::from_pretrained(
        bin_copy_of(&root.join("decoder"), "diffusion_pytorch_model"),
        &device,
    )
    .expect("load decoder .bin");
    let t = io.get("decoder.timestep").f32();
    let t = Tensor::<1>::from_data(TensorData::new(t.clone(), [t.len()]), &device);
    let out = unet
        .forward(
            io.get("decoder.sample").float::<4>(&device),
            t,
            io.get("decoder.encoder_hidden_states").float::<3>(&device),
            Some(io.get("decoder.class_labels").float::<2>(&device)),
            Some(
                io.get("decoder.attention_mask")
                    .int::<2>(&device)
                    .equal_elem(1),
            ),
        )
        .unwrap();
    assert_close("decoder.out (.bin)", out, io.get("decoder.out"), 1e-4);

    let tp = UnCLIPTextProjModel::from_pretrained(
        bin_copy_of(&root.join("text_proj"), "diffusion_pytorch_model"),
        &device,
    )
    .expect("load text_proj .bin");
    let out = tp
        .forward(
            io.get("text_proj.image_embeddings").float::<2>(&device),
            io.get("text_proj.prompt_embeds").float::<2>(&device),
            io.get("text_proj.text_encoder_hidden_states")
                .float::<3>(&device),
            true,
        )
        .unwrap();
    assert_close(
        "text_proj.cfg.additive_clip_time_embeddings (.bin)",
        out.additive_clip_time_embeddings,
        io.get("text_proj.cfg.additive_clip_time_embeddings"),
        1e-4,
    );
}
