"""``python -m bench run [--quick] ...``: regenerate the ruler's report from scratch."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from .cache import DEFAULT_CACHE_DIR
from .data import LOADERS, default_data_dir
from .engines import DEFAULT_ENGINES, SLOW_BASELINES
from .pipeline import BenchConfig, log, run_bench
from .report import headline_markdown, write_report


def _csv(s: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in s.split(",") if p.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the benchmark and write OUT/report.md, plots and OUT/results.json")
    r.add_argument("--quick", action="store_true", help="few curves per source plus a synthetic source; works without the data folder (CI)")
    r.add_argument("--data", type=Path, default=None, help="shared data folder (default: $CURVECAST_DATA or ../shared/data)")
    r.add_argument("--no-data", action="store_true", help="ignore the data folder (synthetic and --curves only)")
    r.add_argument("--curves", type=Path, action="append", default=[], help="your own curve table (CSV/parquet/JSONL, see bench/README.md); repeatable")
    r.add_argument("--out", type=Path, default=Path("docs/bench/latest"))
    r.add_argument("--engines", type=_csv, default=None, help=f"comma list (default {','.join(DEFAULT_ENGINES)}; --quick leaves out the slow {' and '.join(SLOW_BASELINES)})")
    r.add_argument("--sources", type=_csv, default=None, help=f"comma list of synthetic,{','.join(LOADERS)} (default: all; quick adds synthetic)")
    r.add_argument("--mode", choices=("inprocess", "e2e"), default="inprocess")
    r.add_argument("--server", default=None, help="HOST:PORT of a running Curvecast server (e2e mode)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--split", choices=("all", "tune", "report"), default="all", help="a stable half of each real source: tune engines on 'tune', report on 'report'")
    r.add_argument("--cap", type=int, default=None, help="max curves per real source (default 100; quick 3)")
    r.add_argument("--model", type=Path, default=None, help="learned engine ONNX file (default: newest under service/curvecast/models/)")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="learned engine's execution provider in-process (cuda falls back to CPU; the provider used is in the report)")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--no-speed", action="store_true")
    r.add_argument("--load-results", type=Path, default=None, help="JSON of server-under-load figures to include")
    r.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="where the slow baselines' answers are cached, per code and data version (default docs/bench/tmp/baseline_cache, git-ignored)")
    r.add_argument("--no-cache", action="store_true", help="recompute the slow baselines (their cache is neither read nor written)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    data = None
    if not args.no_data:
        data = args.data or default_data_dir()
        if not data.is_dir():
            log(f"data folder {data} not found: real sources are skipped (set CURVECAST_DATA or --data)")
            data = None
    engines = args.engines if args.engines is not None else tuple(e for e in DEFAULT_ENGINES if not (args.quick and e in SLOW_BASELINES))
    cfg = BenchConfig(
        quick=args.quick, data=data, curves=args.curves, out=args.out, engines=engines, sources=args.sources,
        mode=args.mode, server=args.server, seed=args.seed, split=args.split, cap=args.cap, model=args.model, device=args.device, plots=not args.no_plots,
        speed=not args.no_speed, load_results=args.load_results, cache_dir=None if args.no_cache else args.cache_dir, command="python -m bench " + " ".join(shlex.quote(a) for a in argv),
    )
    t0 = time.perf_counter()
    results, examples, engine_examples = run_bench(cfg)
    path = write_report(results, examples, engine_examples, cfg.out, make_plots=cfg.plots)
    print(headline_markdown(results))
    log(f"report: {path} (total {time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
