"""TensorBoard reader: event files written by the real writers (torch.utils.tensorboard, tensorboardX),
read by the SDK and by `curvecast forecast --tensorboard` against the real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="the readers extra (tensorboard) is not installed")

from curvecast_client.cli import EXIT_USAGE, main  # noqa: E402
from curvecast_client.readers import ReaderError, read_tensorboard, tensorboard_runs, tensorboard_tags  # noqa: E402

LOSS = [3.9, 3.4, 3.2, 3.05, 2.97, 2.9]


def _write_torch(folder: Path, values, tag: str = "val/loss", start: int = 100) -> None:
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    w = torch_tb.SummaryWriter(str(folder))
    for i, v in enumerate(values):
        w.add_scalar(tag, v, global_step=start * (i + 1))
        w.add_scalar("train/lr", 0.1, global_step=start * (i + 1))
    w.close()


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _write_torch(root / "lr0.1", LOSS)
    _write_torch(root / "lr0.3", [v + 0.3 for v in LOSS])
    return root


def test_reads_a_torch_summarywriter_run(tmp_path):
    _write_torch(tmp_path / "exp1", LOSS)
    c = read_tensorboard(tmp_path / "exp1", "val/loss")
    assert c.x == [100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
    assert c.y == pytest.approx(LOSS, rel=1e-6) and c.metric == "val/loss"
    assert tensorboard_tags(tmp_path / "exp1") == {"exp1": ["train/lr", "val/loss"]}


def test_reads_tensorboardx_and_a_resumed_run(tmp_path):
    tbx = pytest.importorskip("tensorboardX")
    run = tmp_path / "resumed"
    w = tbx.SummaryWriter(str(run))
    for s, v in [(1, 2.0), (2, 1.8), (3, 1.7)]:
        w.add_scalar("loss", v, s)
    w.close()
    w = tbx.SummaryWriter(str(run), filename_suffix=".resumed")  # a second event file: restarted after step 2
    for s, v in [(3, 1.65), (4, 1.6)]:
        w.add_scalar("loss", v, s)
    w.close()
    c = read_tensorboard(run, "loss")
    assert c.x == [1.0, 2.0, 3.0, 4.0]
    assert c.y[:2] == pytest.approx([2.0, 1.8]) and c.y[3] == pytest.approx(1.6)


def test_several_runs_and_errors(sweep):
    runs = tensorboard_runs(sweep, "val/loss")
    assert [c.name for c in runs] == ["lr0.1", "lr0.3"]
    with pytest.raises(ReaderError, match="2 runs"):
        read_tensorboard(sweep, "val/loss")
    assert read_tensorboard(sweep, "val/loss", run="lr0.3").y[0] == pytest.approx(4.2)
    with pytest.raises(ReaderError, match=r"tags found: train/lr, val/loss"):
        tensorboard_runs(sweep, "val/acc")
    empty = sweep.parent / "empty"
    empty.mkdir()
    with pytest.raises(ReaderError, match="no TensorBoard event files"):
        tensorboard_runs(empty, "val/loss")


def test_cli_forecast_from_tensorboard(server, sweep, capsys):
    rc = main(["forecast", "--tensorboard", str(sweep / "lr0.1"), "--tag", "val/loss", "--server", server.address,
               "--total-steps", "2000", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["final"]["x"] == 2000 and out["predictions"][0]["x"] > 600
    assert main(["forecast", "--tensorboard", str(sweep), "--run", "lr0.3", "--tag", "val/loss",
                 "--server", server.address, "--total-steps", "2000", "--rows", "2"]) == 0
    assert "recommendation:" in capsys.readouterr().out
    assert main(["forecast", "--tensorboard", str(sweep), "--server", server.address]) == EXIT_USAGE
    assert "--tag" in capsys.readouterr().err
    assert main(["forecast", "--tensorboard", str(sweep), "--tag", "nope", "--server", server.address]) == EXIT_USAGE
    assert "tags found" in capsys.readouterr().err
