"""Domain errors. The transport layer maps them to status codes in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one request field, named by its proto path (e.g. ``curve.values[3]``)."""

    field: str
    description: str


class InvalidRequest(ValueError):
    """The request cannot be answered as sent; maps to INVALID_ARGUMENT with field violations."""

    def __init__(self, violations: list[FieldViolation]):
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def single(cls, field: str, description: str) -> "InvalidRequest":
        return cls([FieldViolation(field, description)])


class EngineUnavailable(RuntimeError):
    """An engine cannot serve right now (model not loaded); maps to UNAVAILABLE."""


class Overloaded(RuntimeError):
    """Admission control refused the call; maps to RESOURCE_EXHAUSTED with a retry hint."""

    def __init__(self, message: str, retry_after_s: float = 0.1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(TimeoutError):
    """The caller's deadline passed before the work started; maps to DEADLINE_EXCEEDED."""
