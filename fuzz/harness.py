"""One request through the server's own code path, with every property the issue asks for checked.

``Pipeline.check_bytes(data)`` decodes a ``ForecastRequest``, validates it with the server's converters
and, when valid, answers it through a real ``DataPlane`` (micro-batcher, engines, decisions) and the
response builder, then checks the answer. Anything that breaks a property raises ``PropertyViolation``
(or the unexpected exception itself); a clean rejection or an answer returns an outcome string.
Used by the atheris fuzzer (``fuzz/fuzz_requests.py``), the hypothesis tests and the corpus regressions.

Properties (a violation is fatal: the fuzzer stops and writes the input):
- decoding either works or raises ``DecodeError``;
- validation either builds a consistent query or raises ``InvalidRequest`` whose every violation names a
  field of ``ForecastRequest`` (mapped by the servicer to INVALID_ARGUMENT);
- an answered query has finite marginals, finite decisions and a wire response with no NaN/inf and no
  overflow sentinel (the converters' last-resort clamp must never be what makes an answer finite);
- quantiles are non-decreasing in level, one prediction per queried x;
- no numeric RuntimeWarning escapes from the request path (validation, data plane, converters);
- no call takes longer than ``timeout_s`` (hang guard; libFuzzer's -timeout is the outer one).

Engine and decision-code failures on valid queries (an engine error the server answers INTERNAL, a
non-finite engine output the data plane had to discard, a numeric warning leaking from engine code) are
*findings*: counted, saved once each to $FUZZ_FINDINGS, and fuzzing goes on; FUZZ_STRICT=1 makes them fatal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import math
import os
import sys
import time
import warnings
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "service", ROOT / "client"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from google.protobuf.message import DecodeError  # noqa: E402

from curvecast_api.v1 import curvecast_pb2 as pb  # noqa: E402
from curvecast.dataplane import DataPlane, DataPlaneSettings, ForecastResult  # noqa: E402
from curvecast.domain.curve import ForecastQuery, StopPolicy  # noqa: E402
from curvecast.domain.errors import EngineUnavailable, InvalidRequest  # noqa: E402
from curvecast.domain.validation import Limits  # noqa: E402
from curvecast.engines.registry import EngineRegistry  # noqa: E402
from curvecast.server import converters  # noqa: E402
from curvecast.server.servicer import classify  # noqa: E402

REQUEST_FIELDS = frozenset(f.name for f in pb.ForecastRequest.DESCRIPTOR.fields) | {"requests"}
SCALING_FIELDS = frozenset(f.name for f in pb.FitScalingLawRequest.DESCRIPTOR.fields)
OVERFLOW = 1.7976931348623157e308
MODEL = ROOT / "service" / "curvecast" / "models" / "curvecast-pfn.onnx"


class PropertyViolation(AssertionError):
    """A request broke one of the properties above."""


class EngineFinding(Exception):
    """An engine or the decision code failed or answered badly for a valid query (the request path itself
    held: the data plane turned it into a clean error or a fallback). Recorded, not fatal, unless strict."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _outside_server_path(filename: str) -> bool:
    """Engines, decisions and the domain maths (distribution, schedules) belong to their owners; the rest
    (decoding, validation, data plane, converters) is the request path this harness guards strictly."""
    f = filename.replace("\\", "/")
    return any(part in f for part in (
        "/engines/", "/decisions/", "/domain/distribution.py", "/domain/curve.py", "/scaling/"))


