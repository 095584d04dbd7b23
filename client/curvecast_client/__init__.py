"""Curvecast Python SDK: forecasts of training curves from a Curvecast server.

Light on purpose: needs grpcio, grpcio-status, grpcio-health-checking and protobuf only, so schedulers
and training scripts can install it without the server's numerical stack.
"""

from ._channel import Security
from ._client import AsyncClient, Client
from ._convert import Schedule, forecast_request
from ._types import (
    ComputeToTarget,
    CurvecastError,
    EngineStatus,
    EngineUsage,
    FieldViolation,
    Forecast,
    InvalidArgument,
    ModelInfo,
    PointForecast,
    Recommendation,
    ScalingFit,
    ScalingParameter,
    Sibling,
)

__version__ = "0.1.0"
__all__ = [
    "AsyncClient", "Client", "ComputeToTarget", "CurvecastError", "EngineStatus", "EngineUsage", "FieldViolation",
    "Forecast", "InvalidArgument", "ModelInfo", "PointForecast", "Recommendation", "ScalingFit", "ScalingParameter",
    "Schedule", "Security", "Sibling", "forecast_request",
]
