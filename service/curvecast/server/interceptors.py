"""Server interceptors: Prometheus RPC metrics and request-id logging, the drain gate, and the guard that
turns undecodable request bodies into INVALID_ARGUMENT.

grpc.aio's AbortError is not an RpcError, so the status is read from the context in ``finally``;
a cancelled call (client gone, deadline passed) is counted as CANCELLED, not UNKNOWN.

Order on the server (outermost first): metrics, drain, token check (when on), decode guard. Every call
is therefore counted, a draining server refuses late calls before anything else runs, and an
unauthenticated caller learns UNAUTHENTICATED whatever bytes it sent (refusals never decode the body).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

from . import metrics

log = logging.getLogger("curvecast.access")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]

# Probes and API discovery: reachable without a token, and still answered while draining (health says
# NOT_SERVING, which is what a load balancer needs to hear).
PROBE_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
DRAIN_REFUSAL = "server is shutting down; retry (another replica will answer)"


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


def refusing_handler(like: grpc.RpcMethodHandler | None, code: grpc.StatusCode,
                     message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``like`` that fails with ``code`` without running anything. It has no
    request deserializer: a refused call's body is never parsed (cheap, and malformed bytes cannot turn
    the refusal into another error)."""

    async def refuse(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    ser = like.response_serializer if like is not None else None
    if like is None or like.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, response_serializer=ser)
    if like.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, response_serializer=ser)
    if like.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=ser)
    return grpc.stream_stream_rpc_method_handler(refuse, response_serializer=ser)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Continuation,
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


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """Counts the calls the server has taken up from gRPC and tracks the ones still running, so a drain can
    (1) serve every call gRPC had received when the drain began, even those still waiting inside gRPC,
    (2) refuse the calls that came later with UNAVAILABLE (retryable: no work was done), (3) know when
    the admitted work is done, and (4) say how many calls a drain that ran out of time cut.

    Why (1) needs counting: grpc core cancels (CANCELLED, not retryable) every call it has received but
    the application has not yet asked for when the server's shutdown begins (grpc/grpc#41785), and under
    load hundreds wait there, because grpc.aio asks for one call per method at a time."""

    def __init__(self, open_prefixes: tuple[str, ...] = PROBE_PREFIXES) -> None:
        self._open = open_prefixes
        self.seen = 0  # calls taken up from gRPC so far, all methods
        self._last_admitted: int | None = None  # while draining: calls beyond this number are refused
        self._tasks: set[asyncio.Task] = set()  # every call in progress
        self._work: set[asyncio.Task] = set()  # admitted API calls in progress (not probes, not refusals)

    @property
    def active(self) -> int:
        """Calls taken up from gRPC whose handling has not finished (probes and refusals included)."""
        return len(self._tasks)

    @property
    def working(self) -> int:
        """Admitted API calls still running: what a drain waits for (a probe's Watch stream is not)."""
        return len(self._work)

    def refuse_after(self, received: int) -> None:
        """Start draining: calls after the ``received``-th are refused with UNAVAILABLE (probes stay open)."""
        self._last_admitted = received

    async def wait_finished(self, timeout: float) -> None:
        """Wait for the handlers still unwinding (e.g. after the grace period cut them), so the process does
        not tear them down mid-call (asyncio.run would cancel them and grpc log each one)."""
        pending = {t for t in self._tasks if t is not asyncio.current_task()}
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def intercept_service(self, continuation: Continuation,
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        self.seen += 1
        ordinal = self.seen
        probe = (handler_call_details.method or "").startswith(self._open)
        late = self._last_admitted is not None and ordinal > self._last_admitted and not probe
        task = asyncio.current_task()  # interceptors run inside the call's own task
        if task is not None:
            self._track(task, self._tasks)
            if not probe and not late:
                self._track(task, self._work)
        handler = await continuation(handler_call_details)
        if late:
            metrics.REJECTED.labels("draining").inc()
            return refusing_handler(handler, grpc.StatusCode.UNAVAILABLE, DRAIN_REFUSAL)
        return handler

    @staticmethod
    def _track(task: asyncio.Task, tasks: set[asyncio.Task]) -> None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler can answer INVALID_ARGUMENT
    itself instead of grpc logging a traceback and answering UNKNOWN."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _type_name(deserializer: Callable[[bytes], Any], method: str) -> str:
    """``curvecast.v1.ForecastRequest`` for ``ForecastRequest.FromString``; the method when unknown."""
    cls = getattr(deserializer, "__self__", None)
    descriptor = getattr(cls, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "") or f"request message of {method}"


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    """Malformed request bytes become INVALID_ARGUMENT "request body is not a valid <type>" (counted like any
    other status, no traceback); placed innermost, so the token check answers first. Covers handlers with
    a single request message (unary-unary, unary-stream): every Curvecast RPC and health."""

    async def intercept_service(self, continuation: Continuation,
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        message = f"request body is not a valid {_type_name(handler.request_deserializer, handler_call_details.method)}"
        deserializer = _tolerant(handler.request_deserializer)
        ser = handler.response_serializer
        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            return grpc.unary_unary_rpc_method_handler(_guard_unary(handler.unary_unary, message),
                                                       request_deserializer=deserializer, response_serializer=ser)
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(_guard_stream_gen(handler.unary_stream, message),
                                                        request_deserializer=deserializer, response_serializer=ser)
        if handler.unary_stream is not None and inspect.iscoroutinefunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(_guard_unary(handler.unary_stream, message),
                                                        request_deserializer=deserializer, response_serializer=ser)
        return handler  # a synchronous handler: left as grpc runs it


async def _reject_undecodable(context: grpc.aio.ServicerContext, message: str) -> None:
    metrics.REJECTED.labels("malformed").inc()
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def _guard_unary(inner: Callable[..., Awaitable[Any]], message: str) -> Callable[..., Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _UNDECODABLE:
            await _reject_undecodable(context, message)
        return await inner(request, context)

    return guarded


def _guard_stream_gen(inner: Callable[..., Any], message: str) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _UNDECODABLE:
            await _reject_undecodable(context, message)
        async for response in inner(request, context):
            yield response

    return guarded
