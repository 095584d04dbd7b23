"""Soak test: a real server under moderate, steady, mixed load for N minutes; reports resident-memory
growth and every error.

    python -m bench.soak --minutes 20 --rate 10 --out docs/bench/soak

Load: open loop at ``--rate`` calls/s, 3 of 4 calls single-curve ``Forecast`` and 1 of 4 a small
``ForecastBatch`` (``--batch-size`` curves), over a pool of distinct synthetic curves, plus an invalid
request every 50 calls (it must come back INVALID_ARGUMENT, which is not counted as an error). The server
RSS is sampled every ``--sample-s`` seconds; growth is measured from the end of the warm-up
(``--warmup-min``, default 2 minutes: allocator arenas, imports and caches settle) to the mean of the last
three samples, so one transient peak does not decide the verdict. Passing: RSS growth < 10% and no error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.load import contention, make_runs, scrape, start_curvecast

from curvecast_client import AsyncClient, CurvecastError  # noqa: E402  (bench.load sets sys.path)


async def soak(args: argparse.Namespace) -> dict:
    server = start_curvecast(args.engine, args.server_arg)
    runs = make_runs(n=256, seed=1)
    errors: Counter = Counter()
    ok_calls = ok_curves = invalid_ok = 0
    latencies: list[float] = []
    samples: list[tuple[float, float]] = []
    try:
        async with AsyncClient(server.address, retries=args.retries, timeout=args.timeout) as client:
            start = time.perf_counter()
            end = start + args.minutes * 60
            loop = asyncio.get_running_loop()
            pending: set[asyncio.Task] = set()

            async def one(i: int) -> None:
                nonlocal ok_calls, ok_curves, invalid_ok
                t0 = time.perf_counter()
                try:
                    if i % 50 == 49:
                        try:
                            await client.forecast([1.0, 1.0], [1.0, 2.0])
                            errors["invalid request answered"] += 1
                        except CurvecastError as exc:
                            if exc.code == "INVALID_ARGUMENT" and exc.violations:
                                invalid_ok += 1
                            else:
                                errors[f"invalid request -> {exc.code}"] += 1
                        return
                    if i % 4 == 3:
                        chunk = [runs[(i * args.batch_size + k) % len(runs)] for k in range(args.batch_size)]
                        for r in await client.forecast_batch(chunk):
                            if isinstance(r, CurvecastError):
                                errors[r.code] += 1
                            else:
                                ok_curves += 1
                    else:
                        await client.forecast(**runs[i % len(runs)])
                        ok_curves += 1
                    ok_calls += 1
                    latencies.append(time.perf_counter() - t0)
                except CurvecastError as exc:
                    errors[exc.code] += 1
                except Exception as exc:  # noqa: BLE001
                    errors[type(exc).__name__] += 1

            next_sample = start
            i = 0
            while time.perf_counter() < end:
                now = time.perf_counter()
                if now >= next_sample:
                    samples.append((now - start, server.rss_mb()))
                    next_sample += args.sample_s
                    if len(samples) % 10 == 1:
                        print(f"t={now - start:6.0f}s rss={samples[-1][1]:.1f} MiB calls ok={ok_calls} "
                              f"errors={dict(errors)}", flush=True)
                task = loop.create_task(one(i))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
                await asyncio.sleep(max(0.0, start + i / args.rate - time.perf_counter()))
            await asyncio.gather(*pending)
            samples.append((time.perf_counter() - start, server.rss_mb()))
        metrics = scrape(server.metrics_port)
    finally:
        server.stop()
    after_warmup = [rss for t, rss in samples if t >= args.warmup_min * 60]
    base = after_warmup[0] if after_warmup else samples[0][1]
    final = float(np.mean([rss for _, rss in samples[-3:]]))
    growth = (final - base) / base
    lat = np.array(latencies) * 1e3
    result = {
        "meta": dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), command="python -m bench.soak " + " ".join(sys.argv[1:]),
                     minutes=args.minutes, rate=args.rate, batch_size=args.batch_size, engine=args.engine,
                     contention=contention()),
        "calls_ok": ok_calls, "curves_ok": ok_curves, "invalid_rejected_ok": invalid_ok, "errors": dict(errors),
        "rss_start_mb": samples[0][1], "rss_after_warmup_mb": base, "rss_final_mb": final,
        "rss_max_mb": max(r for _, r in samples), "rss_growth": growth,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "server_rejected_total": {k: v for k, v in metrics.items() if k.startswith("curvecast_requests_rejected_total")},
        "server_handled": {k: v for k, v in metrics.items() if k.startswith("grpc_server_handled_total")},
        "samples": samples,
        "passed": growth < 0.10 and not errors,
    }
    return result


def markdown(r: dict) -> str:
    m = r["meta"]
    return "\n".join([
        "# Curvecast soak test", "",
        f"- {m['date']}; command: `{m['command']}`",
        f"- {m['minutes']} min at {m['rate']} calls/s (1 in 4 a batch of {m['batch_size']}), engine `{m['engine']}`",
        f"- background CPU contention: {m['contention']}", "",
        "| calls ok | curves ok | invalid requests rejected correctly | errors | RSS start MiB | RSS after warm-up "
        "| RSS final (mean of last 3) | RSS max | growth | p50 ms | p99 ms | verdict |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {r['calls_ok']} | {r['curves_ok']} | {r['invalid_rejected_ok']} | {r['errors'] or 0} | "
        f"{r['rss_start_mb']:.1f} | {r['rss_after_warmup_mb']:.1f} | {r['rss_final_mb']:.1f} | {r['rss_max_mb']:.1f} | "
        f"{100 * r['rss_growth']:+.2f}% | {r['p50_ms'] or 0:.1f} | {r['p99_ms'] or 0:.1f} | "
        f"{'PASS' if r['passed'] else 'FAIL'} (growth < 10% and no error) |", ""])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=10.0, help="calls per second (open loop)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--engine", default="default", choices=("default", "ensemble", "analytic", "learned"))
    p.add_argument("--warmup-min", type=float, default=2.0)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--out", type=Path, default=Path("docs/bench/soak"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = asyncio.run(soak(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
