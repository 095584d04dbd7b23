"""Request bodies that are not valid protobuf, sent to the real server process over a raw channel (bytes in,
no serializer): INVALID_ARGUMENT naming the message type, counted in grpc_server_handled_total, one access-log
line and no traceback per call, and UNAUTHENTICATED first when bearer tokens are on."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Callable

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess

GARBAGE = b"\xff\xff\xff"  # a truncated varint tag: no protobuf message parses it
SERVICE = "curvecast.v1.Curvecast"
REQUEST_TYPES = {
    "Forecast": "curvecast.v1.ForecastRequest",
    "ForecastBatch": "curvecast.v1.ForecastBatchRequest",
    "FitScalingLaw": "curvecast.v1.FitScalingLawRequest",
    "GetModelInfo": "curvecast.v1.GetModelInfoRequest",
}
TOKEN = "wire-test-token"


class Output:
    """Every line the server writes from now on, collected by a thread so a test can wait for a line."""

    def __init__(self, server: ServerProcess) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(server,), daemon=True).start()

    def _read(self, server: ServerProcess) -> None:
        assert server.proc.stdout is not None
        for line in server.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pred: Callable[[str], bool], start: int = 0, timeout: float = 30.0) -> int:
        """Index of the first line from ``start`` on that satisfies ``pred``, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i in range(start, len(self.lines)):
                    if pred(self.lines[i]):
                        return i
                left = deadline - time.monotonic()
                assert left > 0, f"no such server log line; got: {self.lines[start:]}"
                self._changed.wait(left)


def access_line(method: str, code: str) -> Callable[[str], bool]:
    def matches(line: str) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return record.get("msg") == "rpc" and record.get("rpc") == f"{SERVICE}/{method}" and record.get("code") == code

    return matches


def handled(server: ServerProcess, method: str, code: str, service: str = SERVICE) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "grpc_server_handled_total" and s.labels == {
                    "grpc_type": "unary", "grpc_service": service, "grpc_method": method, "grpc_code": code}:
                return s.value
    return 0.0


def wait_counted(server: ServerProcess, method: str, code: str, expected: float, service: str = SERVICE) -> None:
    deadline = time.monotonic() + 30
    while handled(server, method, code, service) < expected:
        assert time.monotonic() < deadline, f"{method} {code} never reached {expected}"
        time.sleep(0.02)
    assert handled(server, method, code, service) == expected


def raw_call(address: str, path: str, body: bytes = GARBAGE, metadata: tuple = ()) -> grpc.RpcError:
    """One call whose bytes go out exactly as given (no request serializer); returns its error."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(path)
        with pytest.raises(grpc.RpcError) as err:
            call(body, timeout=30, metadata=metadata)
    return err.value


@pytest.fixture(scope="module")
def plain():
    """A server logging JSON (so every access-log line can be read back) without authentication."""
    server = ServerProcess("--log-format", "json", "--model", "/nonexistent/model.onnx").wait_ready()
    yield server, Output(server)
    server.stop()


@pytest.fixture(scope="module")
def authed():
    server = ServerProcess("--auth-tokens", TOKEN, "--model", "/nonexistent/model.onnx").wait_ready()
    yield server
    server.stop()


@pytest.mark.parametrize("method", sorted(REQUEST_TYPES))
def test_malformed_body_is_invalid_argument_naming_the_type(plain, method):
    server, _ = plain
    err = raw_call(server.address, f"/{SERVICE}/{method}")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"request body is not a valid {REQUEST_TYPES[method]}"


@pytest.mark.parametrize("method", sorted(REQUEST_TYPES))
def test_malformed_body_is_counted_and_logged_once_without_traceback(plain, method):
    server, out = plain
    before = handled(server, method, "INVALID_ARGUMENT")
    start = len(out.lines)
    raw_call(server.address, f"/{SERVICE}/{method}")
    wait_counted(server, method, "INVALID_ARGUMENT", before + 1)
    first = out.wait_for(access_line(method, "INVALID_ARGUMENT"), start)
    # a good call after it bounds the window: every line the bad call caused is written before this one's
    with grpc.insecure_channel(server.address) as channel:
        channel.unary_unary(f"/{SERVICE}/GetModelInfo")(b"", timeout=30)
    end = out.wait_for(access_line("GetModelInfo", "OK"), first + 1)
    assert out.lines[start:end] == [out.lines[first]]  # the access-log line, and nothing else
    assert not [line for line in out.lines if "Traceback" in line or "DecodeError" in line]


def test_malformed_health_check_is_invalid_argument_too(plain):
    server, _ = plain
    before = handled(server, "Check", "INVALID_ARGUMENT", "grpc.health.v1.Health")
    err = raw_call(server.address, "/grpc.health.v1.Health/Check")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "request body is not a valid grpc.health.v1.HealthCheckRequest"
    wait_counted(server, "Check", "INVALID_ARGUMENT", before + 1, "grpc.health.v1.Health")


def test_one_malformed_call_does_not_harm_the_next(plain):
    server, _ = plain
    from curvecast_client import Client

    raw_call(server.address, f"/{SERVICE}/Forecast")
    with Client(server.address, retries=0) as c:
        assert c.forecast([10, 20, 30, 40, 50], [3.0, 2.6, 2.4, 2.3, 2.25], total_steps=200).predictions


@pytest.mark.parametrize("method", sorted(REQUEST_TYPES))
def test_token_check_answers_before_the_body_is_decoded(authed, method):
    before = handled(authed, method, "UNAUTHENTICATED")
    err = raw_call(authed.address, f"/{SERVICE}/{method}")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    wait_counted(authed, method, "UNAUTHENTICATED", before + 1)
    with_token = raw_call(authed.address, f"/{SERVICE}/{method}", metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert with_token.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert with_token.details() == f"request body is not a valid {REQUEST_TYPES[method]}"
