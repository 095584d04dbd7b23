"""A sweep report: forecast every run, rank them by P(beat the best of the others), one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .plot import fan_chart_figure, recommendation_title
from .readers import Curve

if TYPE_CHECKING:  # pragma: no cover
    from ._client import Client
    from ._types import Forecast


@dataclass(frozen=True)
class RunResult:
    """One run of the sweep with its forecast (or the error that replaced it)."""

    curve: Curve
    incumbent: float | None
    forecast: "Forecast | None"
    error: str = ""

    @property
    def prob_beat(self) -> float | None:
        return None if self.forecast is None else self.forecast.recommendation.prob_beat_incumbent


@dataclass(frozen=True)
class Report:
    html: str
    text: str
    summary: dict[str, Any]
    runs: list[RunResult]


def _best(values: Sequence[float], goal: str) -> float:
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return float("nan")
    return min(finite) if goal == "minimize" else max(finite)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def forecast_sweep(runs: Sequence[Curve], client: "Client", *, goal: str = "minimize",
                   total_steps: float | None = None, engine: str = "", cost_per_step: float | None = None,
                   x_kind: str = "step") -> tuple[list[RunResult], float]:
    """Forecast each run against the best observed value of the other runs; returns results and the budget.

    The budget defaults to the last x of the longest run. Runs fail one by one (ForecastBatch)."""
    if not runs:
        raise ValueError("the sweep has no runs")
    budget = total_steps if total_steps is not None else max(c.x[-1] for c in runs if c.x)
    bests = [_best(c.y, goal) for c in runs]
    requests, incumbents = [], []
    for i, c in enumerate(runs):
        others = [b for j, b in enumerate(bests) if j != i and b == b]
        inc = _best(others, goal) if others else None
        incumbents.append(inc)
        requests.append({"x": c.x, "y": c.y, "goal": goal, "x_kind": x_kind, "metric": c.metric,
                         "total_steps": max(budget, c.x[-1]), "incumbent": inc, "engine": engine,
                         "cost_per_step": cost_per_step, "lr": c.lr, "request_id": f"report-{i}"})
    answers: list[Any] = []
    for start in range(0, len(requests), 200):  # well inside the server's 1,000 runs per batch
        answers += client.forecast_batch(requests[start:start + 200])
    out = []
    for c, inc, ans in zip(runs, incumbents, answers):
        if isinstance(ans, Exception):
            out.append(RunResult(c, inc, None, str(ans)))
        else:
            out.append(RunResult(c, inc, ans))
    return out, budget


def _rank_key(r: RunResult) -> tuple[int, float]:
    return (0, -(r.prob_beat if r.prob_beat is not None else 1.0)) if r.forecast else (1, 0.0)


CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:12px 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f3f7}td.l,th:nth-child(2){text-align:left}tr.stop td{color:#a33}.charts{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #ddd;padding:6px}figure img{width:520px;display:block}figcaption{font-size:13px}
.summary{background:#f6f8fa;padding:10px 14px;border-left:4px solid #4a7}"""


