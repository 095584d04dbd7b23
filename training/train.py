"""Train the curve PFN on the prior, time-budgeted, checkpointed and resumable.

    PYTHONPATH=service:. nice python -m training.train --out training/runs/NAME --max-minutes 70

Resumes from ``OUT/ckpt.pt`` when present (model, optimiser, RNG, step and elapsed time). The
learning rate follows warm-up + cosine over the *time* budget, so a run stops cleanly at
``--max-minutes`` with a fully annealed model. Uses CUDA when available.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from training import prior as P
from training.model import CurvePFN, ModelConfig, bar_log_density


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--max-minutes", type=float, required=True, help="total training time budget (incl. resumed)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--d-model", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=384)
    p.add_argument("--buckets", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-frac", type=float, default=0.03)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lcpfn-fraction", type=float, default=P.PRIOR_PARAMS["lcpfn_fraction"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ckpt-every-s", type=float, default=180.0)
    p.add_argument("--eval-every-s", type=float, default=600.0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the transformer trunk (CPU/GPU)")
    return p.parse_args(argv)


def lr_at(frac: float, base: float, warm: float) -> float:
    if frac < warm:
        return base * max(frac / warm, 0.01)
    prog = min((frac - warm) / max(1.0 - warm, 1e-9), 1.0)
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * prog)))


@torch.no_grad()
def quick_eval(model: CurvePFN, device: torch.device, n: int = 200, seed: int = 12345) -> dict[str, float]:
    """Mean post-cutoff log-likelihood on n LC-PFN prior curves at 10/20/40/80% (fixed seed)."""
    model.eval()
    rng = np.random.default_rng(seed)
    y = torch.tensor(P.sample_lcpfn(rng, n), dtype=torch.float32, device=device)
    f = torch.tensor(P.lcpfn_features(n), dtype=torch.float32, device=device)
    out = {}
    for cut in (10, 20, 40, 80):
        lp, borders = model(f[:, :cut], y[:, :cut], torch.ones(n, cut, device=device), f[:, cut:])
        ll = bar_log_density(lp, borders, y[:, cut:]).mean(dim=1)
        out[f"ll@{cut}"] = float(ll.mean())
    model.train()
    return out


def save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_f = open(out / "train.log", "a", buffering=1)

    def log(msg: dict) -> None:
        line = json.dumps(msg)
        log_f.write(line + "\n")
        print(line, flush=True)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = ModelConfig(**ck["config"])
        borders = ck["model"]["borders"]
        rng = np.random.default_rng()
        rng.bit_generator.state = ck["rng"]
        step, elapsed = ck["step"], ck["elapsed_s"]
        train_args = ck["args"]
        log({"event": "resume", "step": step, "elapsed_s": elapsed})
    else:
        cfg = ModelConfig(
            d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, d_ff=args.d_ff,
            n_buckets=args.buckets, d_dec=2 * args.d_model,
        )
        rng = np.random.default_rng(args.seed)
        borders = torch.tensor(P.bucket_borders(rng, cfg.n_buckets), dtype=torch.float32)
        step, elapsed, ck = 0, 0.0, None
        train_args = vars(args)
    model = CurvePFN(cfg, borders).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
    n_params = sum(p.numel() for p in model.parameters())
    log({"event": "start", "device": str(device), "params": n_params, "config": cfg.to_dict(), "args": vars(args),
         "prior": P.PRIOR_VERSION})

    budget_s = args.max_minutes * 60.0
    t0 = time.time() - elapsed
    last_ckpt = last_eval = time.time()
    ema = None
    curves_seen = step * args.batch

    def state() -> dict:
        return {"model": model.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(), "step": step,
                "elapsed_s": time.time() - t0, "rng": rng.bit_generator.state, "args": train_args,
                "prior_version": P.PRIOR_VERSION, "prior_params": P.PRIOR_PARAMS, "curves_seen": curves_seen}

    model.train()
    while True:
        now = time.time()
        frac = (now - t0) / budget_s
        if frac >= 1.0:
            break
        lr = lr_at(frac, args.lr, args.warmup_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        cut = int(rng.integers(1, P.SEQ_LEN))
        cx, cy, qx, qy = (torch.from_numpy(a).to(device) for a in P.make_batch(rng, args.batch, cut, args.lcpfn_fraction))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            lp, b = model(cx, cy, torch.ones_like(cy), qx)
        loss = -bar_log_density(lp, b, qy).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        curves_seen += args.batch
        lv = float(loss.detach())
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % args.log_every == 0:
            el = time.time() - t0
            log({"step": step, "elapsed_s": round(el, 1), "loss": round(lv, 4), "loss_ema": round(ema, 4),
                 "lr": round(lr, 6), "grad_norm": round(float(gn), 3), "steps_per_s": round(step / max(el, 1e-9), 3)})
        if time.time() - last_eval > args.eval_every_s:
            log({"event": "eval", "step": step, **quick_eval(model, device)})
            last_eval = time.time()
        if time.time() - last_ckpt > args.ckpt_every_s:
            save(ckpt_path, state())
            last_ckpt = time.time()
    save(ckpt_path, state())
    log({"event": "done", "step": step, "elapsed_s": round(time.time() - t0, 1), "curves_seen": curves_seen,
         **quick_eval(model, device, n=500)})


if __name__ == "__main__":
    main()
