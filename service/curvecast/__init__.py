"""Curvecast: forecasts of training curves, served over gRPC."""

__version__ = "0.1.0"
