"""TLS, mutual TLS and bearer tokens, end to end: the real server process with generated certificates,
talked to through the SDK and the CLI (no gRPC mocks)."""

from __future__ import annotations

import datetime as dt
import re
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

x509 = pytest.importorskip("cryptography.x509", reason="cryptography is needed to generate test certificates")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from curvecast.server import security  # noqa: E402
from curvecast_api.v1 import curvecast_pb2 as pb  # noqa: E402
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc  # noqa: E402
from curvecast_client import Client, CurvecastError, Security  # noqa: E402
from curvecast_client.cli import main as cli_main  # noqa: E402

from conftest import ServerProcess  # noqa: E402

GOOD_TOKEN = "s3cret-token-for-tests-0123456789"
OTHER_TOKEN = "second-accepted-token"


# --- certificates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key, cert) -> Issued:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert_path, key_path)


class CertificateAuthority:
    """A throwaway CA that issues server and client certificates (EC P-256, valid for a day)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.issued = _write(folder / name, self.key, self.cert)

    def issue(self, cn: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return _write(self.folder / cn, key, builder.sign(self.key, hashes.SHA256()))


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    server: Issued
    client: Issued
    rogue_ca: CertificateAuthority
    rogue_client: Issued  # a client certificate from a CA the server does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder, "curvecast-test-ca")
    rogue = CertificateAuthority(folder, "rogue-ca")
    return Pki(ca, ca.issue("localhost", server=True), ca.issue("good-client", server=False), rogue,
               rogue.issue("rogue-client", server=False))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# accepted bearer tokens\n\n  {GOOD_TOKEN}  \n{OTHER_TOKEN}\n")
    return path


@pytest.fixture(scope="module")
def tls_server(pki, token_file):
    """Server-authenticated TLS plus bearer tokens."""
    proc = ServerProcess("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                         "--auth-tokens-file", str(token_file)).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mtls_server(pki):
    """Mutual TLS: client certificates signed by the test CA are required."""
    proc = ServerProcess("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                         "--tls-client-ca", str(pki.ca.issued.cert)).wait_ready()
    yield proc
    proc.stop()


def _curve() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(10, 300, 30)
    return x, 2.0 + 4.0 * x**-0.4


def _forecast(address: str, security: Security | None) -> None:
    x, y = _curve()
    with Client(address, security=security, timeout=5.0, retries=0) as c:
        result = c.forecast(x, y, total_steps=1000)
        assert result is not None


def _code_of(address: str, security: Security | None, call: str = "forecast") -> str:
    with pytest.raises(CurvecastError) as info:
        if call == "forecast":
            _forecast(address, security)
        else:
            with Client(address, security=security, timeout=5.0, retries=0) as c:
                c.health()
    return info.value.code


# --- TLS + bearer tokens ------------------------------------------------------------------------------


def tls(pki: Pki, token: str | None = None) -> Security:
    return Security(tls=True, ca_file=str(pki.ca.issued.cert), token=token)


def test_right_token_over_tls_is_accepted(tls_server, pki):
    _forecast(tls_server.address, tls(pki, GOOD_TOKEN))
    _forecast(tls_server.address, tls(pki, OTHER_TOKEN))  # every token of the file is accepted


def test_plaintext_refused_when_tls_required(tls_server):
    assert _code_of(tls_server.address, Security(token=GOOD_TOKEN)) == "UNAVAILABLE"
    assert _code_of(tls_server.address, None, call="health") == "UNAVAILABLE"


def test_server_not_trusted_when_client_expects_another_ca(tls_server, pki):
    untrusting = Security(tls=True, ca_file=str(pki.rogue_ca.issued.cert), token=GOOD_TOKEN)
    assert _code_of(tls_server.address, untrusting) == "UNAVAILABLE"


@pytest.mark.parametrize("token", [None, "wrong-token", GOOD_TOKEN[:-1], GOOD_TOKEN + "x", "# accepted bearer tokens"])
def test_missing_or_wrong_token_is_unauthenticated(tls_server, pki, token):
    with pytest.raises(CurvecastError) as info:
        _forecast(tls_server.address, tls(pki, token))
    assert info.value.code == "UNAUTHENTICATED"
    # The refusal says nothing about the accepted tokens or the server's internals.
    assert GOOD_TOKEN not in info.value.message and "Traceback" not in info.value.message
    assert info.value.message == security._REFUSAL


def test_wrong_scheme_is_unauthenticated(tls_server, pki):
    """A token sent as Basic, or bare, is not a bearer token."""
    creds = grpc.ssl_channel_credentials(pki.ca.issued.cert.read_bytes())
    with grpc.secure_channel(tls_server.address, creds) as channel:
        stub = pb_grpc.CurvecastStub(channel)
        for header in (f"Basic {GOOD_TOKEN}", GOOD_TOKEN, "Bearer "):
            with pytest.raises(grpc.RpcError) as info:
                stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5.0, metadata=(("authorization", header),))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The same raw call with the right bearer token goes through.
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5.0,
                                 metadata=(("authorization", f"bearer {GOOD_TOKEN}"),)) is not None


def test_health_reachable_without_token(tls_server, pki):
    with Client(tls_server.address, security=tls(pki), timeout=5.0, retries=0) as c:
        assert c.health() == "SERVING"
        assert c.health("curvecast.v1.Curvecast") == "SERVING"


def test_cli_with_tls_and_token(tls_server, pki, tmp_path, capsys):
    common = ["--server", tls_server.address, "--tls", "--ca", str(pki.ca.issued.cert), "--timeout", "5"]
    assert cli_main(["info", *common, "--token", GOOD_TOKEN]) == 0
    assert cli_main(["health", *common]) == 0
    capsys.readouterr()
    assert cli_main(["info", *common, "--token", "nope"]) != 0
    assert "UNAUTHENTICATED" in capsys.readouterr().err


# --- mutual TLS ---------------------------------------------------------------------------------------


def mtls(pki: Pki, client: Issued | None) -> Security:
    return Security(tls=True, ca_file=str(pki.ca.issued.cert), cert_file=str(client.cert) if client else None,
                    key_file=str(client.key) if client else None)


def test_mtls_good_client_certificate_accepted(mtls_server, pki):
    _forecast(mtls_server.address, mtls(pki, pki.client))


def test_mtls_client_without_certificate_refused(mtls_server, pki):
    assert _code_of(mtls_server.address, mtls(pki, None)) == "UNAVAILABLE"


def test_mtls_client_certificate_from_another_ca_refused(mtls_server, pki):
    assert _code_of(mtls_server.address, mtls(pki, pki.rogue_client)) == "UNAVAILABLE"
    assert _code_of(mtls_server.address, mtls(pki, pki.rogue_client), call="health") == "UNAVAILABLE"


def test_mtls_plaintext_refused(mtls_server):
    assert _code_of(mtls_server.address, None) == "UNAVAILABLE"


def test_unknown_method_does_not_reveal_itself_without_token(tls_server, pki):
    creds = grpc.ssl_channel_credentials(pki.ca.issued.cert.read_bytes())
    with grpc.secure_channel(tls_server.address, creds) as channel:
        call = channel.unary_unary("/curvecast.v1.Curvecast/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=5.0)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=5.0, metadata=(("authorization", f"Bearer {GOOD_TOKEN}"),))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_reachable_without_token(tls_server, pki):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    creds = grpc.ssl_channel_credentials(pki.ca.issued.cert.read_bytes())
    with grpc.secure_channel(tls_server.address, creds) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=5.0))
        assert "curvecast.v1.Curvecast" in {s.name for s in resp.list_services_response.service}


# --- the pieces, in process --------------------------------------------------------------------------


def test_bearer_token_parsing():
    assert security.bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert security.bearer_token([("x-request-id", "r1"), ("authorization", "bearer  abc ")]) == "abc"
    assert security.bearer_token([("authorization", b"Bearer abc")]) == "abc"
    assert security.bearer_token([("authorization", "Basic abc")]) is None
    assert security.bearer_token([("authorization", "Bearer ")]) is None
    assert security.bearer_token([]) is None and security.bearer_token(None) is None


def test_token_store_sources_and_rotation(tmp_path, monkeypatch):
    monkeypatch.setattr(security, "_RELOAD_CHECK_S", 0.0)
    path = tmp_path / "tokens"
    path.write_text("alpha\n# beta\n\n")
    store = security.TokenStore(str(path), inline=["gamma", " "])
    assert store.accepts("alpha") and store.accepts("gamma")
    assert not store.accepts("beta") and not store.accepts("# beta") and not store.accepts("")
    assert not store.accepts(None)

    # A rotated file (new inode, as a Kubernetes Secret update does) takes effect without a restart.
    new = tmp_path / "tokens.new"
    new.write_text("delta\n")
    new.replace(path)
    assert store.accepts("delta") and not store.accepts("alpha") and store.accepts("gamma")

    # A file that vanishes mid-rotation keeps the current tokens instead of failing open or closed.
    path.unlink()
    assert store.accepts("delta")


def test_token_store_refuses_empty_or_unreadable_configuration(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="no token"):
        security.TokenStore(str(empty))
    with pytest.raises(ValueError, match="cannot read"):
        security.TokenStore(str(tmp_path / "missing"))


def test_server_credentials_need_cert_and_key(pki, tmp_path):
    from curvecast.server.config import Settings

    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        security.server_credentials(Settings(tls_cert=str(pki.server.cert)))
    with pytest.raises(ValueError, match="cannot read"):
        security.server_credentials(Settings(tls_cert=str(tmp_path / "nope.crt"), tls_key=str(pki.server.key)))
    not_pem = tmp_path / "bad.crt"
    not_pem.write_text("not a certificate")
    with pytest.raises(ValueError, match="PEM"):
        security.server_credentials(Settings(tls_cert=str(not_pem), tls_key=str(pki.server.key)))


async def _watch_without_token() -> grpc.StatusCode:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    store = security.TokenStore(inline=["t0k"])
    server = grpc.aio.server(interceptors=[security.TokenAuthInterceptor(store, exempt=())])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            ok = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5.0, metadata=(("authorization", "Bearer t0k"),))
            assert ok.status == health_pb2.HealthCheckResponse.SERVING
            try:
                async for _ in stub.Watch(health_pb2.HealthCheckRequest(), timeout=5.0):
                    return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()
    finally:
        await server.stop(0)
    return grpc.StatusCode.UNKNOWN


def test_streaming_methods_are_refused_too():
    """Only the exempt prefixes skip the check: a server-streaming call without a token is refused."""
    import asyncio

    assert asyncio.run(_watch_without_token()) == grpc.StatusCode.UNAUTHENTICATED


async def _refused_call_with_metrics_outermost() -> tuple[grpc.StatusCode, float]:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from curvecast.server import metrics
    from curvecast.server.interceptors import MetricsInterceptor

    labels = ("unary", "grpc.health.v1.Health", "Check", "UNAUTHENTICATED")
    before = metrics.HANDLED.labels(*labels)._value.get()
    store = security.TokenStore(inline=["t0k"])
    server = grpc.aio.server(interceptors=[MetricsInterceptor(), security.TokenAuthInterceptor(store, exempt=())])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5.0)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
    finally:
        await server.stop(0)
    return code, metrics.HANDLED.labels(*labels)._value.get() - before


def test_refused_calls_are_counted_when_metrics_interceptor_is_outermost():
    """With MetricsInterceptor first and the token check second, refusals show up as UNAUTHENTICATED."""
    import asyncio

    code, counted = asyncio.run(_refused_call_with_metrics_outermost())
    assert code == grpc.StatusCode.UNAUTHENTICATED and counted == 1


def test_server_counts_refused_calls(tls_server, pki):
    import urllib.request

    with pytest.raises(CurvecastError):
        _forecast(tls_server.address, tls(pki, "wrong-token"))
    text = urllib.request.urlopen(f"http://127.0.0.1:{tls_server.metrics_port}/metrics", timeout=10).read().decode()
    assert re.search(r'grpc_server_handled_total\{[^}]*grpc_code="UNAUTHENTICATED"[^}]*\} [1-9]', text)
