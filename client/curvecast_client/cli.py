"""The ``curvecast`` command line: forecast a curve, fit a scaling law, check health, show server info,
and write a sweep report.

Exit codes: 0 ok, 1 the server refused the call or could not be reached (or is not SERVING), 2 bad local
input (flags, files, curves)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
from typing import Any, Sequence

from ._channel import Security
from ._client import Client
from ._convert import Schedule, check_request_id
from ._types import CurvecastError, Forecast, InvalidArgument, ScalingFit, Sibling
from .readers import Curve, ReaderError, csv_column, csv_rows, parse_curve_text

EXIT_OK = 0
EXIT_RPC = 1
EXIT_USAGE = 2

HEALTH_SERVICES = ("", "curvecast.v1.Curvecast", "curvecast.engine.learned", "curvecast.engine.analytic")
POLICY_FLAGS = ("min_prob_beat_incumbent", "min_relative_improvement", "min_points", "min_fraction_observed",
                "compute_weight", "keep_best_checkpoint")


class InputError(ValueError):
    """Bad local input (exit code 2)."""


def _read_text(path: str | None) -> str:
    if path in (None, "-"):
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def parse_curve(text: str) -> tuple[list[float], list[float], list[float] | None]:
    """A curve from CSV (``step,value[,lr]``) or JSON (``{"x": [...], "y": [...]}``, or a list of pairs)."""
    c = parse_curve_text(text)
    return c.x, c.y, c.lr


def _security(args: argparse.Namespace) -> Security:
    return Security(tls=args.tls, ca_file=args.ca, cert_file=args.cert, key_file=args.key,
                    token=args.token or os.environ.get("CURVECAST_TOKEN") or None)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.server, timeout=args.timeout, security=_security(args))


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def _pick_rows(n: int, rows: int | None) -> list[int]:
    """Indices of ``rows`` of ``n`` predictions, evenly spaced and always ending at the last one."""
    if rows is None or rows >= n:
        return list(range(n))
    if rows <= 0:
        return []
    if rows == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (rows - 1)) for i in range(rows)})


def print_forecast(f: Forecast, rows: int | None = None) -> None:
    levels = sorted(f.final.quantiles)
    head = ["x", "mean"] + [f"q{lv:g}" for lv in levels]
    preds = [f.predictions[i] for i in _pick_rows(len(f.predictions), rows)]
    table = [[_fmt(p.x), _fmt(p.mean)] + [_fmt(p.quantiles[lv]) for lv in levels] for p in preds]
    table.append(["final " + _fmt(f.final.x), _fmt(f.final.mean)] + [_fmt(f.final.quantiles[lv]) for lv in levels])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if rows is not None and rows < len(f.predictions):
        print(f"({len(preds)} of {len(f.predictions)} predictions shown; --json prints all)")
    r = f.recommendation
    print(f"\nrecommendation: {r.action} ({r.reason})")
    if f.compute_to_target is not None:
        c = f.compute_to_target
        med = c.steps.get(0.5)
        print(f"target {c.target:g}: P(within budget) = {c.prob_within_budget:.3f}, median steps = {_fmt(med)}")
    print("engines: " + ", ".join(f"{e.name} {e.version} [{e.provider}] w={e.weight:.2f}" for e in f.engines))
    for w in f.warnings:
        print(f"warning: {w}")


def _floats_arg(text: str | None, flag: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(q) for q in text.split(",") if q.strip()]
    except ValueError:
        raise InputError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def _labels(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--label takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _policy(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in POLICY_FLAGS if getattr(args, name) is not None}


def _schedule(args: argparse.Namespace) -> Schedule | None:
    if args.schedule and args.schedule_shape:
        raise InputError("give either --schedule (an explicit CSV) or --schedule-shape, not both")
    if args.schedule:
        srows = csv_rows(_read_text(args.schedule))
        return Schedule.explicit(csv_column(srows, ("step", "x")) or [], csv_column(srows, ("lr",)) or [])
    if args.schedule_shape:
        return Schedule(shape=args.schedule_shape, peak_lr=args.peak_lr or 0.0, final_lr=args.final_lr or 0.0,
                        warmup_steps=args.warmup_steps or 0.0, decay_start=args.decay_start or 0.0,
                        step_gamma=args.step_gamma or 0.0, step_interval=args.step_interval or 0.0)
    given = [f for f in ("peak_lr", "final_lr", "warmup_steps", "decay_start", "step_gamma", "step_interval")
             if getattr(args, f) is not None]
    if given:
        raise InputError(f"--{given[0].replace('_', '-')} needs --schedule-shape")
    return None


def _siblings(args: argparse.Namespace) -> list[Sibling] | None:
    """Sweep context from ``--siblings CSV``: one row per observation, ``run_id,x,value`` (``step`` or
    ``epoch`` for x), optional per-run ``budget`` and ``finished`` (1/true), read from a run's first row."""
    if not args.siblings:
        if args.sweep_id:
            raise InputError("--sweep-id needs --siblings")
        return None
    rows = csv_rows(_read_text(args.siblings))
    if "run_id" not in rows[0]:
        raise InputError(f"--siblings: missing column run_id (the header has {', '.join(rows[0])})")
    xs = csv_column(rows, ("x", "step", "epoch", "tokens", "samples")) or []
    ys = csv_column(rows, ("value", "y", "loss", "accuracy")) or []
    runs: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        runs.setdefault(r["run_id"], []).append(i)
    out = []
    for run_id, idx in runs.items():
        first = rows[idx[0]]
        budget = first.get("budget") or ""
        try:
            b = float(budget) if budget.strip() else None
        except ValueError:
            raise InputError(f"--siblings: budget of run {run_id!r} is not a number: {budget!r}") from None
        finished = (first.get("finished") or "").strip().lower() in ("1", "true", "yes")
        out.append(Sibling(run_id, tuple(xs[i] for i in idx), tuple(ys[i] for i in idx), b, finished))
    return out


