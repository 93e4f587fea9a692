"""PyTorch (CPU) timing of one text-to-image call on the embedded shapes model, the counterpart
of `cargo run --release -p xtask -- bench-pipeline`.

A benchmark tool, not a project dependency: a Python with torch, diffusers and transformers.
It loads `models/shapes` with diffusers' and transformers' own classes (CLIPTokenizer,
CLIPTextModelWithProjection, PriorTransformer, UnCLIPTextProjModel, UNet2DConditionModel,
UNet2DModel) and runs the same work as unclip's `text_to_image` with the folder's
`unclip_settings.json`: the text encoder on the caption and the empty caption, the prior with
classifier-free guidance (batch 2), the text projection, the decoder with guidance (batch 2)
sampled by DDIM at eta 0 with v prediction (written out here: diffusers' UnCLIPScheduler has no
v prediction), then both super-resolution stages on the bicubic-upscaled image (x_0 prediction;
UnCLIPScheduler, and DDPMScheduler for the second stage's linear schedule, which UnCLIPScheduler
refuses). Timings cover the whole call, loading excluded; peak RSS is the process's
(loading included), as unclip's side reports it.

    python xtask/bench/torch_pipeline.py --model models/shapes --threads 2 --warmup 1 --iters 3

Prints `times_ms=...` and `peak_rss_kib=...`.
"""

import argparse
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import UnCLIPScheduler


def load(model_dir):
    from diffusers import (DDPMScheduler, PriorTransformer, UNet2DConditionModel, UNet2DModel,
                           UnCLIPScheduler)
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    p = lambda name: os.path.join(model_dir, name)  # noqa: E731
    m = {
        "tokenizer": CLIPTokenizer.from_pretrained(p("tokenizer")),
        "text_encoder": CLIPTextModelWithProjection.from_pretrained(p("text_encoder")),
        "prior": PriorTransformer.from_pretrained(p("prior")),
        "text_proj": UnCLIPTextProjModel.from_pretrained(p("text_proj")),
        "decoder": UNet2DConditionModel.from_pretrained(p("decoder")),
        "sr1": UNet2DModel.from_pretrained(p("super_res_first")),
        "sr2": UNet2DModel.from_pretrained(p("super_res_2")),
        "prior_scheduler": UnCLIPScheduler.from_pretrained(p("prior_scheduler")),
        "sr1_scheduler": UnCLIPScheduler.from_pretrained(p("super_res_scheduler")),
        # a linear schedule, which diffusers' UnCLIPScheduler refuses: DDPMScheduler does the
        # same ancestral step (x_0 prediction, fixed_small_log variance)
        "sr2_scheduler": DDPMScheduler.from_pretrained(p("super_res_2_scheduler")),
    }
    with open(p("decoder_scheduler/scheduler_config.json")) as f:
        m["decoder_schedule"] = json.load(f)
    with open(p("unclip_settings.json")) as f:
        m["settings"] = json.load(f)
    for k in ("text_encoder", "prior", "text_proj", "decoder", "sr1", "sr2"):
        m[k].eval().float()
    return m


