# Cross-check of unclip's decoder trainer against the reference stack (optional; needs a Python
# with torch + diffusers, never a dependency of the project, its tests or CI). It trains
# diffusers' own UNet2DConditionModel + UnCLIPTextProjModel on the exact decoder training stream
# that `cargo run -p xtask -- dump-decoder-stream` writes, with the shapes decoder's objective and
# hyperparameters (v prediction, linear betas 1e-4..0.02, AdamW, lr warm-up 200 + cosine, EMA
# 0.995, image-embedding / caption drop 0.1 / 0.5; the MSE term only, no VLB term), and
# measures the EMA's x_0 and eps error at t = 100/300/500/800 on held-out examples
# (`dump-decoder-stream --held-out`) every --eval-every steps. `--eval-only RUN/decoder`
# measures a unclip run's decoder checkpoint (diffusers layout) with the same code, so the two
# trainers' curves are comparable step for step (docs/training.md).
#
#   cargo run -p xtask -- dump-decoder-stream --run R --out train.safetensors --steps 3000
#   cargo run -p xtask -- dump-decoder-stream --run R --out held.safetensors --steps 8 --held-out --seed 7
#   PY xtask/bench/torch_train_decoder.py --train train.safetensors --held held.safetensors --steps 3000
#   PY xtask/bench/torch_train_decoder.py --held held.safetensors --eval-only R/decoder
import argparse, json, math, time, copy, sys
import torch, torch.nn.functional as F
from safetensors.torch import load_file
from diffusers import UNet2DConditionModel
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

ap = argparse.ArgumentParser()
ap.add_argument("--train", required=False, default="train.safetensors")
ap.add_argument("--held", default="held.safetensors")
ap.add_argument("--unet-config", default="xtask/shapes/decoder.json")
ap.add_argument("--proj-config", default="xtask/shapes/text_proj.json")
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--lr", type=float, default=6e-4)
ap.add_argument("--eval-every", type=int, default=250)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--eval-only", default=None)
ap.add_argument("--channels", default=None)
ap.add_argument("--layers", type=int, default=None)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", default=None)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

T = 1000
betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
ab = torch.cumprod(1 - betas, 0).float()

held = load_file(a.held)
def cond_rows(d, idx, drop_img=None, drop_txt=None):
    return d["images"][idx], d["image_embeds"][idx], d["prompt_embeds"][idx], d["hidden_states"][idx], d["mask"][idx]

def forward(unet, proj, x_t, t, img, pe, hs, mask):
    hid, add = proj(image_embeddings=img, prompt_embeds=pe, text_encoder_hidden_states=hs,
                    do_classifier_free_guidance=False)
    m = F.pad(mask, (proj.config.clip_extra_context_tokens, 0), value=1.0).bool()
    return unet(x_t, t, encoder_hidden_states=hid, class_labels=add, attention_mask=m).sample

@torch.no_grad()
def evaluate(unet, proj):
    g = torch.Generator().manual_seed(123)
    x0 = held["images"]; n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=g)
    out = {}
    for t in (100, 300, 500, 800):
        a_ = ab[t]
        x_t = a_.sqrt() * x0 + (1 - a_).sqrt() * noise
        tt = torch.full((n,), t, dtype=torch.long)
        o = forward(unet, proj, x_t, tt, held["image_embeds"], held["prompt_embeds"],
                    held["hidden_states"], held["mask"])[:, :3]
        x0_hat = a_.sqrt() * x_t - (1 - a_).sqrt() * o   # v prediction
        eps_hat = (1 - a_).sqrt() * x_t + a_.sqrt() * o
        out[t] = (F.mse_loss(x0_hat, x0).item(), F.mse_loss(eps_hat, noise).item())
    return out

def fmt(ev):
    return " ".join(f"t{t}: x0 {v[0]:.4f} eps {v[1]:.4f}" for t, v in ev.items())

if a.eval_only:
    unet = UNet2DConditionModel.from_pretrained(a.eval_only + "/decoder").eval()
    proj = UnCLIPTextProjModel.from_pretrained(a.eval_only + "/text_proj").eval()
    print(a.eval_only, fmt(evaluate(unet, proj)), flush=True)
    sys.exit(0)

ucfg = json.load(open(a.unet_config))
if a.channels:
    ucfg["block_out_channels"] = [int(c) for c in a.channels.split(",")]
if a.layers:
    ucfg["layers_per_block"] = a.layers
unet = UNet2DConditionModel.from_config(ucfg)
proj = UnCLIPTextProjModel.from_config(json.load(open(a.proj_config)))
print("params", sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in proj.parameters()))
ema_u, ema_p = copy.deepcopy(unet).eval(), copy.deepcopy(proj).eval()
params = list(unet.parameters()) + list(proj.parameters())
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
tr = load_file(a.train)
N = tr["images"].shape[0]
un_pe, un_hs, un_m = tr["uncond_prompt_embeds"], tr["uncond_hidden_states"], tr["uncond_mask"]

def lr_at(step):
    warm = 200
    if step < warm:
        return a.lr * (step + 1) / warm
    p = (step - warm) / max(1, a.steps - warm)
    return a.lr * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))

t0 = time.time()
for step in range(a.steps):
    i0 = (step * a.batch) % N
    idx = torch.arange(i0, i0 + a.batch) % N
    x0, img, pe, hs, m = (tr[k][idx] for k in ("images", "image_embeds", "prompt_embeds", "hidden_states", "mask"))
    b = x0.shape[0]
    t = torch.randint(0, T, (b,))
    noise = torch.randn_like(x0)
    a_ = ab[t].view(b, 1, 1, 1)
    x_t = a_.sqrt() * x0 + (1 - a_).sqrt() * noise
    keep_img = (torch.rand(b) >= 0.1).float().view(b, 1)
    img = keep_img * img + (1 - keep_img) * proj.learned_classifier_free_guidance_embeddings.unsqueeze(0)
    keep_txt = torch.rand(b) >= 0.5
    pe = torch.where(keep_txt.view(b, 1), pe, un_pe.expand(b, -1))
    hs = torch.where(keep_txt.view(b, 1, 1), hs, un_hs.expand(b, -1, -1))
    m = torch.where(keep_txt.view(b, 1), m, un_m.expand(b, -1))
    o = forward(unet, proj, x_t, t, img, pe, hs, m)[:, :3]
    v = a_.sqrt() * noise - (1 - a_).sqrt() * x0
    loss = F.mse_loss(o, v)
    for gp in opt.param_groups:
        gp["lr"] = lr_at(step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        for e, p in zip(list(ema_u.parameters()) + list(ema_p.parameters()), params):
            e.mul_(0.995).add_(p, alpha=0.005)
    if (step + 1) % 50 == 0:
        print(f"step {step+1} loss {loss.item():.4f} {time.time()-t0:.0f}s", flush=True)
    if (step + 1) % a.eval_every == 0:
        print(f"EVAL step {step+1}", fmt(evaluate(ema_u, ema_p)), flush=True)
if a.out:
    ema_u.save_pretrained(a.out + "/decoder"); ema_p.save_pretrained(a.out + "/text_proj")
