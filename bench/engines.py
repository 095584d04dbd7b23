"""Which predictors the bench runs, and how they are reached (in-process or through the gRPC server).

Curvecast engines are imported lazily: an engine that cannot be imported or loaded is skipped with the
reason, so the bench still runs while engines are being written. Baselines always run in-process.
In e2e mode each Curvecast engine is wrapped in ``E2EEngine``, which calls the real server through the
SDK and rebuilds marginals from the quantiles the server returns (nothing else crosses the wire).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import special

from curvecast.dataplane import DataPlaneSettings
from curvecast.domain.curve import ForecastQuery
from curvecast.domain.distribution import LEVELS, Marginals
from curvecast.engines.base import Engine, EngineForecast, EngineInfo
from curvecast.engines.ensemble import StackingModel, combine

from .baselines import BestOfFamiliesEngine, LastValueEngine, Pow3LSEngine, RobustPow3Engine
from .cache import DEFAULT_CACHE_DIR, CachedEngine
from .empirical import EmpiricalSpreadEngine

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "service" / "curvecast" / "models"
BASELINES = ("last_value", "empirical_spread", "pow3_ls", "pow3_robust", "best_of_families")
SLOW_BASELINES = ("pow3_robust", "best_of_families")  # answers cached per code and data version
CALIBRATION_BAR = "empirical_spread"
CURVECAST_ENGINES = ("analytic", "learned", "ensemble")
FIXED_MIXTURE = "mixture_fixed"  # the 0.75/0.25 CDF mixture that was the ensemble before issue 17 (opt-in)
DEFAULT_ENGINES = ("analytic", "learned", "ensemble") + BASELINES
ENSEMBLE_WEIGHTS: tuple[tuple[str, float], ...] = DataPlaneSettings().ensemble_weights  # the server's own default
E2E_QUANTILES: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 0.995)


def default_model_path() -> Path | None:
    """The server's default model file if present, else the newest ONNX model under service/curvecast/models/."""
    if not MODELS_DIR.is_dir():
        return None
    if (MODELS_DIR / "curvecast-pfn.onnx").exists():
        return MODELS_DIR / "curvecast-pfn.onnx"
    files = sorted(MODELS_DIR.rglob("*.onnx"), key=lambda p: (p.stat().st_mtime, str(p)))
    return files[-1] if files else None


DEVICE_PROVIDERS = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider")}


def _load_inprocess(name: str, model_path: Path | None, device: str = "cpu") -> Engine:
    if name == "last_value":
        return LastValueEngine()
    if name == "empirical_spread":
        return EmpiricalSpreadEngine()
    if name == "pow3_ls":
        return Pow3LSEngine()
    if name == "pow3_robust":
        return RobustPow3Engine()
    if name == "best_of_families":
        return BestOfFamiliesEngine()
    if name == "analytic":
        from curvecast.engines.analytic.engine import AnalyticEngine

        return AnalyticEngine()
    if name == "learned":
        from curvecast.engines.learned.engine import LearnedEngine

        path = model_path or default_model_path()
        if path is None:
            raise FileNotFoundError(f"no *.onnx model under {MODELS_DIR} (pass --model PATH)")
        return LearnedEngine.load(path, providers=DEVICE_PROVIDERS[device])
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(DEFAULT_ENGINES)}")


class EnsembleEngine:
    """In-process ensemble of Curvecast engines, combined exactly as the server combines them
    (``curvecast.engines.ensemble.combine``): the stacking model's cells when one is given, else CDFs
    averaged with the fixed weights."""

    name = "ensemble"

    def __init__(self, parts: Sequence[tuple[Engine, float]], stacking: StackingModel | None = None):
        self.parts = list(parts)
        self.stacking = stacking

    def info(self) -> EngineInfo:
        if self.stacking is not None:
            return EngineInfo(self.name, f"stacked@{self.stacking.sha256[:12]}", "stacking",
                              detail=f"{len(self.stacking.cells)} cells over {', '.join(self.stacking.engines)}")
        return EngineInfo(self.name, "1", "mixture", detail=", ".join(f"{e.name} x{w:g}" for e, w in self.parts))

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        answers = [list(e.forecast(queries)) for e, _ in self.parts]
        out: list[EngineForecast | Exception] = []
        for i in range(len(queries)):
            ok = [(a[i], w) for a, (_, w) in zip(answers, self.parts) if not isinstance(a[i], Exception)]
            if not ok:
                out.append(answers[0][i])
                continue
            try:
                q = queries[i]
                at = int(np.argmin(np.abs(np.asarray(q.x_query, np.float64) - q.horizon)))  # the budget's row
                m = combine(q, ok, at, self.stacking).marginals  # type: ignore[arg-type]
                out.append(EngineForecast(m, self.name))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out