def build_report(runs: Sequence[Curve], client: "Client", *, goal: str = "minimize", total_steps: float | None = None,
                 engine: str = "", cost_per_step: float | None = None, x_kind: str = "step",
                 source: str = "") -> Report:
    """Forecast the sweep and render the report (HTML with inline PNG fan charts, plain-text table, JSON summary)."""
    results, budget = forecast_sweep(runs, client, goal=goal, total_steps=total_steps, engine=engine,
                                     cost_per_step=cost_per_step, x_kind=x_kind)
    ranked = sorted(results, key=_rank_key)
    observed = sum(r.curve.x[-1] for r in results)
    planned = sum(max(budget, r.curve.x[-1]) for r in results)
    stops = [r for r in ranked if r.forecast and r.forecast.recommendation.should_stop]
    saved = sum(r.forecast.recommendation.steps_saved for r in stops if r.forecast)
    cost_saved = sum(r.forecast.recommendation.cost_saved or 0.0 for r in stops if r.forecast)
    remaining = planned - observed
    leader = ranked[0] if ranked and ranked[0].forecast else None
    headline = (f"{len(stops)} of {len(results)} runs recommended to stop; following it saves {saved:.4g} of "
                f"{remaining:.4g} remaining {x_kind}s ({(saved / remaining if remaining > 0 else 0):.0%})"
                + (f", cost {cost_saved:.4g}" if cost_per_step else "")
                + (f". Most likely winner: {leader.curve.name}" if leader else ""))

    rows_html, rows_text, runs_json = [], [], []
    for rank, r in enumerate(ranked, 1):
        f = r.forecast
        if f is None:
            rows_html.append(f"<tr><td>{rank}</td><td class=l>{html.escape(r.curve.name)}</td>"
                             f"<td colspan=6 class=l>error: {html.escape(r.error)}</td></tr>")
            rows_text.append(f"{rank:>3} {r.curve.name:<24} error: {r.error}")
            runs_json.append({"run": r.curve.name, "error": r.error})
            continue
        rec = f.recommendation
        pb = "-" if rec.prob_beat_incumbent is None else f"{rec.prob_beat_incumbent:.3f}"
        cells = [str(rank), r.curve.name, pb, f"{_best(r.curve.y, goal):.5g}", f"{f.final.quantile(0.5):.5g}",
                 f"[{f.final.quantile(0.05):.4g}, {f.final.quantile(0.95):.4g}]" if 0.05 in f.final.quantiles else "-",
                 rec.action, f"{rec.steps_saved:.4g}" if rec.should_stop else "0"]
        cls = " class=stop" if rec.should_stop else ""
        rows_html.append(f"<tr{cls}>" + "".join(
            f"<td{' class=l' if i in (1, 6) else ''}>{html.escape(c)}</td>" for i, c in enumerate(cells)) + "</tr>")
        rows_text.append(f"{cells[0]:>3} {cells[1]:<24} {cells[2]:>8} {cells[3]:>10} {cells[4]:>10}  {cells[6]}")
        runs_json.append({"run": r.curve.name, "rank": rank, "prob_beat_best": rec.prob_beat_incumbent,
                          "incumbent": r.incumbent, "best_observed": _best(r.curve.y, goal),
                          "final_median": f.final.quantile(0.5), "action": rec.action, "reason": rec.reason,
                          "steps_saved": rec.steps_saved if rec.should_stop else 0.0})

    figures = []
    for r in ranked:
        if r.forecast is None:
            continue
        fig = fan_chart_figure(r.forecast, r.curve.x, r.curve.y, budget=max(budget, r.curve.x[-1]),
                               incumbent=r.incumbent, metric=r.curve.metric, x_kind=x_kind, title=r.curve.name)
        figures.append(f'<figure><img alt="fan chart of {html.escape(r.curve.name)}" '
                       f'src="data:image/png;base64,{_png(fig)}"><figcaption>{html.escape(r.curve.name)}: '
                       f"{html.escape(recommendation_title(r.forecast))}</figcaption></figure>")

    engines = sorted({f"{e.name} {e.version}" for r in results if r.forecast for e in r.forecast.engines})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Curvecast sweep report</title><style>{CSS}</style></head>
<body><h1>Curvecast sweep report</h1>
<p>{html.escape(source)}; {len(results)} runs, goal: {goal}, budget: {budget:g} {x_kind}s; engines: {html.escape(', '.join(engines))}.
Each run is forecast against the best value observed so far by the other runs.</p>
<p class=summary id=summary>{html.escape(headline)}</p>
<h2>Runs ranked by P(beat the best)</h2>
<table id=runs><thead><tr><th>#</th><th>run</th><th>P(beat the best)</th><th>best so far</th><th>median at budget</th>
<th>90% at budget</th><th>recommendation</th><th>{x_kind}s saved</th></tr></thead>
<tbody>{''.join(rows_html)}</tbody></table>
<h2>Fan charts</h2><div class=charts id=charts>{''.join(figures)}</div>
</body></html>
"""
    text = "\n".join([f"{'#':>3} {'run':<24} {'P(beat)':>8} {'best':>10} {'median@B':>10}  recommendation",
                      *rows_text, "", headline])
    summary = {"budget": budget, "goal": goal, "runs": runs_json, "stopped": len(stops), "steps_saved": saved,
               "remaining_steps": remaining, "cost_saved": cost_saved if cost_per_step else None}
    return Report(page, text, summary, ranked)