def load_curve(args: argparse.Namespace) -> Curve:
    """The curve named by the forecast flags: a file/stdin, ``--tensorboard DIR --tag TAG`` or ``--mlflow URI``."""
    sources = [s for s in ("tensorboard", "mlflow") if getattr(args, s)]
    if len(sources) > 1 or (sources and args.file):
        raise InputError("give one curve source: a file (or stdin), --tensorboard or --mlflow")
    if args.tensorboard:
        if not args.tag:
            raise InputError("--tensorboard needs --tag (the scalar to forecast, e.g. val/loss)")
        from .readers import read_tensorboard

        return read_tensorboard(args.tensorboard, args.tag, run=args.run)
    if args.mlflow:
        if not args.mlflow_key:
            raise InputError("--mlflow needs --metric-key (the metric to forecast)")
        if not (args.run_id or args.experiment):
            raise InputError("--mlflow needs --run-id, or --experiment (and optionally --run-name)")
        from .readers import read_mlflow

        return read_mlflow(args.mlflow, args.mlflow_key, run_id=args.run_id, experiment=args.experiment,
                           run_name=args.run_name)
    for flag in ("tag", "run", "mlflow_key", "run_id", "experiment", "run_name"):
        if getattr(args, flag):
            name = "metric-key" if flag == "mlflow_key" else flag.replace("_", "-")
            raise InputError(f"--{name} needs --tensorboard or --mlflow")
    return parse_curve_text(_read_text(args.file))


def forecast_kwargs(args: argparse.Namespace, curve: Curve) -> dict[str, Any]:
    """Client.forecast keyword arguments from the forecast flags (every ForecastRequest field has one)."""
    check_request_id(args.request_id, "--request-id")
    if args.rows is not None and args.rows < 0:
        raise InputError("--rows must be >= 0")
    return dict(goal=args.goal, x_kind=args.x_kind, metric=args.metric or curve.metric,
                total_steps=args.total_steps, target=args.target, incumbent=args.incumbent,
                lower_bound=args.lower_bound, upper_bound=args.upper_bound, lr=curve.lr,
                schedule=_schedule(args), quantiles=_floats_arg(args.quantiles, "--quantiles"),
                query_x=_floats_arg(args.query_x, "--query-x"), engine=args.engine or "",
                model_params=args.model_params, tokens_per_step=args.tokens_per_step,
                flops_per_step=args.flops_per_step, cost_per_step=args.cost_per_step,
                labels=_labels(args.label), policy=_policy(args), request_id=args.request_id,
                siblings=_siblings(args), sweep_id=args.sweep_id)


