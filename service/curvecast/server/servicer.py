"""The gRPC servicer: converts wire messages to domain queries, awaits the data plane, converts back.

Domain errors map to status codes in one place (``_abort``); INVALID_ARGUMENT carries a
``google.rpc.BadRequest`` listing every bad field. Stack traces never reach clients.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from curvecast_api.v1 import curvecast_pb2 as pb
from curvecast_api.v1 import curvecast_pb2_grpc as pb_grpc

from .. import __version__
from ..admission import CurveSize
from ..dataplane import DataPlane, ForecastResult
from ..domain.curve import DEFAULT_QUANTILES, StopPolicy
from ..domain.errors import DeadlineExceeded, EngineUnavailable, InvalidRequest, Overloaded
from ..domain.validation import Limits
from ..scaling.cancel import SHUTDOWN, Cancelled
from . import converters, metrics

log = logging.getLogger("curvecast.server")

_CODE_OF = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED: code_pb2.CANCELLED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
}


def classify(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map a domain exception to a status code and a client-safe message."""
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, EngineUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, (DeadlineExceeded, TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded"
    if isinstance(exc, Cancelled):  # work stopped: the server drains, or nobody waits any more
        return (grpc.StatusCode.UNAVAILABLE if exc.reason == SHUTDOWN else grpc.StatusCode.CANCELLED), str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server logs"


def _status(exc: BaseException) -> status_pb2.Status:
    code, message = classify(exc)
    st = status_pb2.Status(code=_CODE_OF.get(code, code_pb2.INTERNAL), message=message[:2000])
    if isinstance(exc, InvalidRequest):
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations]))
        st.details.append(detail)
    if isinstance(exc, Overloaded):
        detail = any_pb2.Any()
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromNanoseconds(int(exc.retry_after_s * 1e9))
        detail.Pack(delay)
        st.details.append(detail)
    return st


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    code, _ = classify(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("unexpected error in %s", method, exc_info=exc)
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        metrics.REJECTED.labels("overloaded").inc()
    status = rpc_status.to_status(_status(exc))
    if isinstance(exc, Overloaded):  # gRPC's own retry policy waits this long (the SDK retries that way)
        pushback = (("grpc-retry-pushback-ms", str(max(int(exc.retry_after_s * 1000), 1))),)
        status = status._replace(trailing_metadata=status.trailing_metadata + pushback)
    await context.abort_with_status(status)


def _respond(result: ForecastResult, request_id: str = "") -> pb.ForecastResponse:
    """Wire response for one result; runs in the data plane's worker thread (see ``DataPlane.forecast_many``)."""
    metrics.RECOMMENDATIONS.labels(result.recommendation.action.value).inc()
    return converters.forecast_response(result, request_id)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _batch_sizes(request: pb.ForecastBatchRequest, grid_points: int) -> list[CurveSize]:
    """Lower bounds of the items' sizes from the raw message (repeated-field lengths: no decoding)."""
    n_levels = len(DEFAULT_QUANTILES)
    return [CurveSize.lower_bound(len(r.query_x), len(r.quantiles), grid_points, n_levels) for r in request.requests]


class CurvecastServicer(pb_grpc.CurvecastServicer):
    def __init__(self, dataplane: DataPlane, limits: Limits, policy_defaults: StopPolicy) -> None:
        self._dp = dataplane
        self._limits = limits
        self._policy = policy_defaults

    async def Forecast(self, request: pb.ForecastRequest, context: grpc.aio.ServicerContext) -> pb.ForecastResponse:
        try:
            query = converters.forecast_query(request, self._limits, self._policy)
            return await self._dp.forecast(query, _deadline(context), post=partial(_respond, request_id=request.request_id))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a clean status
            await _abort(context, exc, "Forecast")
            raise  # unreachable: abort raises

    async def ForecastBatch(self, request: pb.ForecastBatchRequest,
                            context: grpc.aio.ServicerContext) -> pb.ForecastBatchResponse:
        try:
            n = len(request.requests)
            if n > self._limits.max_batch_requests:
                raise InvalidRequest.single("requests", f"has {n} items; the limit is {self._limits.max_batch_requests}")
            st = self._dp.settings
            self._dp.precheck(_batch_sizes(request, st.decision_grid_inside + st.decision_grid_beyond),
                              _deadline(context))
            items: list[pb.ForecastBatchItem | None] = [None] * n
            queries, where = await self._dp.offload(self._validate_batch, request, items)
            ids = [request.requests[i].request_id for i in where]
            results = await self._dp.forecast_many(queries, _deadline(context), post=_respond) if queries else []
            return await self._dp.offload(self._batch_response, items, where, results, ids)
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc, "ForecastBatch")
            raise

    def _validate_batch(self, request: pb.ForecastBatchRequest, items: list) -> tuple[list, list[int]]:
        """Runs in the data plane's worker thread: a 1,000-item batch must not stall the event loop."""
        queries, where = [], []
        for i, req in enumerate(request.requests):
            try:
                queries.append(converters.forecast_query(req, self._limits, self._policy))
                where.append(i)
            except InvalidRequest as exc:
                prefixed = converters.prefix_violations(exc, f"requests[{i}].")
                items[i] = pb.ForecastBatchItem(error=converters.batch_error(code_pb2.INVALID_ARGUMENT, prefixed))
        return queries, where

    @staticmethod
    def _batch_response(items: list, where: list[int], results: list, ids: list[str]) -> pb.ForecastBatchResponse:
        """Results are responses already (built by ``_respond`` in the data plane's worker) or errors."""
        for i, res, rid in zip(where, results, ids):
            if isinstance(res, BaseException):
                code, message = classify(res)
                if code is grpc.StatusCode.INTERNAL:
                    log.error("batch item %d failed", i, exc_info=res)
                err = res if code is not grpc.StatusCode.INTERNAL else RuntimeError(message)
                if isinstance(res, InvalidRequest):  # an engine refused it: name the field as validation would
                    err = converters.prefix_violations(res, f"requests[{i}].")
                items[i] = pb.ForecastBatchItem(error=converters.batch_error(_CODE_OF.get(code, code_pb2.INTERNAL), err))
            else:
                if rid:
                    res.request_id = rid
                items[i] = pb.ForecastBatchItem(response=res)
        return pb.ForecastBatchResponse(results=items)

    async def FitScalingLaw(self, request: pb.FitScalingLawRequest,
                            context: grpc.aio.ServicerContext) -> pb.FitScalingLawResponse:
        try:
            # admission (from the counts), decoding (off the loop) and the fit are the data plane's; a
            # cancelled call (client gone, deadline passed, server past its grace period) cancels this
            # coroutine, and the data plane stops the fit's worker within one objective evaluation
            inp, fit = await self._dp.fit_scaling_request(
                len(request.points), request.bootstrap if request.HasField("bootstrap") else None,
                converters.scaling_form(request.form),
                partial(converters.scaling_input, request, self._dp.settings.scaling_limits),
                _deadline(context))
            # predicting 1,000 x 2,000 replicates takes a while: off the loop
            return await self._dp.offload(converters.scaling_response, fit, inp.at, inp.budgets, request.request_id,
                                          inp.notes)
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc, "FitScalingLaw")
            raise

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        infos = self._dp.engine_infos()
        sl = self._dp.settings.scaling_limits
        return pb.ModelInfo(
            server_version=__version__, api_version="curvecast.v1",
            engines=[converters.engine_status(i) for i in infos],
            default_engine=self._dp.settings.default_engine, default_quantiles=list(DEFAULT_QUANTILES),
            max_curve_points=self._limits.max_curve_points, max_query_points=self._limits.max_query_points,
            max_batch_requests=self._limits.max_batch_requests,
            default_policy=converters.policy_message(self._policy),
            max_scaling_points=sl.max_points, max_scaling_bootstrap=sl.max_bootstrap,
            max_scaling_point_replicates=sl.max_point_replicates, max_scaling_predict_at=sl.max_predict_at,
            max_scaling_compute_budgets=sl.max_compute_budgets,
            max_sweep_siblings=self._limits.max_sweep_siblings, max_sweep_points=self._limits.max_sweep_points)
