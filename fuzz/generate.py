"""Structured ForecastRequests from a stream of choices, shared by atheris and hypothesis.

``build_request(src)`` asks ``src`` (an adapter over atheris' FuzzedDataProvider or a hypothesis
``data.draw``) for every decision, so both fuzzers explore the same space: realistic curves, extreme
values (1e308, denormals, +-inf, NaN), constant curves, single points, long curves, negative or huge
budgets, targets already reached or impossible, unknown enum values, schedules and policies.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from .harness import pb  # noqa: F401  (also puts service/ and client/ on sys.path)

EXTREMES = (0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-15, 1e15, 1e6, -1e6, 1e300, -1e300, 1e308, -1e308,
            1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -5e-324, 2.2250738585072014e-308,
            1e-300, math.inf, -math.inf, math.nan)
ENGINES = ("", "", "ensemble", "analytic", "learned", "bogus")


class Source(Protocol):
    def int(self, lo: int, hi: int) -> int: ...
    def float(self) -> float: ...  # any double, including inf/nan
    def unit(self) -> float: ...  # in [0, 1]


def _pick(src: Source, seq):
    return seq[src.int(0, len(seq) - 1)]


def _value(src: Source) -> float:
    k = src.int(0, 3)
    if k == 0:
        return _pick(src, EXTREMES)
    if k == 1:
        return src.float()
    return (src.unit() - 0.25) * 10.0 ** src.int(-3, 4)


def _maybe(src: Source, p_none: int = 2):
    return src.int(0, p_none) == 0


def _curve(src: Source, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):  # the generator may overflow on purpose; the server must cope
        return _curve_raw(src, max_points)


def _curve_raw(src: Source, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    mode = src.int(0, 8)
    n = 1 if mode == 2 else (src.int(0, 8) if src.int(0, 3) == 0 else src.int(2, max_points))
    x0 = _pick(src, (0.0, 1.0, 10.0, 1e-300, 5e-324, 1e12, -5.0))
    step = _pick(src, (1.0, 0.1, 100.0, 5e-324, 1e-12, 1e290, 3.0))
    if src.int(0, 1):
        x = x0 + step * np.arange(1, n + 1, dtype=np.float64)
    else:
        x = np.cumsum(np.array([abs(_value(src)) if src.int(0, 5) == 0 else step * (0.5 + src.unit())
                                for _ in range(n)], dtype=np.float64)) + x0
    t = np.arange(1, n + 1, dtype=np.float64)
    with np.errstate(all="ignore"):
        if mode in (0, 2):  # a noisy power law (the typical loss)
            a, b, c = 1.0 + src.unit() * 3, src.unit() * 5, 0.05 + src.unit()
            y = a + b * t**-c + (src.unit() * 0.1) * np.sin(t * (1 + src.int(0, 9)))
        elif mode == 1:  # constant
            y = np.full(n, _value(src))
        elif mode == 3:  # accuracy rising to a bound
            y = 1.0 - 0.9 * np.exp(-t * (0.01 + src.unit()))
        elif mode == 4:  # values all from the extreme palette
            y = np.array([_pick(src, EXTREMES) for _ in range(n)], dtype=np.float64)
        elif mode == 5:  # arbitrary doubles
            y = np.array([src.float() for _ in range(n)], dtype=np.float64)
        elif mode == 6:  # broken x (duplicates, NaN, decreasing)
            y = 2.0 + 1.0 / t
            if n:
                x[src.int(0, n - 1)] = _pick(src, (x[0], math.nan, -math.inf, math.inf, -1.0))
        elif mode == 7:  # the run diverged: non-finite tail
            y = 2.0 + 1.0 / t
            if n > 1:
                y[src.int(1, n - 1):] = _pick(src, (math.nan, math.inf, -math.inf))
        else:  # a tiny or huge scale
            y = (2.0 + 1.0 / t) * _pick(src, (1e-300, 5e-324, 1e300, 1e-12, 1e12, -1.0))
    return x, y


def _schedule_fields(src: Source, s: pb.LrSchedule, last: float, budget: float | None) -> None:
    """Every schedule field, sane or not: warm-up and decay start inside, at and past the budget, step
    decays with gamma 0, 1, 1e10; explicit schedules that cover the run, stop short of it, are all zero,
    or are far too long; steps/values sent with a parametric shape."""
    end = budget if budget is not None and math.isfinite(budget) and budget > 0 else max(last, 1.0) * 2
    s.warmup_steps = _pick(src, (0.0, last * 0.1, end, end * 2, _value(src)))
    s.decay_start = _pick(src, (0.0, last * 0.8, end, end * 1.5, _value(src)))
    s.step_gamma = _pick(src, (0.1, 0.5, 1.0, 0.0, 1e10, _value(src)))
    s.step_interval = _pick(src, (0.0, last * 0.3, end, _value(src)))
    if s.shape != pb.SCHEDULE_SHAPE_EXPLICIT and src.int(0, 5):
        return
    k = _pick(src, (0, 1, 2, 5, 12, 40, src.int(0, 300)))
    reach = _pick(src, (end, end * 1.2, last * 0.5, last, max(last, 1.0)))  # covers the run, or stops short
    with np.errstate(all="ignore"):
        s.steps.extend((np.arange(1, k + 1, dtype=np.float64) * reach / max(k, 1)).tolist())
    kind = src.int(0, 4)
    n_values = k if src.int(0, 5) else src.int(0, 3)
    if kind == 0:
        s.values.extend([0.0] * n_values)  # all zero
    elif kind == 1:
        s.values.extend([abs(_value(src)) for _ in range(n_values)])
    else:  # a plausible decay
        s.values.extend((1e-3 * (1.0 - 0.9 * np.arange(n_values) / max(n_values, 1))).tolist())


def build_request(src: Source, max_points: int = 200) -> pb.ForecastRequest:
    x, y = _curve(src, max_points)
    if src.int(0, 9) == 0 and len(y) != len(x):  # mismatched lengths
        y = y[: max(0, len(y) - 1)]
    elif src.int(0, 12) == 0:
        y = y[:-1]
    curve = pb.Curve(x=x.tolist(), values=y.tolist(), goal=src.int(0, 3), x_kind=src.int(0, 5))
    if _maybe(src, 3):
        curve.lower_bound = _pick(src, (0.0, _value(src)))
    if _maybe(src, 3):
        curve.upper_bound = _pick(src, (1.0, _value(src)))
    if _maybe(src, 6):
        curve.lr.extend([abs(_value(src)) for _ in range(len(x) if src.int(0, 4) else src.int(0, 3))])
    last = float(x[-1]) if len(x) and math.isfinite(float(x[-1])) else 1.0
    run = pb.RunInfo()
    if not _maybe(src, 4):
        run.total_steps = _pick(src, (last, last * 2, last * 10, last * 1e6, last + 1e-9, _value(src), -last,
                                      last * 0.5))
    for name in ("model_params", "tokens_per_step", "flops_per_step", "cost_per_step"):
        if _maybe(src, 4):
            setattr(run, name, _pick(src, (1e9, 1e6, 1.0, _value(src))))
    if _maybe(src, 4):
        s = run.schedule
        s.shape = src.int(0, 7)
        s.peak_lr, s.final_lr = abs(_value(src)) if src.int(0, 1) else 1e-3, abs(_value(src)) if src.int(0, 1) else 0.0
        _schedule_fields(src, s, last, run.total_steps if run.HasField("total_steps") else None)
    req = pb.ForecastRequest(curve=curve, run=run, engine=_pick(src, ENGINES))
    if _maybe(src, 3):
        k = src.int(0, 20)
        end = run.total_steps if run.HasField("total_steps") else last * 2
        with np.errstate(all="ignore"):
            q = np.linspace(last, end, k + 1)[1:] if src.int(0, 2) else np.array([_value(src) for _ in range(k)])
        req.query_x.extend(q.tolist())
    if _maybe(src, 3):
        req.quantiles.extend([_pick(src, (0.05, 0.5, 0.95, 0.001, 0.999, src.unit(), _value(src)))
                              for _ in range(src.int(0, 8))])
    finite_y = y[np.isfinite(y)] if len(y) else y
    ref = float(finite_y[-1]) if len(finite_y) else 1.0
    for name in ("target", "incumbent"):
        if _maybe(src, 2):
            # already reached, barely reachable, impossible, or anything at all
            setattr(req, name, _pick(src, (ref * 1.5, ref * 0.99, ref * 0.5, ref - 1e6, ref, -ref, _value(src))))
    if _maybe(src, 4):
        p = req.policy
        p.min_prob_beat_incumbent = _pick(src, (0.05, 0.5, _value(src)))
        p.min_relative_improvement = _pick(src, (0.001, _value(src)))
        p.min_points = src.int(-3, 50)
        p.min_fraction_observed = _pick(src, (0.0, 0.9, _value(src)))
        if _maybe(src, 2):
            p.compute_weight = _pick(src, (0.0, 1.0, 1e3, _value(src)))
        if _maybe(src, 2):
            p.keep_best_checkpoint = bool(src.int(0, 1))
    if _maybe(src, 4):
        req.request_id = _request_id(src)
    if _maybe(src, 8):
        for i in range(_pick(src, (1, 3, 70))):
            req.run.labels[_pick(src, ("team", "k" * 200, f"l{i}"))] = _pick(src, ("a", "v" * 2000, "\n"))
    if _maybe(src, 8):
        req.curve.metric = _pick(src, ("val/loss", "m" * 300, "acc\n"))
    if _maybe(src, 5):  # sweep context: siblings with their own curves, budgets, goals and hyperparameters
        req.sweep.sweep_id = _pick(src, ("", "study", "s" * 200, "a\nb"))
        for i in range(_pick(src, (0, 1, 4, 12))):
            sib = req.sweep.siblings.add(run_id=_pick(src, (f"t{i}", "r" * 200)), finished=bool(src.int(0, 1)))
            sx, sy = _curve(src, max_points)
            sib.curve.x.extend(sx.tolist())
            sib.curve.values.extend(sy.tolist())
            sib.curve.goal = _pick(src, (curve.goal, src.int(0, 3)))
            sib.curve.x_kind = _pick(src, (curve.x_kind, src.int(0, 5)))
            if curve.HasField("lower_bound") and src.int(0, 1):
                sib.curve.lower_bound = curve.lower_bound
            if _maybe(src, 2):
                sib.budget = _pick(src, (last, last * 2, -1.0, _value(src)))
            if _maybe(src, 4):
                sib.hyperparameters[_pick(src, ("lr", "k" * 200))] = _value(src)
    return req


def _request_id(src: Source) -> str:
    return _pick(src, ("r" * src.int(0, 200), "run-1", "a\nb", "tab\there", "\u202e", "ok-\u00e9"))


def build_scaling_request(src: Source, max_points: int = 120) -> pb.FitScalingLawRequest:
    """A FitScalingLawRequest: a plausible Chinchilla-like grid (with checkpoints and noise), or points from
    the extreme palette; unknown forms, bootstrap counts from 0 to far over the limit, predictions and
    compute budgets anywhere."""
    req = pb.FitScalingLawRequest(form=src.int(0, 5))
    n = _pick(src, (0, 1, 2, 3, 8, src.int(4, max_points)))
    sizes = 10.0 ** (6 + 4 * np.sort(np.array([src.unit() for _ in range(max(n, 1))])))
    with np.errstate(all="ignore"):
        for i in range(n):
            extreme = src.int(0, 9) == 0
            nn = _pick(src, EXTREMES) if extreme else float(sizes[i])
            dd = _pick(src, EXTREMES) if src.int(0, 9) == 0 else nn * (5 + 40 * src.unit())
            loss = (_value(src) if src.int(0, 9) == 0 else
                    1.7 + 400 / max(abs(nn), 1e-300) ** 0.34 + 410 / max(abs(dd), 1e-300) ** 0.28
                    + 0.01 * (src.unit() - 0.5))
            point = req.points.add(n_params=nn, tokens=dd, loss=loss,
                                   run_id=_pick(src, ("", f"run{i // 3}", f"r{i % 4}", "x" * 300)))
            if src.int(0, 7) == 0:
                point.flops = _pick(src, (6 * nn * dd, _value(src)))
    if _maybe(src, 2):
        req.bootstrap = _pick(src, (0, 1, 2, 20, 200, 2000, 2001, -1, 10 ** 6))
    for _ in range(_pick(src, (0, 1, 3, src.int(0, 40)))):
        req.predict_at.add(n_params=_pick(src, (7e10, 1e9, _value(src))), tokens=_pick(src, (1.4e12, 2e10, _value(src))))
    req.compute_budgets.extend([_pick(src, (1e23, 1e18, _value(src))) for _ in range(_pick(src, (0, 1, 2, src.int(0, 40))))])
    if _maybe(src, 4):
        req.request_id = _request_id(src)
    # the fit options and per-point weights (drawn last: the draws above are unchanged)
    if _maybe(src, 3):
        for point in req.points:
            if src.int(0, 3) == 0:
                point.weight = _pick(src, (0.0, 1.0, 2.5, -1.0, _value(src)))
    if _maybe(src, 3):
        req.drop_early_fraction = _pick(src, (0.0, 0.25, 0.5, 0.99, 1.0, -0.1, _value(src)))
    if _maybe(src, 3):
        req.huber_delta = _pick(src, (1e-3, 0.1, 1.0, 0.0, -1.0, _value(src)))
    if _maybe(src, 4):
        req.isoflop = True
    return req


class FdpSource:
    """Adapter over atheris.FuzzedDataProvider."""

    def __init__(self, fdp) -> None:
        self.fdp = fdp

    def int(self, lo: int, hi: int) -> int:
        return self.fdp.ConsumeIntInRange(lo, hi)

    def float(self) -> float:
        return self.fdp.ConsumeFloat()

    def unit(self) -> float:
        return self.fdp.ConsumeProbability()


class DrawSource:
    """Adapter over hypothesis' ``data.draw``."""

    def __init__(self, draw) -> None:
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def int(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))

    def float(self) -> float:
        return self.draw(self.st.floats(allow_nan=True, allow_infinity=True))

    def unit(self) -> float:
        return self.draw(self.st.floats(0.0, 1.0))
