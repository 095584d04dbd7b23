"""The one thing every integration does: send a run's curve to Curvecast and read the verdict, failing open.

A scheduler hook or training callback must never be broken by the forecasting service: when the service
is unreachable, errors, or answers later than a short deadline, :meth:`Advisor.advise` returns an
:class:`Advice` with ``answered=False`` and ``stop=False`` (callers then keep training, or ask a fallback
pruner). After a failure the advisor skips the service for ``cooldown_s`` seconds, so a dead or black-holed
service costs one deadline, not one per reported step. Advisors pickle without their gRPC channel (Ray Tune,
Lightning and Optuna may copy schedulers and callbacks) and build it again on first use.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence, Union

from .._channel import Security
from .._client import Client
from .._types import CurvecastError, Recommendation, Sibling
from .presets import resolve_policy

log = logging.getLogger("curvecast_client.integrations")

STOP_ACTIONS = frozenset({"stop_unpromising", "stop_converged", "stop_diverged", "target_reached"})
GOAL_ALIASES = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
MAX_SIBLINGS = 200  # sweep context sent per call: the most recent siblings (the server allows 1,000)
MAX_SIBLING_POINTS = 500  # each sibling curve subsampled to this many points (the server allows 200,000 in all)
# sweep context for callbacks: the siblings themselves, or a callable returning them at each decision
SiblingSource = Union[Sequence[Sibling], Callable[[], Sequence[Sibling]]]


def sweep_siblings(siblings: Iterable[Sibling], max_siblings: int = MAX_SIBLINGS,
                   max_points: int = MAX_SIBLING_POINTS) -> list[Sibling]:
    """The siblings to send: those with a finite history, the last ``max_siblings`` of them, each curve
    subsampled (first and last points kept) so a large study stays inside the server's limits."""
    out = []
    for s in siblings:
        xs, ys = prepare_curve(s.x, s.y, max_points)
        if xs and math.isfinite(ys[0]):
            out.append(Sibling(s.run_id, tuple(xs), tuple(ys), s.budget, s.finished, dict(s.hyperparameters)))
    return out[-max_siblings:] if max_siblings > 0 else []


def normalize_goal(goal: str) -> str:
    """"min"/"max"/"minimize"/"maximize" -> "minimize"/"maximize" (Ray and Keras say min/max)."""
    try:
        return GOAL_ALIASES[str(goal).lower()]
    except KeyError:
        raise ValueError(f"goal/mode must be 'min' or 'max' (or 'minimize'/'maximize'), got {goal!r}") from None


@dataclass(frozen=True)
class Advice:
    """What the service said about one run (or why it said nothing)."""

    stop: bool  # True only when the service answered with a stop action the caller acts on
    recommendation: Recommendation | None  # None when the service did not answer
    error: str = ""  # why there is no answer ("" when answered)

    @property
    def answered(self) -> bool:
        return self.recommendation is not None

    @property
    def reason(self) -> str:
        return self.recommendation.reason if self.recommendation is not None else self.error