def cmd_forecast(args: argparse.Namespace) -> int:
    curve = load_curve(args)
    kwargs = forecast_kwargs(args, curve)
    if args.plot:
        from .plot import require_matplotlib

        require_matplotlib()
    with _client(args) as client:
        f = client.forecast(curve.x, curve.y, **kwargs)
    if args.plot:
        from .plot import save_fan_chart

        save_fan_chart(f, curve.x, curve.y, args.plot, budget=args.total_steps, target=args.target,
                       incumbent=args.incumbent, goal=args.goal, metric=kwargs["metric"], x_kind=args.x_kind,
                       title=curve.name if curve.name != "curve" else None)
    if args.json:
        print(json.dumps(f.to_dict()))
    else:
        print_forecast(f, rows=args.rows)
        if args.plot:
            print(f"fan chart written to {args.plot}")
    return EXIT_OK


def parse_scaling(text: str) -> list[dict[str, Any]]:
    rows = csv_rows(text)
    n = csv_column(rows, ("n", "n_params", "params"))
    d = csv_column(rows, ("d", "tokens", "d_tokens"))
    loss = csv_column(rows, ("loss",))
    assert n is not None and d is not None and loss is not None
    run_col = next((c for c in ("run_id", "run", "model") if rows and c in rows[0]), None)
    flops = csv_column(rows, ("flops", "c"), required=False)
    weight = csv_column(rows, ("weight", "w"), required=False)
    return [{"n_params": n[i], "tokens": d[i], "loss": loss[i],
             "run_id": rows[i][run_col] if run_col else "", "flops": flops[i] if flops else None,
             "weight": weight[i] if weight else None}
            for i in range(len(rows))]


def _interval(lo: float, hi: float, value: float, fmt: str) -> str:
    if lo == hi == value or (lo == hi and lo == 0):
        return "(no interval)"
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def _opt_line(c: dict) -> str:
    return (f"  C={c['flops']:.4g}: N_opt={c['n_params']:.4g} "
            f"{_interval(c.get('n_params_lower95', 0), c.get('n_params_upper95', 0), c['n_params'], '.3g')}, "
            f"D_opt={c['tokens']:.4g} "
            f"{_interval(c.get('tokens_lower95', 0), c.get('tokens_upper95', 0), c['tokens'], '.3g')}, "
            f"loss={c['loss']:.5g} {_interval(c.get('loss_lower95', 0), c.get('loss_upper95', 0), c['loss'], '.5g')}")


def print_scaling(fit: ScalingFit) -> None:
    print(f"{fit.form} fit on {fit.n_points} points / {fit.n_runs} runs, log-loss RMSE {fit.residual_rmse:.4g}, "
          f"Huber delta {fit.huber_delta:g}")
    dropped = ", ".join(f"{n} {reason}" for reason, n in fit.dropped.items()) or "none"
    print(f"  checkpoints below {fit.drop_early_fraction:g} of their run's final tokens dropped; dropped: {dropped}")
    cal = fit.calibration
    if cal:
        print(f"  predictive intervals calibrated on {cal.get('folds', 0)} leave-largest-out folds "
              f"({cal.get('heldout_points', 0)} held-out points): model error {cal.get('kappa', 0):.3g} per log unit "
              f"beyond the data, {cal.get('floor', 0):.3g} inside (log loss)")
    print("  parameters (95% bootstrap intervals over runs: sampling error only)")
    for p in fit.parameters.values():
        iv = _interval(p.lower95, p.upper95, p.value, ".6g")
        print(f"  {p.name:>8} = {p.value:.6g}   " + (iv if iv.startswith("(") else "95% " + iv))
    for p in fit.predictions:
        pred = _interval(p.get("predictive_lower95", 0), p.get("predictive_upper95", 0), p["loss"], ".5g")
        print(f"  L(N={p['n_params']:.4g}, D={p['tokens']:.4g}) = {p['loss']:.5g}  95% predictive {pred}  "
              f"(bootstrap {_interval(p['lower95'], p['upper95'], p['loss'], '.5g')})")
    for c in fit.compute_losses:
        pred = _interval(c["predictive_lower95"], c["predictive_upper95"], c["loss"], ".5g")
        print(f"  L(C={c['flops']:.4g}) = {c['loss']:.5g}  95% predictive {pred}")
    if fit.compute_optimal:
        print("  compute-optimal (Approach 3; 95% intervals)")
    for c in fit.compute_optimal:
        print(_opt_line(c))
    iso = fit.isoflop
    if iso is not None:
        used = sum(1 for b in iso["budgets"] if b["used"])
        print(f"  isoFLOP (Approach 2): {used} of {len(iso['budgets'])} profiles used; N_opt ~ C^{iso['exponent']:.4g} "
              f"{_interval(iso['exponent_lower95'], iso['exponent_upper95'], iso['exponent'], '.4g')}")
        for c in iso["compute_optimal"]:
            print(_opt_line(c))
    for w in fit.warnings:
        print(f"warning: {w}")


