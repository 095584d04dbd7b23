"""Server interceptors: Prometheus RPC metrics and request-id logging.

grpc.aio's AbortError is not an RpcError, so the status is read from the context in ``finally``;
a cancelled call (client gone, deadline passed) is counted as CANCELLED, not UNKNOWN.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import grpc

from . import metrics

log = logging.getLogger("curvecast.access")


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/", 2) if method.count("/") >= 2 else ("", "unknown", method)
    return service, name


def _code_name(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> str:
    code = context.code()
    if code is None:
        return default.name
    if isinstance(code, grpc.StatusCode):
        return code.name
    for status in grpc.StatusCode:  # some grpc versions report the integer value
        if status.value[0] == code:
            return status.name
    return str(code)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _split(handler_call_details.method)
        inner = handler.unary_unary
        request_id = str(dict(handler_call_details.invocation_metadata or ()).get("x-request-id", ""))[:128]

        async def wrapped(request, context: grpc.aio.ServicerContext):
            labels = ("unary", service, method)
            metrics.STARTED.labels(*labels).inc()
            start = time.perf_counter()
            default = grpc.StatusCode.OK
            try:
                if request_id:  # echo the caller's id so it can match logs on both sides
                    await context.send_initial_metadata((("x-request-id", request_id),))
                return await inner(request, context)
            except asyncio.CancelledError:
                default = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                default = grpc.StatusCode.UNKNOWN
                raise
            finally:
                elapsed = time.perf_counter() - start
                code = _code_name(context, default)
                metrics.HANDLED.labels(*labels, code).inc()
                metrics.HANDLING_SECONDS.labels(*labels).observe(elapsed)
                rid = request_id or getattr(request, "request_id", "")
                log.info("rpc", extra={"rpc": f"{service}/{method}", "code": code, "ms": round(elapsed * 1e3, 2),
                                       "request_id": rid})

        return grpc.unary_unary_rpc_method_handler(wrapped, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)