class InlineExecutor(Executor):
    """Runs executor work in the calling thread: deterministic, and no thread pool per fuzz input."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001
            fut.set_exception(exc)
        return fut


def build_registry(learned: bool | None = None) -> EngineRegistry:
    """The analytic engine, plus the learned one when its model is present (``learned=None``: if it loads)."""
    from curvecast.engines.analytic.engine import AnalyticEngine

    reg = EngineRegistry()
    reg.put(AnalyticEngine(workers=0))
    if learned is not False and MODEL.is_file():
        try:
            from curvecast.engines.learned.engine import LearnedEngine

            reg.put(LearnedEngine.load(str(MODEL), providers=("CPUExecutionProvider",), threads=1))
        except Exception:  # noqa: BLE001
            if learned:
                raise
    return reg


@dataclasses.dataclass
class Stats:
    inputs: int = 0
    undecodable: int = 0
    rejected: int = 0
    answered: int = 0
    engine_unavailable: int = 0
    engine_calls: int = 0
    findings: int = 0
    scaling_inputs: int = 0
    scaling_undecodable: int = 0
    scaling_rejected: int = 0
    scaling_refused: int = 0  # RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED: admission said no (retryable)
    scaling_fitted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Pipeline:
    def __init__(self, registry: EngineRegistry | None = None, limits: Limits = Limits(),
                 timeout_s: float = 60.0, *, strict: bool | None = None,
                 findings_dir: Path | None = None) -> None:
        self.strict = os.environ.get("FUZZ_STRICT") == "1" if strict is None else strict
        env_dir = os.environ.get("FUZZ_FINDINGS")
        self.findings_dir = findings_dir or (Path(env_dir) if env_dir else None)
        self.findings: dict[str, int] = {}
        self.registry = registry or build_registry()
        self.limits = limits
        self.policy = StopPolicy()
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self.dp = DataPlane(self.registry, InlineExecutor(), DataPlaneSettings(), max_delay_s=0.0,
                            max_concurrent_batches=1, post_executor=InlineExecutor())
        self.stats = Stats()

    @property
    def engines(self) -> list[str]:
        return sorted(self.registry.engines)

    def close(self) -> None:
        self.loop.run_until_complete(self.dp.close())
        self.loop.close()

    # ---- entry points ----------------------------------------------------------------------------
    def check_bytes(self, data: bytes) -> str:
        self.stats.inputs += 1
        try:
            req = pb.ForecastRequest.FromString(data)
        except DecodeError:
            self.stats.undecodable += 1
            return "undecodable"
        return self._guarded(self._check, req, data)

    def _guarded(self, check, req, data: bytes) -> str:
        """Run one path check: engine findings are recorded, and a numeric warning that escapes the request
        path is a violation (from engine or decision code, a finding)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome = check(req)
            except EngineFinding as f:
                outcome = self._finding(f.kind, str(f), data)
        leaked = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        if leaked:
            where = "; ".join(f"{w.filename}:{w.lineno} {w.message}" for w in leaked[:3])
            _require(all(_outside_server_path(w.filename) for w in leaked), "numeric warning leaked: " + where)
            self._finding("warning_leak", f"{leaked[0].filename}:{leaked[0].lineno} {leaked[0].message}", data)
        return outcome

    def _finding(self, kind: str, detail: str, data: bytes) -> str:
        """A bug in an engine or the decision code (not in the request path): record it, keep fuzzing."""
        if self.strict:
            raise PropertyViolation(f"{kind}: {detail}")
        key = f"{kind}: {detail[:160]}"
        first = key not in self.findings
        self.findings[key] = self.findings.get(key, 0) + 1
        self.stats.findings += 1
        if first and self.findings_dir is not None:
            self.findings_dir.mkdir(parents=True, exist_ok=True)
            name = f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
            (self.findings_dir / name).write_bytes(b"\x00" + data)
            (self.findings_dir / f"{name}.txt").write_text(key + "\n")
        return kind

    def check_scaling_bytes(self, data: bytes) -> str:
        """A ``FitScalingLawRequest`` through the server's scaling path: decode, validate (limits first),
        the data plane's admitted, deadline-bounded fit, and the response builder."""
        self.stats.inputs += 1
        self.stats.scaling_inputs += 1
        try:
            req = pb.FitScalingLawRequest.FromString(data)
        except DecodeError:
            self.stats.scaling_undecodable += 1
            return "undecodable"
        return self._guarded(self._check_scaling, req, data)

    def check_scaling_request(self, req: pb.FitScalingLawRequest) -> str:
        return self.check_scaling_bytes(req.SerializeToString())

    def _check_scaling(self, req: pb.FitScalingLawRequest) -> str:
        """The servicer's own path: the data plane's one scaling call (admission, decoding with every
        option, the fit), then the response."""
        limits = self.dp.settings.scaling_limits
        deadline = time.monotonic() + self.timeout_s
        try:
            inp, fit = self.loop.run_until_complete(self.dp.fit_scaling_request(
                len(req.points), req.bootstrap if req.HasField("bootstrap") else None,
                converters.scaling_form(req.form), functools.partial(converters.scaling_input, req, limits),
                deadline))
        except InvalidRequest as exc:
            check_rejection(exc, SCALING_FIELDS)
            self.stats.scaling_rejected += 1
            return "rejected"
        except Exception as exc:  # noqa: BLE001
            code, _ = classify(exc)
            if code.name in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"):
                self.stats.scaling_refused += 1
                return "refused"
            raise EngineFinding("scaling_error", f"{type(exc).__name__}: {exc}")
        at, budgets, notes = inp.at, inp.budgets, inp.notes
        try:  # e.g. a compute-optimal split asked of a fit whose exponents came out zero
            resp = converters.scaling_response(fit, at, budgets, req.request_id, notes)
        except InvalidRequest as exc:
            check_rejection(exc, SCALING_FIELDS)
            self.stats.scaling_rejected += 1
            return "rejected"
        for name, v in _wire_floats(resp):
            _require(math.isfinite(v) and abs(v) < OVERFLOW, f"scaling wire field {name} = {v}")
        _require(len(resp.predictions) == len(at), "one scaling prediction per predict_at")
        self.stats.scaling_fitted += 1
        return "fitted"

    def check_request(self, req: pb.ForecastRequest) -> str:
        """Round-trips through bytes first, as the server receives it."""
        return self.check_bytes(req.SerializeToString())

    # ---- the path -------------------------------------------------------------------------------------
    def _check(self, req: pb.ForecastRequest) -> str:
        try:
            query = converters.forecast_query(req, self.limits, self.policy)
        except InvalidRequest as exc:
            check_rejection(exc)
            self.stats.rejected += 1
            return "rejected"
        check_query(query, self.limits)
        try:
            result = self.loop.run_until_complete(asyncio.wait_for(self.dp.forecast(query), self.timeout_s))
        except EngineUnavailable:
            if query.engine in self.registry.engines:
                raise
            self.stats.engine_unavailable += 1
            return "engine_unavailable"
        except InvalidRequest as exc:  # an engine may still refuse a query it cannot answer
            check_rejection(exc)
            self.stats.rejected += 1
            return "rejected"
        except asyncio.TimeoutError:
            raise
        except Exception as exc:  # noqa: BLE001 - the server answers INTERNAL: an engine/decision bug
            raise EngineFinding("engine_error", f"engine={query.engine or 'default'} {type(exc).__name__}: {exc}")
        self.stats.engine_calls += len(result.engines)
        try:
            check_result(result)
        except PropertyViolation as exc:
            raise EngineFinding("bad_answer", str(exc)) from None
        check_response(converters.forecast_response(result, req.request_id), result)
        self.stats.answered += 1
        return "answered"