def cmd_fit_scaling(args: argparse.Namespace) -> int:
    points = parse_scaling(_read_text(args.file))
    predict_at = []
    for item in args.predict or []:
        try:
            n, d = item.split(",")
            predict_at.append((float(n), float(d)))
        except ValueError:
            raise InputError(f"--predict takes N,D (two numbers), got {item!r}") from None
    try:
        budgets = [float(b) for b in args.budget or []]
    except ValueError:
        raise InputError(f"--budget takes a number of FLOPs, got {args.budget!r}") from None
    with _client(args) as client:
        fit = client.fit_scaling_law(points, form=args.form, predict_at=predict_at, compute_budgets=budgets,
                                     bootstrap=args.bootstrap, drop_early_fraction=args.drop_early,
                                     huber_delta=args.huber_delta, isoflop=args.isoflop)
    if args.json:
        print(json.dumps(fit.to_dict()))
    else:
        print_scaling(fit)
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            status = client.health(args.service)
        except CurvecastError as exc:
            if exc.code != "NOT_FOUND":
                raise
            known = ", ".join(repr(s) if s else "'' (the whole server)" for s in HEALTH_SERVICES)
            raise CurvecastError("NOT_FOUND", f"the server reports no health for service {args.service!r}; "
                                 f"known services: {known}") from None
    print(json.dumps({"status": status}) if args.json else status)
    return EXIT_OK if status == "SERVING" else EXIT_RPC


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
        if info.sweep_limits.get("max_siblings"):
            print(f"sweep context: {info.sweep_limits['max_siblings']} sibling runs, "
                  f"{info.sweep_limits['max_points']} sibling points in all")
        sl = info.scaling_limits
        if sl.get("max_points"):
            print(f"scaling fits: {sl['max_points']} points, {sl['max_bootstrap']} bootstrap replicates "
                  f"(points x replicates <= {sl['max_point_replicates']})")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from . import readers
    from .report import build_report

    sources = [s for s in ("tensorboard", "csv_dir", "mlflow") if getattr(args, s)]
    if len(sources) != 1:
        raise InputError("give exactly one sweep source: --tensorboard DIR, --csv-dir DIR or --mlflow URI")
    if args.tensorboard:
        if not args.tag:
            raise InputError("--tensorboard needs --tag (the scalar to compare, e.g. val/loss)")
        runs = readers.tensorboard_runs(args.tensorboard, args.tag)
        source = f"TensorBoard {args.tensorboard} tag {args.tag}"
    elif args.csv_dir:
        runs = readers.csv_folder_runs(args.csv_dir)
        source = f"CSV folder {args.csv_dir}"
    else:
        if not (args.experiment and args.mlflow_key):
            raise InputError("--mlflow needs --experiment and --metric-key")
        runs = readers.mlflow_runs(args.mlflow, args.experiment, args.mlflow_key)
        source = f"MLflow {args.mlflow} experiment {args.experiment} metric {args.mlflow_key}"
    from .plot import require_matplotlib

    require_matplotlib()
    with _client(args) as client:
        report = build_report(runs, client, goal=args.goal, total_steps=args.total_steps, engine=args.engine or "",
                              cost_per_step=args.cost_per_step, x_kind=args.x_kind, source=source)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(report.html)
    if args.json:
        print(json.dumps(report.summary))
    else:
        print(report.text)
        print(f"report written to {args.out}")
    return EXIT_OK


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=110)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("CURVECAST_SERVER", "localhost:50051"),
                        help="HOST:PORT, or several comma-separated (env CURVECAST_SERVER; default %(default)s)")
    common.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds (default %(default)s)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca)")
    common.add_argument("--ca", metavar="PEM", help="CA certificate (PEM) to verify the server, with --tls")
    common.add_argument("--cert", metavar="PEM", help="client certificate (PEM) for mutual TLS")
    common.add_argument("--key", metavar="PEM", dest="key", help="client private key (PEM) for mutual TLS")
    common.add_argument("--token", help="bearer token (env CURVECAST_TOKEN)")
    return common


