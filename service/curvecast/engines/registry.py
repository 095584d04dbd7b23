"""The set of engines the server runs, with atomic replacement for hot reload.

Callers look engines up at the moment they need one, so swapping a reloaded learned model in is a
single reference assignment: in-flight batches finish on the old model, new batches use the new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from ..domain.errors import EngineUnavailable
from .base import Engine, EngineInfo


@dataclass
class EngineRegistry:
    engines: dict[str, Engine] = field(default_factory=dict)
    unavailable: dict[str, EngineInfo] = field(default_factory=dict)  # name -> why not loaded
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, name: str) -> Engine:
        engine = self.engines.get(name)
        if engine is None:
            why = self.unavailable.get(name)
            detail = f": {why.detail}" if why is not None and why.detail else ""
            raise EngineUnavailable(f"engine '{name}' is not available{detail}")
        return engine

    def getter(self, name: str) -> Callable[[], Engine]:
        return lambda: self.get(name)

    def available(self, name: str) -> bool:
        return name in self.engines

    def put(self, engine: Engine) -> None:
        with self._lock:
            self.engines = {**self.engines, engine.name: engine}
            self.unavailable = {k: v for k, v in self.unavailable.items() if k != engine.name}

    def mark_unavailable(self, info: EngineInfo) -> None:
        """Record why an engine could not load; an engine already serving stays in service."""
        with self._lock:
            self.unavailable = {**self.unavailable, info.name: info}

    def infos(self) -> list[EngineInfo]:
        live = [e.info() for e in self.engines.values()]
        down = [i for n, i in self.unavailable.items() if n not in self.engines]
        return live + down
