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
from training import prior2 as P2
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
    p.add_argument("--prior", choices=["1.1", "2.0"], default="1.1", help="training prior (docs/prior.md)")
    p.add_argument("--prior-params", default=None, help="prior 2.0 hyperparameters JSON (training.fit_prior)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=0,
                   help="processes drawing prior batches (0: in the training loop); batch i then comes from "
                        "seed (--seed, i), so a resumed run continues the same stream")
    p.add_argument("--skip-loss-above", type=float, default=1e3, help="skip batches with a larger NLL")
    p.add_argument("--init-onnx", default=None,
                   help="fresh runs only: start from the weights and borders of an exported model")
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


def draw_batch(rng: np.random.Generator, args: argparse.Namespace, p2: "P2.Prior2Params | None"):
    """(ctx_x, ctx_y, ctx_mask, qry_x, qry_y) from prior 1.1 (shared cutoff, no padding) or prior 2.0."""
    if p2 is not None:
        return P2.make_batch(rng, args.batch, p2)
    cut = int(rng.integers(1, P.SEQ_LEN))
    cx, cy, qx, qy = P.make_batch(rng, args.batch, cut, args.lcpfn_fraction)
    return cx, cy, np.ones_like(cy), qx, qy


def _worker_batch(job: tuple) -> tuple[np.ndarray, ...]:
    """One batch in a worker process: batch ``i`` of stream ``seed`` (picklable, top level)."""
    seed, i, batch, lcpfn_fraction, p2 = job
    rng = np.random.default_rng([seed, i])
    ns = argparse.Namespace(batch=batch, lcpfn_fraction=lcpfn_fraction)
    return draw_batch(rng, ns, p2)


class BatchStream:
    """Prior batches from ``workers`` spawned processes, ``2 * workers`` in flight (bounded memory)."""

    def __init__(self, workers: int, seed: int, start: int, args: argparse.Namespace, p2):
        import multiprocessing as mp
        from collections import deque

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.pool = mp.get_context("spawn").Pool(workers)
        self.job = lambda i: (seed, i, args.batch, args.lcpfn_fraction, p2)
        self.next_i = start
        self.pending = deque(self.pool.apply_async(_worker_batch, (self.job(start + k),)) for k in range(2 * workers))
        self.next_i += 2 * workers

    def get(self) -> tuple[np.ndarray, ...]:
        out = self.pending.popleft().get()
        self.pending.append(self.pool.apply_async(_worker_batch, (self.job(self.next_i),)))
        self.next_i += 1
        return out

    def close(self) -> None:
        self.pool.terminate()


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

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
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
        init = None
        if args.init_onnx:  # warm start: same architecture and borders as the exported model
            from training.onnx_init import config_from_card, load_onnx_weights

            cfg = config_from_card(Path(args.init_onnx))
            init = load_onnx_weights(Path(args.init_onnx), cfg)
            borders = init.borders.clone()
        elif args.prior == "2.0":
            borders = torch.tensor(P2.bucket_borders(rng, cfg.n_buckets, P2.load_params(args.prior_params)),
                                   dtype=torch.float32)
        else:
            borders = torch.tensor(P.bucket_borders(rng, cfg.n_buckets), dtype=torch.float32)
        step, elapsed, ck = 0, 0.0, None
        train_args = vars(args)
    # the prior is part of the run: a resume keeps the prior (and its parameters) the run started with
    prior_name = train_args.get("prior", "1.1")
    p2 = None
    if prior_name == "2.0":  # a resume uses the values stored in the checkpoint, not a file that may have changed
        p2 = P2.params_from_dict(ck["prior_params"]) if ck is not None else P2.load_params(args.prior_params)
    model = CurvePFN(cfg, borders).to(device)
    if ck is None and args.init_onnx:
        model.load_state_dict(init.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
    n_params = sum(p.numel() for p in model.parameters())
    prior_version = P2.PRIOR_VERSION if p2 is not None else P.PRIOR_VERSION
    log({"event": "start", "device": str(device), "params": n_params, "config": cfg.to_dict(), "args": vars(args),
         "prior": prior_version})

    budget_s = args.max_minutes * 60.0
    t0 = time.time() - elapsed
    last_ckpt = last_eval = time.time()
    ema = None
    curves_seen = step * args.batch

    def state() -> dict:
        return {"model": model.state_dict(), "opt": opt.state_dict(), "config": cfg.to_dict(), "step": step,
                "elapsed_s": time.time() - t0, "rng": rng.bit_generator.state, "args": train_args,
                "prior_version": prior_version, "prior_params": p2.to_dict() if p2 else P.PRIOR_PARAMS,
                "curves_seen": curves_seen}

    stream = BatchStream(args.workers, args.seed, step, args, p2) if args.workers > 0 else None
    model.train()
    while True:
        now = time.time()
        frac = (now - t0) / budget_s
        if frac >= 1.0:
            break
        lr = lr_at(frac, args.lr, args.warmup_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        arrays = stream.get() if stream is not None else draw_batch(rng, args, p2)
        cx, cy, cm, qx, qy = (torch.from_numpy(a).to(device, non_blocking=True) for a in arrays)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            lp, b = model(cx, cy, cm, qx)
        loss = -bar_log_density(lp, b, qy).mean()
        if not torch.isfinite(loss.detach()) or float(loss.detach()) > args.skip_loss_above:
            # a pathological batch (seen once in a warm-started prior-2.0 run: NLL ~4e6) would only
            # contribute a clipped, meaningless gradient: skip it and record what it held
            log({"event": "skip", "step": step, "loss": float(loss), "n_ctx": int(cx.shape[1]),
                 "n_qry": int(qx.shape[1]), "lp_min": float(lp.min()), "qy_min": float(qy.min()),
                 "qy_max": float(qy.max())})
            continue
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
    if stream is not None:
        stream.close()
    save(ckpt_path, state())
    log({"event": "done", "step": step, "elapsed_s": round(time.time() - t0, 1), "curves_seen": curves_seen,
         **quick_eval(model, device, n=500)})


if __name__ == "__main__":
    main()