def quantiles_to_marginals(x: np.ndarray, levels: Sequence[float], values: np.ndarray, mean: np.ndarray | None) -> Marginals:
    """Dense marginals from a few quantiles: linear in normal scores, linear extrapolation to the tails."""
    z_in = special.ndtri(np.asarray(levels, dtype=np.float64))
    z_out = special.ndtri(LEVELS)
    vals = np.empty((len(x), len(LEVELS)))
    for i, row in enumerate(np.maximum.accumulate(np.asarray(values, dtype=np.float64), axis=1)):
        inner = np.interp(z_out, z_in, row)
        lo_slope = (row[1] - row[0]) / (z_in[1] - z_in[0])
        hi_slope = (row[-1] - row[-2]) / (z_in[-1] - z_in[-2])
        inner = np.where(z_out < z_in[0], row[0] + lo_slope * (z_out - z_in[0]), inner)
        inner = np.where(z_out > z_in[-1], row[-1] + hi_slope * (z_out - z_in[-1]), inner)
        vals[i] = inner
    return Marginals.from_quantile_values(x, vals, mean)


class E2EEngine:
    """An Engine that asks the real gRPC server, through the SDK, for one Curvecast engine's forecast."""

    def __init__(self, server: str, engine: str):
        from curvecast_client import Client  # the SDK; light dependencies only

        self.name = engine
        self.server = server
        self.client = Client(server)
        sig = inspect.signature(self.client.forecast)
        self._accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        self._params = set(sig.parameters)
        self.answered_by: dict[str, int] = {}  # which server engines actually answered (e.g. ensemble parts)

    def info(self) -> EngineInfo:
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(self.answered_by.items()))
        return EngineInfo(self.name, "e2e", f"grpc://{self.server}", detail="through curvecast_client.Client" + (f"; answered by {seen}" if seen else ""))

    def _kwargs(self, q: ForecastQuery) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "engine": self.name,
            "x_kind": q.curve.x_kind.value,
            "metric": q.curve.metric,
            "lower_bound": q.curve.lower_bound,
            "upper_bound": q.curve.upper_bound,
            "model_params": q.run.model_params,
            "tokens_per_step": q.run.tokens_per_step,
            "lr": None if q.curve.lr is None else [float(v) for v in q.curve.lr],
            "schedule": _schedule_dict(q),
        }
        return {k: v for k, v in extra.items() if v is not None and (self._accepts_any or k in self._params)}

    def _request(self, q: ForecastQuery) -> dict[str, Any]:
        return dict(
            x=[float(v) for v in q.curve.x],
            y=[float(v) for v in q.curve.y],
            goal=q.curve.goal.value,
            total_steps=q.run.total_steps,
            query_x=[float(v) for v in q.x_query],
            quantiles=list(E2E_QUANTILES),
            **self._kwargs(q),
        )

    def _one(self, q: ForecastQuery) -> EngineForecast:
        return self._convert(q, self.client.forecast(**self._request(q)))

    def _convert(self, q: ForecastQuery, resp: Any) -> EngineForecast:
        if isinstance(resp, Exception):
            raise resp
        used = "+".join(f"{u.name}[{u.provider}]" for u in getattr(resp, "engines", []) or []) or "?"
        self.answered_by[used] = self.answered_by.get(used, 0) + 1
        preds = list(resp.predictions)
        if len(preds) != len(q.x_query):
            raise RuntimeError(f"server returned {len(preds)} predictions for {len(q.x_query)} x")
        vals = np.array([[float(_q_lookup(p.quantiles, lvl)) for lvl in E2E_QUANTILES] for p in preds])
        mean = np.array([float(p.mean) for p in preds])
        x = np.array([float(p.x) for p in preds])
        return EngineForecast(quantiles_to_marginals(x, E2E_QUANTILES, vals, mean), self.name)

    def forecast(self, queries: Sequence[ForecastQuery]) -> list[EngineForecast | Exception]:
        """Single queries go through Forecast, several through ForecastBatch (per-item errors)."""
        out: list[EngineForecast | Exception] = []
        if len(queries) > 1 and hasattr(self.client, "forecast_batch"):
            answers = self.client.forecast_batch([self._request(q) for q in queries])
            for q, a in zip(queries, answers):
                try:
                    out.append(self._convert(q, a))
                except Exception as e:  # noqa: BLE001
                    out.append(e)
            return out
        for q in queries:
            try:
                out.append(self._one(q))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out