# ---- properties ---------------------------------------------------------------------------------------------
def _require(ok: bool, what: str) -> None:
    if not ok:
        raise PropertyViolation(what)


def field_root(path: str) -> str:
    return path.split(".", 1)[0].split("[", 1)[0]


def check_rejection(exc: InvalidRequest, fields: frozenset[str] = REQUEST_FIELDS) -> None:
    code, message = classify(exc)
    _require(code.name == "INVALID_ARGUMENT", f"rejection maps to {code.name}")
    _require(bool(exc.violations), "rejection without field violations")
    for v in exc.violations:
        _require(field_root(v.field) in fields, f"violation names unknown field {v.field!r}")
        _require(bool(v.description), f"violation of {v.field} has no description")
    _require(bool(message), "rejection without message")


def _finite(a, what: str) -> None:
    arr = np.asarray(a, dtype=np.float64)
    _require(bool(np.all(np.isfinite(arr))), f"non-finite {what}: {arr.ravel()[~np.isfinite(arr.ravel())][:3]}")


def check_query(q: ForecastQuery, limits: Limits) -> None:
    c = q.curve
    _require(0 < len(c.x) <= limits.max_curve_points and len(c.x) == len(c.y), "curve length")
    _finite(c.x, "curve.x")
    _finite(c.y, "curve.values")
    _require(bool(np.all(np.diff(c.x) > 0)), "curve.x not strictly increasing")
    _finite(q.x_query, "query_x")
    _require(0 < len(q.x_query) <= limits.max_query_points, "query_x length")
    _require(all(0.0 < lv < 1.0 for lv in q.quantiles), "quantile level outside (0, 1)")
    if q.run.total_steps is not None:
        _require(q.run.total_steps >= c.last_x, "budget before the last observed x")


