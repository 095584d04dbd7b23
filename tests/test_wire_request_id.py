"""Request ids travel as the ``x-request-id`` gRPC header, whose values are printable ASCII: the SDK and the CLI
refuse any other id before sending, naming the field, instead of failing in the transport ("INTERNAL: Invalid
metadata"). The address used has no server behind it, so any attempt to send would fail as UNAVAILABLE."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from curvecast_client import AsyncClient, Client, CurvecastError, InvalidArgument, forecast_request
from curvecast_client.cli import EXIT_USAGE
from curvecast_client.cli import main as cli_main

X, Y = [10.0, 20.0, 30.0, 40.0], [3.0, 2.6, 2.4, 2.3]
BAD_IDS = ["trial\n42", "trial-42\r", "tab\there", "caf\u00e9", "\x7f"]


@pytest.fixture(scope="module")
def nowhere() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def assert_refused_locally(err: InvalidArgument, field: str) -> None:
    assert isinstance(err, CurvecastError) and isinstance(err, ValueError)
    assert err.code == "INVALID_ARGUMENT"
    assert [v.field for v in err.violations] == [field]
    assert "printable ASCII" in err.violations[0].description
    assert field in str(err)


@pytest.mark.parametrize("request_id", BAD_IDS)
def test_sdk_refuses_an_id_that_is_no_header_value(nowhere, request_id):
    with Client(nowhere, retries=0, timeout=5) as c, pytest.raises(InvalidArgument) as err:
        c.forecast(X, Y, total_steps=100, request_id=request_id)
    assert_refused_locally(err.value, "request_id")


def test_async_sdk_refuses_it_too(nowhere):
    async def go() -> InvalidArgument:
        async with AsyncClient(nowhere, retries=0, timeout=5) as c:
            with pytest.raises(InvalidArgument) as err:
                await c.forecast(X, Y, total_steps=100, request_id="a\nb")
            return err.value

    assert_refused_locally(asyncio.run(go()), "request_id")


def test_batch_and_scaling_ids_are_checked_and_named(nowhere):
    with Client(nowhere, retries=0, timeout=5) as c:
        with pytest.raises(InvalidArgument) as err:
            c.forecast_batch([{"x": X, "y": Y, "request_id": "ok"}, {"x": X, "y": Y, "request_id": "bad\nid"}])
        assert_refused_locally(err.value, "requests[1].request_id")
        with pytest.raises(InvalidArgument) as err:
            c.fit_scaling_law([{"n_params": 1e8, "tokens": 1e9, "loss": 3.0}], request_id="bad\nid")
        assert_refused_locally(err.value, "request_id")


def test_printable_ids_pass_unchanged():
    rid = "trial 42/opt:lr=3e-4 #7 ~ok"
    assert forecast_request(X, Y, request_id=rid).request_id == rid


def test_cli_exits_with_the_bad_input_code_naming_the_flag(nowhere, tmp_path, capsys):
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"x": X, "y": Y}))
    code = cli_main(["forecast", str(curve), "--server", nowhere, "--total-steps", "100", "--request-id", "a\nb"])
    assert code == EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert "--request-id" in err and "printable ASCII" in err and "server refused" not in err