def _schedule_dict(q: ForecastQuery) -> dict[str, Any] | None:
    """The planned LR schedule in the SDK's ``Schedule`` fields (the run's total_steps travels separately)."""
    s = q.run.schedule
    if s is None:
        return None
    d: dict[str, Any] = {"shape": s.shape.value, "peak_lr": s.peak_lr, "final_lr": s.final_lr, "warmup_steps": s.warmup_steps, "decay_start": s.decay_start, "step_gamma": s.step_gamma, "step_interval": s.step_interval}
    if s.steps is not None and s.values is not None:
        d["steps"] = [float(v) for v in s.steps]
        d["values"] = [float(v) for v in s.values]
    return d


def _q_lookup(quantiles: Any, level: float) -> float:
    """Find a level in the SDK's quantile mapping, tolerating float keys that are not bit-identical."""
    if level in quantiles:
        return quantiles[level]
    for k, v in quantiles.items():
        if abs(float(k) - level) < 1e-9:
            return v
    raise KeyError(f"quantile {level} missing from the server's answer")


def _stacking_for(get) -> StackingModel | None:
    """The server's stacking model, if it was fitted for the learned model the bench loaded."""
    model = DataPlaneSettings().stacking
    if model is None or not model.learned_sha256:
        return model
    return model if model.learned_sha256[:12] in get("learned").info().version else None


def resolve_engines(names: Sequence[str], mode: str = "inprocess", server: str | None = None, model_path: Path | None = None, device: str = "cpu", cache_dir: Path | None = DEFAULT_CACHE_DIR) -> tuple[list[tuple[str, Engine]], dict[str, str], dict[str, float]]:
    """Load the requested engines; returns ([(label, engine)], {skipped label: reason}, {label: load seconds}).

    Slow baselines are wrapped in ``CachedEngine`` unless ``cache_dir`` is None.
    """
    engines: list[tuple[str, Engine]] = []
    skipped: dict[str, str] = {}
    load_s: dict[str, float] = {}
    loaded: dict[str, Engine] = {}

    def get(name: str) -> Engine:
        if name not in loaded:
            loaded[name] = _load_inprocess(name, model_path, device)
        return loaded[name]

    for name in names:
        t0 = time.perf_counter()
        try:
            if mode == "e2e" and name in CURVECAST_ENGINES:
                if not server:
                    raise ValueError("e2e mode needs --server HOST:PORT")
                eng: Engine = E2EEngine(server, name)
            elif name == "ensemble":
                eng = EnsembleEngine([(get(n), w) for n, w in ENSEMBLE_WEIGHTS], _stacking_for(get))
            elif name == FIXED_MIXTURE:
                eng = EnsembleEngine([(get(n), w) for n, w in ENSEMBLE_WEIGHTS])
                eng.name = FIXED_MIXTURE
            else:
                eng = get(name)
                if name in SLOW_BASELINES and cache_dir is not None:
                    eng = CachedEngine(eng, cache_dir)
        except Exception as e:  # noqa: BLE001 - a missing engine is reported, not fatal
            skipped[name] = f"{type(e).__name__}: {e}"
            continue
        load_s[name] = time.perf_counter() - t0
        engines.append((name, eng))
    return engines, skipped, load_s