def prepare_curve(x: Sequence[float], y: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """Make a reported history acceptable to the service.

    Points are sorted by x, repeated x keep their latest value, and everything after the first non-finite
    value is cut (one NaN at the end is how the service is told that the run diverged). Long histories are
    thinned evenly, always keeping the first and the last points.
    """
    latest: dict[float, float] = {}
    for xi, yi in zip(x, y):
        latest[float(xi)] = float(yi)
    xs = sorted(k for k in latest if math.isfinite(k))
    ys = [latest[k] for k in xs]
    for i, v in enumerate(ys):
        if not math.isfinite(v):
            xs, ys = xs[: i + 1], ys[:i] + [math.nan]
            break
    if len(xs) > max_points >= 2:
        step = (len(xs) - 1) / (max_points - 1)
        keep = sorted({round(i * step) for i in range(max_points)})
        xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
    return xs, ys


class Advisor:
    """Asks Curvecast whether a run should stop, within a deadline, and never raises.

    ``client`` is a :class:`curvecast_client.Client` or an address ("host:port"). ``stop_on`` are the actions
    that count as "stop" for this caller (default: all four stop actions). ``forecast_kwargs`` are passed to
    every :meth:`Client.forecast` call (e.g. ``engine``, ``cost_per_step``, ``labels``). ``preset``
    ("safe", "balanced", "aggressive"; see :mod:`.presets`) fills the policy, ``policy`` overrides single
    fields, and ``keep_best_checkpoint`` says whether a run's result is its best value or its last.
    """

    def __init__(
        self,
        client: Client | str = "localhost:50051",
        *,
        timeout: float = 0.5,
        cooldown_s: float = 10.0,
        stop_on: Collection[str] | None = None,
        policy: Mapping[str, float] | None = None,
        x_kind: str = "step",
        max_points: int = 2000,
        forecast_kwargs: Mapping[str, Any] | None = None,
        security: Security | None = None,
        logger: logging.Logger | None = None,
        preset: str | None = None,
        keep_best_checkpoint: bool | None = None,
    ) -> None:
        stop_on = STOP_ACTIONS if stop_on is None else frozenset(stop_on)
        unknown = set(stop_on) - STOP_ACTIONS
        if unknown:
            raise ValueError(f"unknown stop actions {sorted(unknown)}; choose from {sorted(STOP_ACTIONS)}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.timeout = float(timeout)
        self.cooldown_s = float(cooldown_s)
        self.stop_on = frozenset(stop_on)
        self.policy = resolve_policy(preset, policy, keep_best_checkpoint)
        self.x_kind = x_kind
        self.max_points = int(max_points)
        self.forecast_kwargs = dict(forecast_kwargs or {})
        self.log = logger or log
        if isinstance(client, Client):
            self._target, self._security, self._client = client.target, client.security, client
        else:
            self._target, self._security, self._client = str(client), security, None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._warned = False
        self.last_failure = ""  # why the most recent call that reached for the service failed

    # -- pickling: the gRPC channel stays behind and is rebuilt on first use ------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        return self._target

    @property
    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                # No transparent retries: a retry would only eat the short deadline.
                self._client = Client(self._target, timeout=self.timeout, retries=0, security=self._security)
            return self._client

    def advise(
        self,
        x: Sequence[float],
        y: Sequence[float],
        *,
        goal: str = "minimize",
        total_steps: float | None = None,
        incumbent: float | None = None,
        target: float | None = None,
        metric: str = "",
        siblings: Sequence[Sibling] | None = None,
        sweep_id: str = "",
    ) -> Advice:
        """The service's recommendation for a run with history (x, y); never raises.

        A ``total_steps`` before the last observed x (a run past its declared budget) is raised to that x.
        ``siblings``: other trials of the same sweep (sweep context; see :func:`sweep_siblings`).
        """
        now = time.monotonic()
        if now < self._down_until:
            return Advice(False, None, f"service at {self._target} failed recently; not asked for "
                                       f"{self._down_until - now:.1f} s more")
        try:
            xs, ys = prepare_curve(x, y, self.max_points)
            if not xs or not math.isfinite(ys[0]):
                return Advice(False, None, "no finite history to send")
            kwargs: dict[str, Any] = dict(self.forecast_kwargs)
            if total_steps is not None and math.isfinite(total_steps) and total_steps > 0:
                kwargs["total_steps"] = max(float(total_steps), xs[-1])
            if incumbent is not None and math.isfinite(incumbent):
                kwargs["incumbent"] = float(incumbent)
            if target is not None and math.isfinite(target):
                kwargs["target"] = float(target)
            if siblings:  # without a budget only siblings with their own can be placed (x / budget)
                sibs = [s for s in siblings if "total_steps" in kwargs or s.budget is not None]
                if sibs:
                    kwargs["siblings"] = sweep_siblings(sibs)
                    kwargs["sweep_id"] = sweep_id
            forecast = self.client.forecast(xs, ys, goal=normalize_goal(goal), x_kind=self.x_kind, metric=metric,
                                            policy=self.policy or None, timeout=self.timeout, **kwargs)
        except Exception as exc:  # noqa: BLE001 - fail open on anything, the training loop matters more
            return self._failed(exc)
        self._down_until = 0.0
        rec = forecast.recommendation
        return Advice(rec.action in self.stop_on, rec)

    def _failed(self, exc: Exception) -> Advice:
        what = f"{exc.code}: {exc.message}" if isinstance(exc, CurvecastError) else f"{type(exc).__name__}: {exc}"
        self._down_until = time.monotonic() + self.cooldown_s
        self.last_failure = what
        msg = f"Curvecast at {self._target} did not answer ({what}); carrying on without it"
        if not self._warned:
            self._warned = True
            self.log.warning("%s (further failures are logged at debug level)", msg)
        else:
            self.log.debug(msg)
        return Advice(False, None, what)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def best_of(values: Iterable[float], goal: str) -> float | None:
    """Best finite value under the goal, or None."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return min(finite) if normalize_goal(goal) == "minimize" else max(finite)


def as_float(value: Any) -> float | None:
    """A metric value (float, numpy or torch scalar, ...) as a float, or None when it is not a number."""
    try:
        if hasattr(value, "item"):
            value = value.item()
        return float(value)
    except (TypeError, ValueError):
        return None


class RunTracker:
    """One training run's history and stop decision, shared by the Lightning, Keras and HF callbacks.

    Records (x, value) points, asks the advisor, and logs the reason for stopping once. The history can be
    saved in and restored from a checkpoint (:meth:`state_dict`), so a resumed run sends its whole curve.
    """

    def __init__(self, advisor: Advisor, *, goal: str, total_steps: float | None, target: float | None,
                 incumbent: float | None, metric: str, siblings: SiblingSource | None = None,
                 sweep_id: str = "") -> None:
        self.advisor = advisor
        self.siblings = siblings  # sweep context: a list, or a callable asked at each decision
        self.sweep_id = sweep_id
        self.goal = normalize_goal(goal)
        self.total_steps = total_steps
        self.target = target
        self.incumbent = incumbent
        self.metric = metric
        self.x: list[float] = []
        self.y: list[float] = []
        self.last: Advice | None = None
        self.stopped_by: Recommendation | None = None

    def record(self, x: float, value: float) -> None:
        """Add a point; a point at an x not after the last one replaces the points from that x on."""
        while self.x and self.x[-1] >= x:
            self.x.pop()
            self.y.pop()
        self.x.append(float(x))
        self.y.append(float(value))

    def decide(self, total_steps: float | None = None) -> bool:
        """Ask the service about the run so far; True means stop. Fails open (False) on any problem."""
        total = total_steps if total_steps is not None else self.total_steps
        sibs = self.siblings() if callable(self.siblings) else self.siblings
        advice = self.advisor.advise(self.x, self.y, goal=self.goal, total_steps=total, incumbent=self.incumbent,
                                     target=self.target, metric=self.metric, siblings=sibs, sweep_id=self.sweep_id)
        self.last = advice
        if advice.stop and self.stopped_by is None:
            self.stopped_by = advice.recommendation
            self.advisor.log.info("Curvecast: stopping training at %s=%g (%s): %s", self.advisor.x_kind,
                                  self.x[-1], advice.recommendation.action, advice.reason)
        return advice.stop

    def state_dict(self) -> dict[str, Any]:
        return {"x": list(self.x), "y": list(self.y)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.x = [float(v) for v in state.get("x", [])]
        self.y = [float(v) for v in state.get("y", [])]
