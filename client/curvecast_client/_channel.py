"""Channel set-up shared by the sync and async clients: targets, retries, load balancing, credentials.

Retries use gRPC's own retry policy (exponential backoff with jitter), and only for codes that are safe
to retry because the server did no work: UNAVAILABLE and RESOURCE_EXHAUSTED. A refused call's retry waits
the server's ``grpc-retry-pushback-ms`` (the same delay as its RetryInfo) instead of the local backoff. Several addresses (or a
``dns:///`` name of a headless Kubernetes service) are balanced client-side with round_robin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import grpc
from grpc_status import rpc_status

from ._types import CurvecastError, FieldViolation

SERVICE = "curvecast.v1.Curvecast"


@dataclass(frozen=True)
class Security:
    """TLS / mutual TLS / bearer token settings for a client."""

    tls: bool = False
    ca_file: str | None = None  # CA that signed the server certificate (default: system roots)
    cert_file: str | None = None  # client certificate for mutual TLS
    key_file: str | None = None
    token: str | None = None  # sent as "authorization: Bearer <token>"
    server_name: str | None = None  # override the TLS server name (e.g. when dialling an IP)

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not (self.tls or self.ca_file or self.cert_file):
            return None
        read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def target_of(addresses: str | Sequence[str]) -> str:
    """One address as is; several become an ``ipv4:``/``ipv6:`` list balanced round-robin."""
    if isinstance(addresses, str):
        parts = [a.strip() for a in addresses.split(",") if a.strip()]
    else:
        parts = list(addresses)
    if not parts:
        raise ValueError("no server address given")
    if len(parts) == 1:
        return parts[0]
    return "ipv4:" + ",".join(p.replace("localhost", "127.0.0.1") for p in parts)


def channel_options(retries: int, max_message_mb: int = 16) -> list[tuple[str, Any]]:
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": SERVICE}, {"service": "grpc.health.v1.Health"}],
            "retryPolicy": {
                "maxAttempts": max(2, min(retries + 1, 5)),
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2.0,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
            },
        }] if retries > 0 else [],
    }
    size = max_message_mb * 1024 * 1024
    return [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1 if retries > 0 else 0),
            ("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_permit_without_calls", 0)]


def to_error(exc: grpc.RpcError, status: Any = None) -> CurvecastError:
    """Turn a failed call into a CurvecastError with the field violations of a BadRequest detail."""
    from google.rpc import error_details_pb2

    code = exc.code().name if hasattr(exc, "code") and exc.code() is not None else "UNKNOWN"
    message = exc.details() if hasattr(exc, "details") else str(exc)
    violations: list[FieldViolation] = []
    retry_after = None
    if status is None:
        try:
            status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - malformed details must not hide the real error
            status = None
    for detail in getattr(status, "details", ()):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            violations += [FieldViolation(v.field, v.description) for v in br.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            detail.Unpack(ri)
            retry_after = ri.retry_delay.ToNanoseconds() / 1e9
    return CurvecastError(code, message or "", tuple(violations), retry_after)
