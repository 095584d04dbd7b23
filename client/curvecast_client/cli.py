"""The ``curvecast`` command line: forecast a curve, fit a scaling law, check health, show server info."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any, Sequence

from ._channel import Security
from ._client import Client
from ._convert import Schedule, check_request_id
from ._types import CurvecastError, Forecast, InvalidArgument, ScalingFit

EXIT_USAGE = 2
EXIT_RPC = 1


class InputError(ValueError):
    pass


def _read_text(path: str | None) -> str:
    if path in (None, "-"):
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text.strip()))
    if reader.fieldnames is None:
        raise InputError("empty CSV input")
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    return [row for row in reader if any((v or "").strip() for v in row.values())]


def _column(rows: list[dict[str, str]], names: Sequence[str], required: bool = True) -> list[float] | None:
    for name in names:
        if rows and name in rows[0]:
            try:
                return [float(r[name]) for r in rows]
            except (TypeError, ValueError) as exc:
                raise InputError(f"column '{name}' has a value that is not a number: {exc}") from None
    if required:
        raise InputError(f"missing column: one of {', '.join(names)}")
    return None


def parse_curve(text: str) -> tuple[list[float], list[float], list[float] | None]:
    """A curve from CSV (``step,value[,lr]``) or JSON (``{"x": [...], "y": [...]}``, or a list of pairs)."""
    stripped = text.strip()
    if not stripped:
        raise InputError("no curve given: pass a CSV/JSON file or pipe one on stdin")
    if stripped[0] in "[{":
        data = json.loads(stripped)
        if isinstance(data, list):
            return [float(p[0]) for p in data], [float(p[1]) for p in data], None
        x = data.get("x", data.get("step", data.get("steps")))
        y = data.get("y", data.get("value", data.get("values")))
        if x is None or y is None:
            raise InputError('JSON curve needs keys "x" and "y" (or "step" and "value")')
        return [float(v) for v in x], [float(v) for v in y], data.get("lr")
    rows = _rows(stripped)
    x = _column(rows, ("step", "x", "epoch", "samples", "tokens"))
    y = _column(rows, ("value", "y", "loss", "accuracy", "metric"))
    lr = _column(rows, ("lr",), required=False)
    assert x is not None and y is not None
    return x, y, lr


def _security(args: argparse.Namespace) -> Security:
    return Security(tls=args.tls, ca_file=args.ca, cert_file=args.cert, key_file=args.key,
                    token=args.token or os.environ.get("CURVECAST_TOKEN") or None)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.server, timeout=args.timeout, security=_security(args))


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def print_forecast(f: Forecast) -> None:
    levels = sorted(f.final.quantiles)
    head = ["x", "mean"] + [f"q{lv:g}" for lv in levels]
    rows = [[_fmt(p.x), _fmt(p.mean)] + [_fmt(p.quantiles[lv]) for lv in levels] for p in f.predictions]
    rows.append(["final " + _fmt(f.final.x), _fmt(f.final.mean)] + [_fmt(f.final.quantiles[lv]) for lv in levels])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    r = f.recommendation
    print(f"\nrecommendation: {r.action} ({r.reason})")
    if f.compute_to_target is not None:
        c = f.compute_to_target
        med = c.steps.get(0.5)
        print(f"target {c.target:g}: P(within budget) = {c.prob_within_budget:.3f}, median steps = {_fmt(med)}")
    print("engines: " + ", ".join(f"{e.name} {e.version} [{e.provider}] w={e.weight:.2f}" for e in f.engines))
    for w in f.warnings:
        print(f"warning: {w}")


def cmd_forecast(args: argparse.Namespace) -> int:
    check_request_id(args.request_id, "--request-id")
    x, y, lr = parse_curve(_read_text(args.file))
    schedule = None
    if args.schedule:
        srows = _rows(_read_text(args.schedule))
        schedule = Schedule.explicit(_column(srows, ("step", "x")) or [], _column(srows, ("lr",)) or [])
    quantiles = [float(q) for q in args.quantiles.split(",")] if args.quantiles else None
    query_x = [float(q) for q in args.query_x.split(",")] if args.query_x else None
    with _client(args) as client:
        f = client.forecast(x, y, goal=args.goal, x_kind=args.x_kind, total_steps=args.total_steps,
                            target=args.target, incumbent=args.incumbent, lr=lr, schedule=schedule,
                            quantiles=quantiles, query_x=query_x, engine=args.engine,
                            cost_per_step=args.cost_per_step, flops_per_step=args.flops_per_step,
                            request_id=args.request_id)
    if args.json:
        print(json.dumps(f.to_dict()))
    else:
        print_forecast(f)
    return 0


def parse_scaling(text: str) -> list[dict[str, Any]]:
    rows = _rows(text)
    n = _column(rows, ("n", "n_params", "params"))
    d = _column(rows, ("d", "tokens", "d_tokens"))
    loss = _column(rows, ("loss",))
    assert n is not None and d is not None and loss is not None
    run_col = next((c for c in ("run_id", "run", "model") if rows and c in rows[0]), None)
    flops = _column(rows, ("flops", "c"), required=False)
    return [{"n_params": n[i], "tokens": d[i], "loss": loss[i],
             "run_id": rows[i][run_col] if run_col else "", "flops": flops[i] if flops else None}
            for i in range(len(rows))]


def print_scaling(fit: ScalingFit) -> None:
    print(f"{fit.form} fit on {fit.n_points} points / {fit.n_runs} runs, log-loss RMSE {fit.residual_rmse:.4g}")
    for p in fit.parameters.values():
        print(f"  {p.name:>8} = {p.value:.6g}   95% [{p.lower95:.6g}, {p.upper95:.6g}]")
    for p in fit.predictions:
        print(f"  L(N={p['n_params']:.4g}, D={p['tokens']:.4g}) = {p['loss']:.5g} [{p['lower95']:.5g}, {p['upper95']:.5g}]")
    for c in fit.compute_optimal:
        print(f"  C={c['flops']:.4g}: N_opt={c['n_params']:.4g}, D_opt={c['tokens']:.4g}, loss={c['loss']:.5g}")
    for w in fit.warnings:
        print(f"warning: {w}")


def cmd_fit_scaling(args: argparse.Namespace) -> int:
    points = parse_scaling(_read_text(args.file))
    predict_at = []
    for item in args.predict or []:
        n, d = item.split(",")
        predict_at.append((float(n), float(d)))
    with _client(args) as client:
        fit = client.fit_scaling_law(points, form=args.form, predict_at=predict_at,
                                     compute_budgets=[float(b) for b in args.budget or []], bootstrap=args.bootstrap)
    print(json.dumps(fit.to_dict()) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        print_scaling(fit)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.health(args.service)
    print(json.dumps({"status": status}) if args.json else status)
    return 0 if status == "SERVING" else 1


def cmd_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.model_info()
    if args.json:
        print(json.dumps(info.to_dict()))
    else:
        print(f"server {info.server_version} ({info.api_version}), default engine: {info.default_engine}")
        for e in info.engines:
            state = "available" if e.available else "UNAVAILABLE"
            print(f"  {e.name:<9} {e.version:<24} {e.provider:<24} {state} {e.detail}")
        print(f"limits: {info.max_curve_points} curve points, {info.max_query_points} query points, "
              f"{info.max_batch_requests} runs per batch")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("CURVECAST_SERVER", "localhost:50051"),
                        help="HOST:PORT, or several comma-separated (env CURVECAST_SERVER)")
    common.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca)")
    common.add_argument("--ca", help="CA certificate (PEM) of the server")
    common.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    common.add_argument("--key", help="client private key (PEM) for mutual TLS")
    common.add_argument("--token", help="bearer token (env CURVECAST_TOKEN)")
    parser = argparse.ArgumentParser(prog="curvecast", description="Curvecast client.")
    sub = parser.add_subparsers(dest="command", required=True)

    f = sub.add_parser("forecast", parents=[common], help="forecast a curve from CSV/JSON (file or stdin)")
    f.add_argument("file", nargs="?", help="CSV with columns step,value[,lr], or JSON; default stdin")
    f.add_argument("--goal", choices=("minimize", "maximize"), default="minimize")
    f.add_argument("--x-kind", choices=("step", "epoch", "samples", "tokens"), default="step")
    f.add_argument("--total-steps", type=float, help="planned end of the run (budget), in x units")
    f.add_argument("--target", type=float, help="value to reach")
    f.add_argument("--incumbent", type=float, help="best final value among sibling runs")
    f.add_argument("--schedule", help="CSV step,lr: the planned learning rate, including future steps")
    f.add_argument("--quantiles", help="comma-separated levels, e.g. 0.1,0.5,0.9")
    f.add_argument("--query-x", help="comma-separated x to predict at (default: up to the budget)")
    f.add_argument("--engine", default="", choices=("", "ensemble", "learned", "analytic"))
    f.add_argument("--cost-per-step", type=float)
    f.add_argument("--flops-per-step", type=float)
    f.add_argument("--request-id", default="")
    f.set_defaults(func=cmd_forecast)

    s = sub.add_parser("fit-scaling", parents=[common], help="fit a scaling law to a CSV of N,D,loss[,run_id]")
    s.add_argument("file", nargs="?", help="CSV with columns N,D,loss and optional run_id, flops; default stdin")
    s.add_argument("--form", choices=("chinchilla", "gadre", "kaplan"), default="chinchilla")
    s.add_argument("--predict", action="append", metavar="N,D", help="predict the loss at N,D (repeatable)")
    s.add_argument("--budget", action="append", metavar="FLOPS", help="compute-optimal split of a budget")
    s.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for intervals")
    s.set_defaults(func=cmd_fit_scaling)

    h = sub.add_parser("health", parents=[common], help="check the server's health")
    h.add_argument("--service", default="", help="service name (default: the whole server)")
    h.set_defaults(func=cmd_health)

    i = sub.add_parser("info", parents=[common], help="engines, model version, provider, limits")
    i.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InvalidArgument as exc:  # refused here, before anything was sent
        violation = exc.violations[0]
        print(f"curvecast: invalid {violation.field}: {violation.description}", file=sys.stderr)
        return EXIT_USAGE
    except (InputError, ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"curvecast: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CurvecastError as exc:
        print(f"curvecast: {exc}", file=sys.stderr)
        for v in exc.violations:
            print(f"  {v.field}: {v.description}", file=sys.stderr)
        return EXIT_RPC


if __name__ == "__main__":
    sys.exit(main())
