"""Curve data for the bench: the ``CurveRecord`` type, the user table format and the source loaders."""

from .record import CurveRecord
from .sources import LOADERS, SourceLoad, default_data_dir, load_source
from .synthetic import synthetic_curves
from .table import load_table, records_from_frame, records_to_frame, save_table

__all__ = [
    "CurveRecord",
    "LOADERS",
    "SourceLoad",
    "default_data_dir",
    "load_source",
    "load_table",
    "records_from_frame",
    "records_to_frame",
    "save_table",
    "synthetic_curves",
]
