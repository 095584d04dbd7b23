"""Fan charts: `curvecast forecast --plot` writes a real PNG, and Forecast.plot draws on a matplotlib axis."""

from __future__ import annotations

from pathlib import Path

import pytest

mpl = pytest.importorskip("matplotlib", reason="matplotlib (plot extra) is not installed")
mpl.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
import matplotlib.image as mpimg  # noqa: E402

from curvecast_client import Client  # noqa: E402
from curvecast_client.cli import main  # noqa: E402

X = [100, 200, 300, 400, 500]
Y = [3.9, 3.4, 3.2, 3.05, 2.97]


def test_cli_plot_writes_a_png(server, tmp_path, capsys):
    curve = tmp_path / "c.csv"
    curve.write_text("step,value\n" + "".join(f"{x},{y}\n" for x, y in zip(X, Y)))
    png = tmp_path / "fan.png"
    assert main(["forecast", str(curve), "--server", server.address, "--total-steps", "1000", "--target", "2.8",
                 "--incumbent", "2.9", "--plot", str(png)]) == 0
    assert f"fan chart written to {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 600
    # the 90% band's light blue and the median's tab:blue are both there
    rgb = (img[..., :3] * 255).round().astype(int).reshape(-1, 3)
    assert ((abs(rgb - [31, 119, 180]).sum(axis=1)) < 30).sum() > 200
    assert ((rgb[:, 2] > 200) & (rgb[:, 0] < 235) & (rgb[:, 0] > 150)).sum() > 1000


def test_forecast_draws_itself_on_an_axis(server):
    with Client(server.address, timeout=30) as client:
        f = client.forecast(X, Y, total_steps=1000, incumbent=2.9, target=2.8)
    ax = Figure().add_subplot()
    assert f.plot(ax, x=X, y=Y, budget=1000, target=2.8, incumbent=2.9) is ax
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["90% band", "50% band", "forecast median", "observed", "budget (1000)", "target (2.8)",
                      "incumbent (2.9)"]
    assert len(ax.collections) == 2 and f.recommendation.action in ax.get_title()
    median = next(ln for ln in ax.get_lines() if ln.get_label() == "forecast median")
    assert list(median.get_xdata()) == [p.x for p in f.predictions]


def test_plot_without_matplotlib_names_the_extra(server, tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    curve = tmp_path / "c.csv"
    curve.write_text("step,value\n1,2\n2,1.5\n")
    assert main(["forecast", str(curve), "--server", server.address, "--plot", str(tmp_path / "x.png")]) == 2
    assert "client[plot]" in capsys.readouterr().err
