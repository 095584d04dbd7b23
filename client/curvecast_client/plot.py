"""Fan charts of forecasts with matplotlib (an optional extra, imported only here and only when called)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from ._types import Forecast

ACTION_TEXT = {"continue": "continue", "stop_unpromising": "stop: unpromising", "stop_converged": "stop: converged",
               "stop_diverged": "stop: diverged", "target_reached": "target reached"}


def require_matplotlib() -> None:
    """Fail early, with the install line, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError('plotting needs matplotlib: pip install "./client[plot]" (or pip install matplotlib)') from None


def _band(f: "Forecast", lo: float, hi: float) -> tuple[list[float], list[float]] | None:
    levels = f.final.quantiles
    if not levels or min(abs(lv - lo) for lv in levels) > 1e-9 or min(abs(lv - hi) for lv in levels) > 1e-9:
        return None
    return [p.quantile(lo) for p in f.predictions], [p.quantile(hi) for p in f.predictions]


def recommendation_title(f: "Forecast") -> str:
    r = f.recommendation
    text = ACTION_TEXT.get(r.action, r.action)
    extra = []
    if r.prob_beat_incumbent is not None:
        extra.append(f"P(beat incumbent) {r.prob_beat_incumbent:.2f}")
    if r.steps_saved:
        extra.append(f"saves {r.steps_saved:.4g} steps")
    return f"{text}" + (f" ({', '.join(extra)})" if extra else "")


def draw_forecast(f: "Forecast", ax: Any = None, *, x: Sequence[float] | None = None, y: Sequence[float] | None = None,
                  budget: float | None = None, target: float | None = None, incumbent: float | None = None,
                  title: str | None = None, metric: str = "", x_kind: str = "step", reason: bool = True) -> Any:
    """Draw a fan chart of ``f`` on a matplotlib axis (a new figure's when ``ax`` is None) and return the axis.

    Observed points ``x``/``y``, the median, the 50% (q0.25-q0.75) and 90% (q0.05-q0.95) bands when those
    quantiles were asked for, and vertical/horizontal lines for the budget, target and incumbent; the title
    carries the recommendation (and ``title`` before it)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    px = [p.x for p in f.predictions]
    b90, b50 = _band(f, 0.05, 0.95), _band(f, 0.25, 0.75)
    if b90:
        ax.fill_between(px, *b90, color="tab:blue", alpha=0.15, linewidth=0, label="90% band")
    if b50:
        ax.fill_between(px, *b50, color="tab:blue", alpha=0.32, linewidth=0, label="50% band")
    ax.plot(px, [p.quantile(0.5) for p in f.predictions], color="tab:blue", lw=1.8, label="forecast median")
    if x is not None and y is not None:
        ax.plot(list(x), list(y), "o", color="black", ms=3.5, label="observed", zorder=5)
    if budget is not None:
        ax.axvline(budget, color="gray", ls="--", lw=1, label=f"budget ({budget:g})")
    if target is not None:
        ax.axhline(target, color="tab:green", ls=":", lw=1.5, label=f"target ({target:g})")
    if incumbent is not None:
        ax.axhline(incumbent, color="tab:red", ls="-.", lw=1.2, label=f"incumbent ({incumbent:g})")
    ax.set_xlabel(x_kind)
    ax.set_ylabel(metric or "value")
    ax.grid(alpha=0.3)
    head = recommendation_title(f)
    if title:
        head = f"{title}: {head}"
    if reason and f.recommendation.reason:
        head += "\n" + "\n".join(textwrap.wrap(f.recommendation.reason, 95, max_lines=2, placeholder="..."))
    ax.set_title(head, fontsize=9)
    falling = len(f.predictions) > 1 and f.predictions[-1].median <= f.predictions[0].median
    ax.legend(fontsize=8, loc="upper right" if falling else "lower right")
    return ax


def fan_chart_figure(f: "Forecast", x: Sequence[float], y: Sequence[float], **kwargs: Any) -> Any:
    """A standalone matplotlib Figure (no pyplot, so no GUI backend) holding the fan chart of ``f``."""
    from matplotlib.figure import Figure

    kwargs.pop("goal", None)
    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    draw_forecast(f, fig.add_subplot(), x=x, y=y, **kwargs)
    fig.tight_layout()
    return fig


def save_fan_chart(f: "Forecast", x: Sequence[float], y: Sequence[float], path: str, **kwargs: Any) -> None:
    """Write a fan chart of ``f`` to an image file (format from the suffix, e.g. .png or .svg)."""
    fan_chart_figure(f, x, y, **kwargs).savefig(path)
