"""Transport security and bearer-token authentication for the gRPC server.

TLS uses the server certificate and key; a client CA turns on mutual TLS (a client without a
certificate signed by that CA fails the handshake, before any RPC exists). Bearer tokens are checked
by an interceptor: every call except health checks and reflection must carry
``authorization: Bearer <token>``. Probes (kubelet, load balancers) therefore keep working without
credentials, and a refused call learns nothing beyond UNAUTHENTICATED.

Tokens come from a file (one per line; blank lines and ``#`` comments ignored) and/or from the
``auth_tokens`` setting (comma-separated, env ``CURVECAST_AUTH_TOKENS``). The file is re-read when it
changes, so a rotated Kubernetes Secret takes effect without a restart. Tokens are compared as SHA-256
digests with ``hmac.compare_digest`` against every accepted token, so timing reveals neither a token's
prefix nor its length nor which token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterable

import grpc

from .interceptors import PROBE_PREFIXES, refusing_handler

log = logging.getLogger("curvecast.security")

# Methods reachable without a token: probes must work, and reflection only describes the public API.
EXEMPT_PREFIXES: tuple[str, ...] = PROBE_PREFIXES
_REFUSAL = "missing or invalid bearer token"
_RELOAD_CHECK_S = 2.0


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None


def server_credentials(settings) -> grpc.ServerCredentials:
    """TLS credentials from the settings; mutual TLS (client certificate required) when a client CA is set."""
    if not settings.tls_cert or not settings.tls_key:
        raise ValueError("TLS needs both tls_cert and tls_key (server certificate and private key, PEM)")
    cert = _read(settings.tls_cert, "TLS certificate")
    key = _read(settings.tls_key, "TLS private key")
    if b"-----BEGIN" not in cert or b"-----BEGIN" not in key:
        raise ValueError("tls_cert and tls_key must be PEM files")
    client_ca = _read(settings.tls_client_ca, "client CA bundle") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def parse_tokens(text: str) -> list[str]:
    """Tokens of a token file: one per line, surrounding whitespace stripped, blanks and # comments skipped."""
    out = []
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            out.append(token)
    return out


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenStore:
    """Accepted tokens, as digests; re-reads the token file when its modification time or inode changes."""

    def __init__(self, path: str = "", inline: Iterable[str] = ()) -> None:
        self._path = path
        self._inline = [t.strip() for t in inline if t.strip()]
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._digests: tuple[bytes, ...] = ()
        self._failing = False
        self._load(initial=True)

    @classmethod
    def from_settings(cls, settings) -> "TokenStore":
        inline = str(settings.auth_tokens or "").split(",")
        return cls(settings.auth_tokens_file, inline)

    def _file_stamp(self) -> tuple[int, int]:
        st = os.stat(self._path)
        return (st.st_mtime_ns, st.st_ino)

    def _load(self, initial: bool = False) -> None:
        tokens = list(self._inline)
        if self._path:
            try:
                stamp = self._file_stamp()
                tokens += parse_tokens(Path(self._path).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                if initial:
                    raise ValueError(f"cannot read auth tokens file {self._path!r}: {exc}") from None
                if not self._failing:  # once per outage, not every check
                    log.error("cannot re-read auth tokens file, keeping the current tokens: %s", exc)
                self._failing = True
                return
            self._stamp = stamp
            self._failing = False
        if initial and not tokens:
            raise ValueError("token authentication is enabled but no token is configured")
        if not initial:
            log.info("auth tokens reloaded: %d accepted", len(tokens))
        self._digests = tuple(_digest(t) for t in tokens)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self._path or now - self._checked < _RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            changed = self._file_stamp() != self._stamp
        except OSError:
            changed = True  # gone or mid-swap: _load logs and keeps the current set
        if changed:
            self._load()

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, token: str | None) -> bool:
        self._maybe_reload()
        candidate = _digest(token or "")
        ok = False
        for digest in self._digests:  # no early exit: time does not depend on which token matched
            ok |= hmac.compare_digest(candidate, digest)
        return ok and bool(token)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without an accepted bearer token (UNAUTHENTICATED); health and reflection stay open."""

    def __init__(self, store: TokenStore, exempt: tuple[str, ...] = EXEMPT_PREFIXES) -> None:
        self._store = store
        self._exempt = exempt

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(self._exempt):
            return await continuation(handler_call_details)
        if self._store.accepts(bearer_token(handler_call_details.invocation_metadata)):
            return await continuation(handler_call_details)
        # Unknown methods get UNAUTHENTICATED too, so an unauthenticated caller cannot probe the API.
        # The body is never decoded, so malformed bytes also get UNAUTHENTICATED, not INVALID_ARGUMENT.
        return refusing_handler(await continuation(handler_call_details), grpc.StatusCode.UNAUTHENTICATED,
                                _REFUSAL)


def token_interceptor(settings) -> grpc.aio.ServerInterceptor:
    """The bearer-token interceptor for the configured token file and/or inline tokens."""
    store = TokenStore.from_settings(settings)
    if not settings.tls_cert:
        log.warning("bearer tokens are enabled without TLS: tokens cross the network in clear text "
                    "(acceptable only behind a TLS-terminating proxy or an mTLS service mesh)")
    log.info("bearer-token authentication on: %d token(s) accepted; health and reflection exempt", len(store))
    return TokenAuthInterceptor(store)
