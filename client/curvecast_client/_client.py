"""Synchronous and asynchronous Curvecast clients."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc

from . import _convert
from ._channel import Security, channel_options, target_of, to_error
from ._types import CurvecastError, FieldViolation, Forecast, ModelInfo, ScalingFit

_CODES = {c.value[0]: c.name for c in grpc.StatusCode}


def _batch_results(resp: pb.ForecastBatchResponse) -> list[Forecast | CurvecastError]:
    out: list[Forecast | CurvecastError] = []
    for item in resp.results:
        if item.HasField("response"):
            out.append(_convert.forecast_result(item.response))
        else:
            e = item.error
            out.append(CurvecastError(_CODES.get(e.code, str(e.code)), e.message,
                                      tuple(FieldViolation(f.field, f.description) for f in e.field_errors)))
    return out


class _Base:
    def __init__(self, target: str | Sequence[str], *, timeout: float, retries: int, security: Security | None,
                 options: Sequence[tuple[str, Any]]) -> None:
        self.target = target_of(target)
        self.timeout = timeout
        self.security = security or Security()
        self._options = channel_options(retries) + list(options)
        if self.security.server_name:
            self._options.append(("grpc.ssl_target_name_override", self.security.server_name))

    def _metadata(self, request_id: str = "") -> tuple[tuple[str, str], ...]:
        md = self.security.metadata()
        return md + ((("x-request-id", request_id),) if request_id else ())


class Client(_Base):
    """Blocking client. ``target`` is "host:port", a comma-separated list, or a list of addresses."""

    def __init__(self, target: str | Sequence[str] = "localhost:50051", *, timeout: float = 10.0, retries: int = 3,
                 security: Security | None = None, options: Sequence[tuple[str, Any]] = ()) -> None:
        super().__init__(target, timeout=timeout, retries=retries, security=security, options=options)
        creds = self.security.credentials()
        self._channel = (grpc.secure_channel(self.target, creds, self._options) if creds is not None
                         else grpc.insecure_channel(self.target, self._options))
        self._stub = pb_grpc.CurvecastStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _call(self, method, request, timeout: float | None, request_id: str = ""):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata(request_id))
        except grpc.RpcError as exc:
            raise to_error(exc) from None

    def forecast(self, x: Iterable[float], y: Iterable[float], *, timeout: float | None = None,
                 **kwargs: Any) -> Forecast:
        """Forecast one run. Keyword arguments are those of ``curvecast_client.forecast_request``."""
        req = _convert.forecast_request(x, y, **kwargs)
        return _convert.forecast_result(self._call(self._stub.Forecast, req, timeout, req.request_id))

    def forecast_batch(self, runs: Sequence[Mapping[str, Any]], *,
                       timeout: float | None = None) -> list[Forecast | CurvecastError]:
        """Forecast many runs (each a dict with ``x``, ``y`` and keyword arguments); per-item errors."""
        req = _convert.forecast_batch_request(runs)
        return _batch_results(self._call(self._stub.ForecastBatch, req, timeout))

    def fit_scaling_law(self, points: Iterable[Mapping[str, Any]], *, timeout: float | None = None,
                        **kwargs: Any) -> ScalingFit:
        req = _convert.scaling_request(points, **kwargs)
        return _convert.scaling_result(self._call(self._stub.FitScalingLaw, req, timeout or max(self.timeout, 60)))

    def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        return _convert.model_info(self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """"SERVING", "NOT_SERVING", ... for the server ("") or a named service."""
        resp = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client with the same methods as :class:`Client`, as coroutines."""

    def __init__(self, target: str | Sequence[str] = "localhost:50051", *, timeout: float = 10.0, retries: int = 3,
                 security: Security | None = None, options: Sequence[tuple[str, Any]] = ()) -> None:
        super().__init__(target, timeout=timeout, retries=retries, security=security, options=options)
        creds = self.security.credentials()
        self._channel = (grpc.aio.secure_channel(self.target, creds, self._options) if creds is not None
                         else grpc.aio.insecure_channel(self.target, self._options))
        self._stub = pb_grpc.CurvecastStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def _call(self, method, request, timeout: float | None, request_id: str = ""):
        call = method(request, timeout=timeout or self.timeout, metadata=self._metadata(request_id))
        try:
            return await call
        except grpc.RpcError as exc:
            from grpc_status import rpc_status

            try:
                status = await rpc_status.aio.from_call(call)
            except Exception:  # noqa: BLE001
                status = None
            raise to_error(exc, status) from None

    async def forecast(self, x: Iterable[float], y: Iterable[float], *, timeout: float | None = None,
                       **kwargs: Any) -> Forecast:
        req = _convert.forecast_request(x, y, **kwargs)
        return _convert.forecast_result(await self._call(self._stub.Forecast, req, timeout, req.request_id))

    async def forecast_batch(self, runs: Sequence[Mapping[str, Any]], *,
                             timeout: float | None = None) -> list[Forecast | CurvecastError]:
        req = _convert.forecast_batch_request(runs)
        return _batch_results(await self._call(self._stub.ForecastBatch, req, timeout))

    async def fit_scaling_law(self, points: Iterable[Mapping[str, Any]], *, timeout: float | None = None,
                              **kwargs: Any) -> ScalingFit:
        req = _convert.scaling_request(points, **kwargs)
        return _convert.scaling_result(await self._call(self._stub.FitScalingLaw, req,
                                                        timeout or max(self.timeout, 60)))

    async def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        return _convert.model_info(await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        resp = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