def ddim_v(decoder, text_proj_out, mask, m, shape, steps, guidance, gen):
    """DDIM (eta 0) with v prediction and classifier-free guidance, linspace timesteps."""
    cfg = m["decoder_schedule"]
    n = cfg["num_train_timesteps"]
    betas = torch.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    ts = torch.linspace(0, n - 1, steps, dtype=torch.float64).round().long().flip(0)
    hidden, additive = text_proj_out
    x = torch.randn(shape, generator=gen)
    for i, t in enumerate(ts):
        out = decoder(torch.cat([x, x]), t, encoder_hidden_states=hidden,
                      class_labels=additive, attention_mask=mask).sample
        uncond, cond = out.chunk(2)
        c = x.shape[1]
        v = uncond[:, :c] + guidance * (cond[:, :c] - uncond[:, :c])
        a_t = ab[t].float()
        a_prev = ab[ts[i + 1]].float() if i + 1 < len(ts) else torch.tensor(1.0)
        x0 = (a_t.sqrt() * x - (1 - a_t).sqrt() * v).clamp(-1, 1)
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def super_res(unet, scheduler, image, steps, gen):
    size = unet.config.sample_size
    up = F.interpolate(image, size=[size, size], mode="bicubic", align_corners=False,
                       antialias=True)
    x = torch.randn(image.shape[0], unet.config.out_channels, size, size, generator=gen)
    scheduler.set_timesteps(steps)
    ts = scheduler.timesteps
    for i, t in enumerate(ts):
        pred = unet(torch.cat([x, up], dim=1), t).sample
        if isinstance(scheduler, UnCLIPScheduler):
            prev = None if i + 1 == len(ts) else ts[i + 1]
            x = scheduler.step(pred, t, x, prev_timestep=prev, generator=gen).prev_sample
        else:
            x = scheduler.step(pred, t, x, generator=gen).prev_sample
    return x.clamp(-1, 1)


def text_to_image(m, prompt, seed):
    s = m["settings"]
    gen = torch.Generator().manual_seed(seed)
    tok = m["tokenizer"]([prompt, ""], padding="max_length",
                         max_length=tok_len(m), truncation=True, return_tensors="pt")
    ids, mask = tok.input_ids, tok.attention_mask.bool()
    # [cond, uncond] -> diffusers' order [uncond, cond]
    ids, mask = ids.flip(0), mask.flip(0)
    enc = m["text_encoder"](ids, attention_mask=mask)
    prompt_embeds, hidden = enc.text_embeds, enc.last_hidden_state
    prior = m["prior"]
    sched = m["prior_scheduler"]
    sched.set_timesteps(s["prior_steps"])
    x = torch.randn(1, prior.config.embedding_dim, generator=gen)
    ts = sched.timesteps
    for i, t in enumerate(ts):
        pred = prior(torch.cat([x, x]), timestep=t, proj_embedding=prompt_embeds,
                     encoder_hidden_states=hidden, attention_mask=mask).predicted_image_embedding
        u, c = pred.chunk(2)
        pred = u + s["prior_guidance_scale"] * (c - u)
        prev = None if i + 1 == len(ts) else ts[i + 1]
        x = sched.step(pred, t, x, prev_timestep=prev, generator=gen).prev_sample
    image_embeddings = prior.post_process_latents(x)
    proj = m["text_proj"](image_embeddings=image_embeddings, prompt_embeds=prompt_embeds,
                          text_encoder_hidden_states=hidden, do_classifier_free_guidance=True)
    extra = m["text_proj"].config.clip_extra_context_tokens
    dmask = F.pad(mask, (extra, 0), value=True)
    dec = m["decoder"]
    shape = (1, dec.config.in_channels, dec.config.sample_size, dec.config.sample_size)
    low = ddim_v(dec, proj, dmask, m, shape, s["decoder_steps"], s["decoder_guidance_scale"], gen)
    mid = super_res(m["sr1"], m["sr1_scheduler"], low, s["super_res_steps"], gen)
    return super_res(m["sr2"], m["sr2_scheduler"], mid, s["super_res_2_steps"], gen)


def tok_len(m):
    return m["text_encoder"].config.max_position_embeddings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "../../models/shapes"))
    ap.add_argument("--prompt", default="a large red circle in the top left")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png", help="write the last picture here (a check that the work is real)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load(a.model)
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            img = text_to_image(m, a.prompt, seed=i)
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}: one {tuple(img.shape)} "
          f"picture in median {statistics.median(times):.1f} ms")
    if a.png:
        from PIL import Image

        pixels = ((img[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(pixels).save(a.png)
    print("times_ms=" + ",".join(f"{x:.3f}" for x in times))
    print(f"peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


if __name__ == "__main__":
    main()
