"""PyTorch (CPU) reference timings for `cargo run -p xtask -- bench-{prior,decoder,super-res}`.

A benchmark tool, not a project dependency: run it with a Python that has torch + diffusers
(e.g. a scratch virtualenv), directly or through xtask's `--torch-python PATH`:

    /tmp/torchvenv/bin/python xtask/bench/torch_forward.py decoder --warmup 1 --iters 5

It builds diffusers' own classes (`PriorTransformer`, `UNet2DConditionModel`, `UNet2DModel`) from
the same `xtask/bench/configs/*.json` the Rust benchmarks read (random init), feeds inputs of the
same shapes (same masks, timestep 999), runs float32 under `torch.inference_mode()` with
`torch.set_num_threads(threads)`, and prints `times_ms=<t1>,<t2>,...` (one per timed iteration,
after the warm-up) plus a human-readable median line.
"""

import argparse
import json
import os
import statistics
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "configs")

# Keep in step with xtask/src/main.rs.
PRIOR_TEXT_TOKENS = 12
DECODER_CONTEXT = 81
DECODER_CROSS_DIM = 384
DECODER_REAL_TOKENS = 16
DIFFUSION_T = 999.0


def load(name):
    with open(os.path.join(CONFIGS, name)) as f:
        return json.load(f)


def mask(batch, length, real):
    m = torch.zeros(batch, length, dtype=torch.bool)
    m[:, :real] = True
    return m


def build(model, batch):
    """Returns (module, zero-arg forward closure)."""
    t = torch.full((batch,), DIFFUSION_T)
    if model == "prior":
        from diffusers import PriorTransformer

        cfg = load("prior.json")
        m = PriorTransformer.from_config(cfg)
        e = cfg["embedding_dim"]
        n = cfg["num_embeddings"]
        x = torch.randn(batch, e)
        proj = torch.randn(batch, cfg.get("embedding_proj_dim") or e)
        ehs = torch.randn(batch, n, e)
        am = mask(batch, n, PRIOR_TEXT_TOKENS)

        def fwd():
            return m(x, t, proj_embedding=proj, encoder_hidden_states=ehs,
                     attention_mask=am).predicted_image_embedding
    elif model == "decoder":
        from diffusers import UNet2DConditionModel

        cfg = load("decoder.json")
        m = UNet2DConditionModel.from_config(cfg)
        temb = cfg.get("time_embedding_dim") or 4 * cfg["block_out_channels"][0]
        x = torch.randn(batch, cfg["in_channels"], 64, 64)
        ctx = torch.randn(batch, DECODER_CONTEXT, DECODER_CROSS_DIM)
        cls = torch.randn(batch, temb)
        am = mask(batch, DECODER_CONTEXT, DECODER_REAL_TOKENS)

        def fwd():
            return m(x, t, encoder_hidden_states=ctx, class_labels=cls,
                     attention_mask=am).sample
    elif model == "super-res":
        from diffusers import UNet2DModel

        cfg = load("super_res.json")
        m = UNet2DModel.from_config(cfg)
        x = torch.randn(batch, cfg["in_channels"], 256, 256)

        def fwd():
            return m(x, t).sample
    else:
        raise SystemExit(f"unknown model {model!r}: prior, decoder or super-res")
    m.eval().float()
    return m, fwd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["prior", "decoder", "super-res"])
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true",
                    help="after the timing, run one more forward under torch.profiler and print "
                         "the ops' self CPU time grouped by op")
    a = ap.parse_args()
    batch = a.batch or (1 if a.model == "super-res" else 2)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m, fwd = build(a.model, batch)
    nparams = sum(p.numel() for p in m.parameters())
    times = []
    with torch.inference_mode():
        for _ in range(a.warmup):
            fwd()
        for _ in range(a.iters):
            t0 = time.perf_counter()
            fwd()
            times.append((time.perf_counter() - t0) * 1e3)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {type(m).__name__} "
          f"{nparams / 1e6:.1f}M params, batch {batch}: median {statistics.median(times):.1f} ms")
    print("times_ms=" + ",".join(f"{x:.3f}" for x in times))
    if a.profile:
        profile(fwd)


def profile(fwd):
    """One forward under torch.profiler: self CPU time per aten op, largest first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    with torch.inference_mode(), tprofile(activities=[ProfilerActivity.CPU]) as prof:
        fwd()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    print(f"profile: one forward, {total / 1e3:.1f} ms of self CPU time in aten ops")
    for e in events[:20]:
        print(f"profile: {e.key:<40} {e.self_cpu_time_total / 1e3:9.2f} ms "
              f"{100 * e.self_cpu_time_total / total:5.1f}%  calls {e.count}")


if __name__ == "__main__":
    main()