def _numbers(obj, prefix: str):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, (float, int)) and not isinstance(v, bool):
            yield f"{prefix}.{f.name}", float(v)
        elif isinstance(v, tuple) and v and all(isinstance(e, (float, int)) for e in v):
            for i, e in enumerate(v):
                yield f"{prefix}.{f.name}[{i}]", float(e)


def check_result(r: ForecastResult) -> None:
    for name, m in (("predictions", r.predictions), ("final", r.final)):
        _finite(m.values, f"{name} quantiles")
        _finite(m.mean, f"{name} mean")
        _require(bool(np.all(np.diff(m.values, axis=1) >= 0)), f"{name} quantiles not monotone")
    _require(len(r.predictions.x) == len(r.query.x_query), "one prediction per queried x")
    for path, v in _numbers(r.recommendation, "recommendation"):
        _require(math.isfinite(v), f"non-finite {path} = {v}")
    for p in ("p_beat_incumbent", "p_target_within_budget", "p_improve_own_best"):
        v = getattr(r.recommendation, p)
        _require(v is None or 0.0 <= v <= 1.0, f"recommendation.{p} = {v} outside [0, 1]")
    ctt = r.compute_to_target
    if ctt is not None:
        for path, v in _numbers(ctt, "compute_to_target"):
            _require(math.isfinite(v), f"non-finite {path} = {v}")
        _require(0.0 <= ctt.p_within_budget <= 1.0 and 0.0 <= ctt.p_within_horizon <= 1.0, "ctt probability")
        for sq in ctt.quantiles:
            for path, v in _numbers(sq, "compute_to_target.quantiles"):
                _require(math.isfinite(v) or (path.endswith(".x") and not sq.within_horizon),
                         f"non-finite {path} = {v}")
    weights = [e.weight for e in r.engines]
    _require(bool(weights) and abs(sum(weights) - 1.0) < 1e-9, f"engine weights {weights}")


def _repeated(fd) -> bool:
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED


def _wire_floats(msg, path: str = ""):
    for fd, value in msg.ListFields():
        name = f"{path}.{fd.name}" if path else fd.name
        if fd.type == fd.TYPE_MESSAGE:
            items = value if _repeated(fd) else [value]
            for i, item in enumerate(items):
                yield from _wire_floats(item, f"{name}[{i}]")
        elif fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
            for v in (value if _repeated(fd) else [value]):
                yield name, v


def check_response(resp: pb.ForecastResponse, r: ForecastResult) -> None:
    for name, v in _wire_floats(resp):
        _require(math.isfinite(v) and abs(v) < OVERFLOW, f"wire field {name} = {v}")
    _require(len(resp.predictions) == len(r.query.x_query), "wire predictions count")
    _require(resp.recommendation.action != pb.ACTION_UNSPECIFIED, "no recommendation action")
    order = np.argsort(r.query.quantiles)
    for p in list(resp.predictions) + [resp.final]:
        vals = np.array([p.quantiles[i].value for i in order])
        _require(bool(np.all(np.diff(vals) >= 0)), f"wire quantiles not monotone at x={p.x}")


# ---- the fuzzer's input format ----------------------------------------------------------------------------
SCALING_KIND = 0xC0  # first byte >= this: a FitScalingLawRequest (a quarter of libFuzzer's random first bytes)


def run_fuzz_input(pipeline: Pipeline, data: bytes) -> str:
    """One fuzz input. The first byte says what the rest is: below ``SCALING_KIND`` a ForecastRequest
    (even: raw bytes, odd: the structured request ``fuzz/generate.py`` builds from them), from it on a
    FitScalingLawRequest (even: raw bytes, odd: structured). Corpus files of either era keep their meaning."""
    if not data:
        return "empty"
    scaling, structured = data[0] >= SCALING_KIND, data[0] % 2 == 1
    if not structured:
        return pipeline.check_scaling_bytes(data[1:]) if scaling else pipeline.check_bytes(data[1:])
    import atheris

    from .generate import FdpSource, build_request, build_scaling_request

    src = FdpSource(atheris.FuzzedDataProvider(data[1:]))
    if scaling:
        return pipeline.check_scaling_request(build_scaling_request(src))
    return pipeline.check_request(build_request(src))

