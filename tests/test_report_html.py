"""`curvecast report`: a sweep from real TensorBoard event files and a CSV folder, forecast by the real server,
written as one self-contained HTML page and rendered in real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="matplotlib (plot extra) is not installed")

from curvecast_client.cli import EXIT_USAGE, main  # noqa: E402

GOOD = [3.9, 3.4, 3.1, 2.9, 2.75, 2.65, 2.58, 2.52, 2.48, 2.45]


def _curves() -> dict[str, tuple[list[int], list[float]]]:
    return {
        "good": (list(range(100, 1100, 100)), GOOD),                                 # finished, the best
        "bad": (list(range(100, 400, 100)), [v + 0.9 for v in GOOD[:3]]),            # far behind at 30%
        "close": (list(range(100, 600, 100)), [v + 0.02 for v in GOOD[:5]]),         # about as good at 50%
    }


@pytest.fixture
def tb_sweep(tmp_path: Path) -> Path:
    pytest.importorskip("tensorboard", reason="the readers extra (tensorboard) is not installed")
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    root = tmp_path / "tb"
    for name, (xs, ys) in _curves().items():
        w = torch_tb.SummaryWriter(str(root / name))
        for x, y in zip(xs, ys):
            w.add_scalar("val/loss", y, x)
        w.close()
    return root


def _check_page(page: str, n_runs: int) -> list[str]:
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == n_runs
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    return re.findall(r"<tr[^>]*><td>\d+</td><td class=l>([^<]+)</td>", body)


def test_report_from_tensorboard_ranks_runs_and_counts_savings(server, tb_sweep, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--tensorboard", str(tb_sweep), "--tag", "val/loss", "--server", server.address,
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ranked = _check_page(out.read_text(), 3)
    assert ranked[-1] == "bad" and ranked == [r["run"] for r in summary["runs"]]
    probs = [r["prob_beat_best"] for r in summary["runs"]]
    assert probs == sorted(probs, reverse=True)
    bad = next(r for r in summary["runs"] if r["run"] == "bad")
    assert bad["action"] == "stop_unpromising" and bad["steps_saved"] == pytest.approx(700)
    assert summary["budget"] == 1000 and summary["steps_saved"] >= 700
    assert "bad" in out.read_text() and "runs recommended to stop" in out.read_text()


def test_report_from_a_csv_folder(server, tmp_path, capsys):
    folder = tmp_path / "csvs"
    folder.mkdir()
    for name, (xs, ys) in _curves().items():
        (folder / f"{name}.csv").write_text("step,val_loss\n" + "".join(f"{x},{y}\n" for x, y in zip(xs, ys)))
    out = tmp_path / "r.html"
    assert main(["report", "--csv-dir", str(folder), "--server", server.address, "--out", str(out),
                 "--cost-per-step", "2"]) == 0
    text = capsys.readouterr().out
    assert "runs recommended to stop" in text and f"report written to {out}" in text
    assert _check_page(out.read_text(), 3)[-1] == "bad"
    assert main(["report", "--server", server.address]) == EXIT_USAGE


CHECK_JS = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width]);
  const t = document.getElementById('runs').getBoundingClientRect();
  document.body.setAttribute('data-check', JSON.stringify({imgs, rows: document.querySelectorAll('#runs tbody tr').length,
    table: [t.width, t.height]}));
});</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary on PATH (apt-get install -y chromium): the browser check of the report is skipped")


def _chromium_args(tmp_path: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1600"]


def test_report_renders_in_headless_chromium(server, tb_sweep, tmp_path):
    args = _chromium_args(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", "--tensorboard", str(tb_sweep), "--tag", "val/loss", "--server", server.address,
                 "--out", str(out)]) == 0
    # 1. the DOM after load: every chart decoded with a real size, the table laid out with its three runs
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", CHECK_JS + "</body>"))
    dom = subprocess.run(args + ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120)
    found = re.search(r'data-check="([^"]+)"', dom.stdout)
    assert found, f"chromium produced no check (rc {dom.returncode}): {dom.stderr[-2000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["rows"] == 3
    assert len(check["imgs"]) == 3 and all(c and w >= 800 and shown >= 400 for c, w, shown in check["imgs"]), check
    assert check["table"][0] > 400 and check["table"][1] > 60
    # 2. a screenshot of the untouched page: not blank, and the fan charts' blue is on it
    shot = tmp_path / "shot.png"
    subprocess.run(args + [f"--screenshot={shot}", out.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
    import matplotlib.image as mpimg

    rgb = (mpimg.imread(shot)[..., :3] * 255).round().astype(int).reshape(-1, 3)
    assert ((abs(rgb - [31, 119, 180]).sum(axis=1)) < 40).sum() > 500, "no fan-chart blue in the screenshot"
