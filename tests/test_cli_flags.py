"""The CLI's flags, messages and exit codes, against the real server process (no mocks)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_client import _convert
from curvecast_client.cli import EXIT_OK, EXIT_RPC, EXIT_USAGE, build_parser, forecast_kwargs, main
from curvecast_client.readers import parse_curve_text

from conftest import ROOT, ServerProcess

CURVE = "step,value\n100,3.9\n200,3.4\n300,3.2\n400,3.05\n500,2.97\n"


@pytest.fixture
def curve_csv(tmp_path: Path) -> Path:
    path = tmp_path / "curve.csv"
    path.write_text(CURVE)
    return path


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_of_every_command_has_help_and_no_raw_choice_sets():
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        text = sub.format_help()
        assert "{," not in text and "{ensemble" not in text, f"{name}: raw choice set in help:\n{text}"
    forecast_help = _subparsers(build_parser())["forecast"].format_help()
    for flag in ("--goal", "--x-kind", "--engine", "--cost-per-step", "--flops-per-step", "--request-id",
                 "--lower-bound", "--upper-bound", "--model-params", "--tokens-per-step", "--rows",
                 "--min-prob-beat-incumbent", "--keep-best-checkpoint", "--tensorboard", "--mlflow", "--plot"):
        assert flag in forecast_help, flag


def _set_fields(msg, prefix: str = "") -> set[str]:
    out = set()
    for fd, value in msg.ListFields():
        name = prefix + fd.name
        if fd.message_type is not None and not fd.is_repeated:
            out |= {name} | _set_fields(value, name + ".")
        else:
            out.add(name)
    return out


def _all_fields(desc, prefix: str = "") -> set[str]:
    out = set()
    for fd in desc.fields:
        name = prefix + fd.name
        out.add(name)
        if fd.message_type is not None and not fd.is_repeated:
            out |= _all_fields(fd.message_type, name + ".")
    return out


def _request(argv: list[str], tmp_path: Path) -> pb.ForecastRequest:
    args = build_parser().parse_args(["forecast", *argv])
    curve = parse_curve_text("step,value,lr\n1,3,0.1\n2,2.5,0.1\n")
    return _convert.forecast_request(curve.x, curve.y, **forecast_kwargs(args, curve))


def test_every_forecast_request_field_is_reachable_by_a_flag(tmp_path):
    sched = tmp_path / "lr.csv"
    sched.write_text("step,lr\n0,0.1\n10,0.01\n")
    sibs = tmp_path / "siblings.csv"
    sibs.write_text("run_id,x,value,budget,finished\na,1,0.5,10,1\na,2,0.6,,\nb,1,0.4,,\n")
    common = ["--goal", "maximize", "--x-kind", "epoch", "--metric", "acc", "--lower-bound", "0", "--upper-bound", "1",
              "--total-steps", "10", "--model-params", "1e8", "--tokens-per-step", "5e5", "--flops-per-step", "3e14",
              "--cost-per-step", "0.5", "--label", "team=a", "--target", "0.9", "--incumbent", "0.8",
              "--quantiles", "0.1,0.5,0.9", "--query-x", "5,10", "--engine", "learned", "--request-id", "r1",
              "--min-prob-beat-incumbent", "0.1", "--min-relative-improvement", "0.01", "--min-points", "3",
              "--min-fraction-observed", "0.2", "--compute-weight", "0.5", "--no-keep-best-checkpoint",
              "--siblings", str(sibs), "--sweep-id", "s1"]
    shaped = _request(common + ["--schedule-shape", "step", "--peak-lr", "0.1", "--final-lr", "0.001",
                                "--warmup-steps", "1", "--decay-start", "5", "--step-gamma", "0.5",
                                "--step-interval", "2"], tmp_path)
    explicit = _request(common + ["--schedule", str(sched)], tmp_path)
    reached = _set_fields(shaped) | _set_fields(explicit)
    missing = _all_fields(pb.ForecastRequest.DESCRIPTOR) - reached
    assert not missing, f"ForecastRequest fields no flag sets: {sorted(missing)}"
    assert shaped.policy.keep_best_checkpoint is False and shaped.policy.min_points == 3
    assert shaped.curve.lower_bound == 0 and shaped.curve.upper_bound == 1 and shaped.run.labels["team"] == "a"
    assert shaped.engine == "learned" and shaped.run.model_params == 1e8 and shaped.run.tokens_per_step == 5e5
    a, b = shaped.sweep.siblings
    assert shaped.sweep.sweep_id == "s1" and a.run_id == "a" and list(a.curve.values) == [0.5, 0.6]
    assert a.budget == 10 and a.finished and b.run_id == "b" and not b.finished
    default = _request([], tmp_path)
    assert default.engine == "" and not default.HasField("policy") or not _set_fields(default.policy)


def test_rows_shortens_the_table(server, curve_csv, capsys):
    assert main(["forecast", str(curve_csv), "--server", server.address, "--total-steps", "1000", "--rows", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    data = lines[1:lines.index("") if "" in lines else None]
    assert [ln.split()[0] for ln in data] == ["510", "750", "1000", "final", "(3"], out
    assert "(3 of 50 predictions shown" in out


def test_header_only_csv_says_no_data_rows(curve_csv, capsys):
    curve_csv.write_text("step,value\n")
    assert main(["forecast", str(curve_csv), "--server", "127.0.0.1:1"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no data rows" in err and "missing column" not in err


def test_missing_file_and_bad_json_are_local_errors(tmp_path, capsys):
    assert main(["forecast", str(tmp_path / "nope.csv")]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('[[1], [2]]')
    assert main(["forecast", str(bad)]) == EXIT_USAGE
    assert "JSON curve" in capsys.readouterr().err


def test_invalid_argument_violation_printed_once(server, curve_csv, capsys):
    rc = main(["forecast", str(curve_csv), "--server", server.address, "--total-steps", "10"])
    err = capsys.readouterr().err
    assert rc == EXIT_RPC
    assert err.count("run.total_steps") == 1, err
    assert "INVALID_ARGUMENT" in err


def test_health_of_an_unknown_service_names_the_known_ones(server, capsys):
    assert main(["health", "--server", server.address, "--service", "nope"]) == EXIT_RPC
    err = capsys.readouterr().err
    assert "'nope'" in err and "curvecast.engine.learned" in err and not err.strip().endswith("NOT_FOUND:")
    assert main(["health", "--server", server.address, "--service", "curvecast.engine.analytic"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "SERVING"


def test_bootstrap_zero_prints_no_degenerate_intervals(server, tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n1e6,1e8,4\n1e7,1e9,3.5\n1e8,1e10,3\n1e6,1e9,3.8\n1e7,1e8,3.7\n1e8,1e9,3.2\n")
    assert main(["fit-scaling", str(path), "--server", server.address, "--bootstrap", "0",
                 "--predict", "1e9,1e11"]) == 0
    out = capsys.readouterr().out
    assert "95% [" not in out and "(no interval)" in out
    assert not re.search(r"\[([-\d.e+]+), \1\]", out), out


def test_broken_pipe_is_quiet(server):
    proc = subprocess.Popen([sys.executable, "-m", "curvecast_client.cli", "info", "--server", server.address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert b"Broken pipe" not in err and b"Errno 32" not in err, err
    assert proc.returncode == EXIT_OK
    out = subprocess.run(f"{sys.executable} -m curvecast_client.cli info --server {server.address} | head -1",
                         shell=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("server ") and "Broken pipe" not in out.stderr


def test_unreachable_server_exits_1_with_a_hint(capsys):
    from conftest import free_port

    rc = main(["info", "--server", f"127.0.0.1:{free_port()}", "--timeout", "2"])
    assert rc == EXIT_RPC
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and "hint:" in err


def test_plaintext_against_tls_server_hints_tls(tmp_path, capsys):
    pytest.importorskip("cryptography.x509")
    from test_security import CertificateAuthority

    ca = CertificateAuthority(tmp_path, "cli-test-ca")
    cert = ca.issue("localhost", server=True)
    proc = ServerProcess("--tls-cert", str(cert.cert), "--tls-key", str(cert.key)).wait_ready()
    try:
        rc = main(["info", "--server", proc.address, "--timeout", "5"])
        err = capsys.readouterr().err
        assert rc == EXIT_RPC
        assert "UNAVAILABLE" in err and "--tls" in err and "speaks TLS" in err, err
        assert main(["info", "--server", f"localhost:{proc.port}", "--tls", "--ca", str(ca.issued.cert)]) == EXIT_OK
        assert capsys.readouterr().out.startswith("server ")
    finally:
        proc.stop()


def test_json_output_is_one_object(server, curve_csv, capsys):
    assert main(["forecast", str(curve_csv), "--server", server.address, "--total-steps", "1000", "--json",
                 "--min-points", "100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recommendation"]["action"] == "continue" and len(data["predictions"]) == 50


def test_doc_install_lines_work_from_a_clone():
    for doc in (ROOT / "docs" / "integrations.md", ROOT / "README.md", *sorted((ROOT / "docs").glob("tutorial-*.md"))):
        for line in doc.read_text().splitlines():
            for m in re.finditer(r"pip install ([^`\n#]+)", line):
                target = m.group(1).strip().split()[0].strip("\"'")
                if target.startswith("-"):
                    continue
                name = re.sub(r"\[.*\]$", "", target)
                assert name.startswith("./") or name.startswith(".venv") or Path(ROOT / name).exists(), \
                    f"{doc.name}: `pip install {target}` needs a published package; from a clone use a path: {line}"
                assert (ROOT / name).exists(), f"{doc.name}: {name} does not exist in the clone"
                extras = re.findall(r"\[([^\]]+)\]", target)
                if extras and (ROOT / name / "pyproject.toml").exists():
                    declared = tomllib.loads((ROOT / name / "pyproject.toml").read_text())["project"].get(
                        "optional-dependencies", {})
                    for extra in extras[0].split(","):
                        assert extra in declared, f"{doc.name}: {name} has no extra [{extra}]: {line}"