def _curve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--goal", choices=("minimize", "maximize"), default="minimize",
                   help="whether lower (minimize, e.g. a loss) or higher (maximize, e.g. accuracy) is better "
                        "(default %(default)s)")
    p.add_argument("--x-kind", choices=("step", "epoch", "samples", "tokens"), default="step",
                   help="unit of the curve's x axis (default %(default)s)")
    p.add_argument("--total-steps", type=float, metavar="X",
                   help="planned end of the run (the budget), in x units")
    p.add_argument("--engine", choices=("ensemble", "learned", "analytic"), default=None, metavar="ENGINE",
                   help="engine to answer: ensemble, learned or analytic (default: the server's choice)")
    p.add_argument("--cost-per-step", type=float, metavar="COST",
                   help="cost of one x unit (e.g. GPU-seconds), to report cost to target and cost saved")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="curvecast", description="Curvecast client. Exit codes: 0 ok, 1 the "
                                     "server refused or was unreachable, 2 bad local input.", formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    f = sub.add_parser("forecast", parents=[common], formatter_class=_Formatter,
                       help="forecast a curve from CSV/JSON (file or stdin), TensorBoard or MLflow",
                       description="Forecast one run's curve: quantiles ahead, compute-to-target, stop recommendation.")
    src = f.add_argument_group("curve source (one of: FILE / stdin, --tensorboard, --mlflow)")
    src.add_argument("file", nargs="?", help="CSV with columns step,value[,lr], or JSON {\"x\": [...], \"y\": [...]}; "
                     "default stdin")
    src.add_argument("--tensorboard", metavar="DIR", help="TensorBoard log folder (or event file) to read the curve from")
    src.add_argument("--tag", help="with --tensorboard: the scalar tag to forecast, e.g. val/loss")
    src.add_argument("--run", help="with --tensorboard: which run folder (relative to DIR) when DIR holds several")
    src.add_argument("--mlflow", metavar="URI", help="MLflow tracking URI (e.g. sqlite:///mlflow.db, file:./mlruns, "
                     "http://host:5000) to read the curve from")
    src.add_argument("--run-id", help="with --mlflow: the run's id")
    src.add_argument("--experiment", help="with --mlflow: the experiment's name or id (its latest run unless --run-name)")
    src.add_argument("--run-name", help="with --mlflow --experiment: the run's name")
    src.add_argument("--metric-key", dest="mlflow_key", metavar="KEY", help="with --mlflow: the metric key, e.g. val_loss")

    c = f.add_argument_group("curve and run")
    _curve_flags(c)
    c.add_argument("--metric", help="metric name sent with the curve (default: the tag / key / CSV column)")
    c.add_argument("--lower-bound", type=float, metavar="V", help="known lower bound of the metric, e.g. 0 for a loss")
    c.add_argument("--upper-bound", type=float, metavar="V", help="known upper bound of the metric, e.g. 1 for accuracy")
    c.add_argument("--model-params", type=float, metavar="N", help="model size N (parameters)")
    c.add_argument("--tokens-per-step", type=float, metavar="T", help="tokens processed per x unit")
    c.add_argument("--flops-per-step", type=float, metavar="F", help="FLOPs per x unit (default 6 * N * tokens per step)")
    c.add_argument("--label", action="append", metavar="KEY=VALUE", help="free-form run label (repeatable)")

    s = f.add_argument_group("learning-rate schedule (--schedule CSV, or a shape)")
    s.add_argument("--schedule", metavar="CSV", help="CSV step,lr: the planned learning rate, including future steps")
    s.add_argument("--schedule-shape", choices=("constant", "cosine", "linear", "wsd", "step"), metavar="SHAPE",
                   help="parametric schedule: constant, cosine, linear, wsd or step")
    s.add_argument("--peak-lr", type=float, help="learning rate after warm-up (> 0 for a shape)")
    s.add_argument("--final-lr", type=float, help="learning rate at --total-steps (default 0)")
    s.add_argument("--warmup-steps", type=float, help="linear warm-up length, x units (default 0)")
    s.add_argument("--decay-start", type=float, help="wsd: where the cooldown starts, x units")
    s.add_argument("--step-gamma", type=float, help="step: LR factor per interval, in (0, 1]")
    s.add_argument("--step-interval", type=float, help="step: x units between decays")

    q = f.add_argument_group("what to ask")
    q.add_argument("--target", type=float, help="value to reach (compute-to-target)")
    q.add_argument("--incumbent", type=float, help="best final value among sibling runs (to beat)")
    q.add_argument("--quantiles", metavar="LEVELS", help="comma-separated levels in (0, 1), e.g. 0.1,0.5,0.9 "
                   "(default 0.05,0.25,0.5,0.75,0.95)")
    q.add_argument("--query-x", metavar="XS", help="comma-separated x to predict at (default: 50 points up to the budget)")
    q.add_argument("--siblings", metavar="CSV", help="sweep context: other runs of the same sweep, CSV "
                   "run_id,x,value[,budget,finished] (their curves so far; the forecast borrows what they did next)")
    q.add_argument("--sweep-id", default="", metavar="ID", help="the sweep's id, sent with --siblings (informational)")
    q.add_argument("--request-id", default="", metavar="ID",
                   help="id echoed back and logged by the server (printable ASCII, <= 128 characters)")

    p = f.add_argument_group("stop policy (server defaults unless given)")
    p.add_argument("--min-prob-beat-incumbent", type=float, metavar="P",
                   help="stop as unpromising when P(final beats incumbent) is below this (server default 0.02)")
    p.add_argument("--min-relative-improvement", type=float, metavar="R",
                   help="stop as converged when expected improvement / |best| is below this (default 0 = off)")
    p.add_argument("--min-points", type=int, metavar="N", help="never stop with fewer observed points (default 2)")
    p.add_argument("--min-fraction-observed", type=float, metavar="F",
                   help="never stop before this fraction of the budget is observed (default 0)")
    p.add_argument("--compute-weight", type=float, metavar="W",
                   help="cost awareness >= 0: the unpromising threshold becomes max(P, W * fraction left)")
    p.add_argument("--keep-best-checkpoint", action=argparse.BooleanOptionalAction, default=None,
                   help="the run's result is its best checkpoint (default) or, with --no-..., its value at the budget")

    o = f.add_argument_group("output")
    o.add_argument("--rows", type=int, metavar="N", help="show only N evenly spaced predictions (always the last) "
                   "in the table; --json prints all")
    o.add_argument("--plot", metavar="PNG", help="also write a fan chart (observed points, median, 50%%/90%% bands, "
                   "budget, target, incumbent) to this image file; needs matplotlib")
    f.set_defaults(func=cmd_forecast)

    sc = sub.add_parser("fit-scaling", parents=[common], formatter_class=_Formatter,
                        help="fit a scaling law to a CSV of N,D,loss[,run_id]")
    sc.add_argument("file", nargs="?", help="CSV with columns N,D,loss and optional run_id, flops, weight; "
                    "default stdin")
    sc.add_argument("--form", choices=("chinchilla", "gadre", "kaplan"), default="chinchilla",
                    help="law to fit: chinchilla L(N,D), gadre (over-training) or kaplan L(C) (default %(default)s)")
    sc.add_argument("--predict", action="append", metavar="N,D", help="predict the loss at N,D (repeatable)")
    sc.add_argument("--budget", action="append", metavar="FLOPS", help="compute-optimal split of a budget (repeatable)")
    sc.add_argument("--bootstrap", type=int, default=None, metavar="B",
                    help="bootstrap resamples for the 95%% intervals (server default 200; 0 = no intervals)")
    sc.add_argument("--drop-early", type=float, default=None, metavar="F",
                    help="drop each run's checkpoints below this fraction of its final tokens, in [0, 1) "
                    "(server default 0.5; 0 keeps all)")
    sc.add_argument("--huber-delta", type=float, default=None, metavar="DELTA",
                    help="Huber threshold on log-loss residuals (> 0; 1e-3 is Approach 3, 1 is least squares; "
                    "server default: chosen by leave-largest-out)")
    sc.add_argument("--isoflop", action="store_true",
                    help="also fit Approach 2 (isoFLOP parabolas, N_opt(C) power law with 95%% intervals)")
    sc.set_defaults(func=cmd_fit_scaling)

    h = sub.add_parser("health", parents=[common], formatter_class=_Formatter, help="check the server's health")
    h.add_argument("--service", default="", help="service to check: " + ", ".join(s for s in HEALTH_SERVICES if s)
                   + " (default: the whole server)")
    h.set_defaults(func=cmd_health)

    i = sub.add_parser("info", parents=[common], formatter_class=_Formatter,
                       help="engines, model version, provider, limits")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("report", parents=[common], formatter_class=_Formatter,
                       help="forecast every run of a sweep and write one self-contained HTML report",
                       description="Forecast every run of a sweep, rank the runs by P(beat the best of the others) and "
                                   "write one HTML page with a fan chart per run and the compute saved if followed.")
    r.add_argument("--tensorboard", metavar="DIR", help="TensorBoard log folder: each subfolder with event files is a run")
    r.add_argument("--tag", help="with --tensorboard: the scalar tag to compare, e.g. val/loss")
    r.add_argument("--csv-dir", metavar="DIR", help="folder of CSV/JSON curves (step,value), one run per file")
    r.add_argument("--mlflow", metavar="URI", help="MLflow tracking URI; every run of --experiment")
    r.add_argument("--experiment", help="with --mlflow: the experiment's name or id")
    r.add_argument("--metric-key", dest="mlflow_key", metavar="KEY", help="with --mlflow: the metric key, e.g. val_loss")
    _curve_flags(r)
    r.add_argument("--out", default="curvecast-report.html", metavar="HTML",
                   help="where to write the report (default %(default)s)")
    r.set_defaults(func=cmd_report)
    return parser


