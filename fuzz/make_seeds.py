"""Writes the seed corpus: a few realistic and a few extreme requests in raw-bytes form (first byte 0 for a
ForecastRequest, ``SCALING_KIND`` for a FitScalingLawRequest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .harness import SCALING_KIND, pb

SEEDS = Path(__file__).resolve().parent / "corpus" / "seeds"


def seeds() -> dict[str, pb.ForecastRequest]:
    x = np.linspace(10, 300, 30)
    loss = 2.0 + 4.0 * x**-0.4
    acc = 0.95 - 0.5 * np.exp(-x / 100)
    base = dict(curve=pb.Curve(x=x.tolist(), values=loss.tolist()), run=pb.RunInfo(total_steps=1000.0))
    out = {
        "loss": pb.ForecastRequest(**base, target=2.2, incumbent=2.25),
        "accuracy": pb.ForecastRequest(curve=pb.Curve(x=x.tolist(), values=acc.tolist(), goal=pb.GOAL_MAXIMIZE,
                                                      lower_bound=0.0, upper_bound=1.0),
                                       run=pb.RunInfo(total_steps=900.0), quantiles=[0.1, 0.5, 0.9]),
        "single_point": pb.ForecastRequest(curve=pb.Curve(x=[1.0], values=[3.0])),
        "constant": pb.ForecastRequest(curve=pb.Curve(x=x.tolist(), values=[1.5] * len(x)),
                                       run=pb.RunInfo(total_steps=1e6)),
        "extreme": pb.ForecastRequest(curve=pb.Curve(x=[5e-324, 1e-300, 1.0, 1e99], values=[1e300, -1e300, 5e-324, 0.0]),
                                      run=pb.RunInfo(total_steps=1e100), target=-1e300, incumbent=1e300),
        "denormal": pb.ForecastRequest(curve=pb.Curve(x=(np.arange(1, 31) * 5e-324).tolist(),
                                                      values=(np.linspace(3, 1, 30) * 5e-320).tolist()),
                                       run=pb.RunInfo(total_steps=1e-300), target=1e-320),
        "too_big": pb.ForecastRequest(curve=pb.Curve(x=[1.0, 2.0], values=[1e308, 1.0]),
                                      run=pb.RunInfo(total_steps=1e308), target=1e308),
        "diverged": pb.ForecastRequest(curve=pb.Curve(x=x.tolist(), values=loss.tolist()[:-3] + [float("nan")] * 3),
                                       run=pb.RunInfo(total_steps=1000.0)),
        "schedule": pb.ForecastRequest(
            curve=pb.Curve(x=x.tolist(), values=loss.tolist()),
            run=pb.RunInfo(total_steps=1000.0, model_params=1e8, tokens_per_step=5e5,
                           schedule=pb.LrSchedule(shape=pb.SCHEDULE_SHAPE_COSINE, peak_lr=3e-4, warmup_steps=50)),
            engine="analytic", target=2.3),
        "learned": pb.ForecastRequest(**base, engine="learned", query_x=[400.0, 800.0, 1000.0]),
    }
    return out


def scaling_seeds() -> dict[str, pb.FitScalingLawRequest]:
    n = np.repeat([1e7, 3e7, 1e8, 3e8], 3)
    d = n * np.tile([10.0, 20.0, 40.0], 4)
    loss = 1.7 + 400 / n**0.34 + 410 / d**0.28
    grid = [pb.ScalingPoint(n_params=a, tokens=b, loss=c, run_id=f"r{i}") for i, (a, b, c) in enumerate(zip(n, d, loss))]
    return {
        "scaling_grid": pb.FitScalingLawRequest(points=grid, bootstrap=20, predict_at=[pb.ScalingQuery(n_params=1e9, tokens=2e10)],
                                                compute_budgets=[1e20]),
        "scaling_kaplan": pb.FitScalingLawRequest(points=grid, form=pb.SCALING_FORM_KAPLAN, bootstrap=0),
        "scaling_too_few": pb.FitScalingLawRequest(points=grid[:2]),
    }


def main() -> None:
    SEEDS.mkdir(parents=True, exist_ok=True)
    for name, req in seeds().items():
        (SEEDS / name).write_bytes(b"\x00" + req.SerializeToString())
    for name, sreq in scaling_seeds().items():
        (SEEDS / name).write_bytes(bytes([SCALING_KIND]) + sreq.SerializeToString())
    print(f"wrote {len(seeds()) + len(scaling_seeds())} seeds to {SEEDS}")


if __name__ == "__main__":
    main()