def _speaks_tls(address: str, timeout: float = 1.0) -> bool:
    """Whether the first address answers a TLS handshake (certificate not checked: this is only a hint)."""
    host, _, port = address.split(",")[0].strip().removeprefix("dns:///").rpartition(":")
    host = host.strip("[]") or "localhost"
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ValueError, ssl.SSLError):
        return False


def _hint(exc: CurvecastError, args: argparse.Namespace) -> str | None:
    if exc.code != "UNAVAILABLE" or not hasattr(args, "tls"):
        return None
    msg = exc.message.lower()
    if not args.tls and _speaks_tls(args.server):
        return f"the server at {args.server} speaks TLS: add --tls (and --ca PEM if its certificate is self-signed)"
    if args.tls and ("ssl" in msg or "handshake" in msg or "certificate" in msg or "wrong_version" in msg):
        return "the TLS handshake failed: the server may be plaintext (drop --tls) or --ca may not match its certificate"
    if "connect" in msg or "refused" in msg:
        return f"nothing answered at {args.server}: is the server running there (--server HOST:PORT)?"
    return None


def _report_error(exc: CurvecastError, args: argparse.Namespace) -> None:
    if exc.violations:
        print(f"curvecast: the server refused the request ({exc.code}):", file=sys.stderr)
        for v in exc.violations:
            print(f"  {v.field}: {v.description}", file=sys.stderr)
    else:
        print(f"curvecast: {exc.code}: {exc.message or 'no details from the server'}", file=sys.stderr)
    hint = _hint(exc, args)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _silence_stdout() -> None:
    """The reader of stdout went away (``| head``): drop the rest of the output quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = int(args.func(args))
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except InvalidArgument as exc:  # refused here, before anything was sent
        violation = exc.violations[0]
        print(f"curvecast: invalid {violation.field}: {violation.description}", file=sys.stderr)
        return EXIT_USAGE
    except CurvecastError as exc:
        _report_error(exc, args)
        return EXIT_RPC
    except (InputError, ReaderError, ValueError, OSError, ImportError) as exc:
        if isinstance(exc, FileNotFoundError) and exc.filename:
            print(f"curvecast: no such file: {exc.filename}", file=sys.stderr)
        else:
            print(f"curvecast: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
