"""Multi-process serving (``--workers N``): N server processes share the gRPC port, under one supervisor.

Why processes: one server process runs its event loop, validation, decisions and response building under
one GIL, so it uses about one core whatever the engine threads do. Each worker is the whole single-process
server (``app.serve``), bound to the same port with ``SO_REUSEPORT`` (``grpc.so_reuseport``): the kernel
spreads incoming *connections* over the workers (a connection, with all its calls, stays on one worker, so
a lone client with one channel reaches one worker; many clients, or a client with several channels, reach
them all). The measurement that chose this design over the engine process pool is in docs/workers.md.

The supervisor (this module, in the parent process) does no serving itself:
- it sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh temporary folder before starting the workers and serves
  their merged metrics on the one metrics port (workers serve none); a worker's live gauges are dropped
  (``mark_process_dead``) when it exits; the folder is removed at the end;
- it prints the ready line once, when every worker has printed its own (which it swallows);
- SIGTERM / SIGINT are passed to every worker, each drains as the single process does
  (``RunningServer.stop``), and the supervisor exits when all have, with status 0 when all did;
- SIGHUP is passed to every worker: each reloads the learned model;
- a worker that dies on its own is logged and replaced (after a back-off when it keeps dying young); one
  that dies before the first ready line stops the start-up (the server fails as a single process would);
- a worker whose supervisor is gone (its stdin pipe closes) drains and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

from .config import Settings, usable_cpus

log = logging.getLogger("curvecast.supervisor")

WORKER_ENV = "CURVECAST_WORKER_INDEX"  # set by the supervisor in each worker's environment
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_MARK = "curvecast-server ready on port"  # what each worker prints (app.READY)
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 30.0
_HEALTHY_AFTER_S = 30.0  # a worker that lived this long restarts at once when it dies


def worker_index() -> int | None:
    """This process's worker number when a supervisor started it, else None."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value not in (None, "") else None


def exit_with_supervisor(loop: asyncio.AbstractEventLoop, on_exit) -> None:
    """In a worker: call ``on_exit`` once the supervisor's end of stdin closes, which happens however the
    supervisor died (even SIGKILL), so no worker outlives it. Watched by the event loop (no thread)."""
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            on_exit()

    loop.add_reader(fd, readable)


def _reserve_port(host: str) -> tuple[socket.socket, int]:
    """For ``--port 0``: a free port, held by an SO_REUSEPORT socket that is bound but never listens, so the
    workers (and any replacement) bind the same port and nothing else takes it meanwhile."""
    h = host.strip("[]")
    family = socket.AF_INET6 if ":" in h else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((h or "::", 0))
    return sock, sock.getsockname()[1]


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    backoff_s: float = _BACKOFF_START_S
    restarts: int = 0


class Supervisor:
    """Starts, watches, signals and replaces the worker processes of one server."""

    def __init__(self, settings: Settings, argv: Sequence[str], port: int, metrics_dir: str) -> None:
        self.settings = settings
        self.port = port
        self.metrics_dir = metrics_dir
        self.n = settings.resolved_workers
        # the worker command: the same flags, then overrides (argparse keeps the last value of a flag)
        self.cmd = [sys.executable, "-m", "curvecast.server.app", *argv, "--workers", "1", "--port", str(port),
                    "--metrics-port", "0"]
        if not settings.engine_threads:  # "one per core" means the machine's cores, shared out over the workers
            self.cmd += ["--engine-threads", str(max(1, usable_cpus() // self.n))]
        self.workers = [_Worker(i) for i in range(self.n)]
        self.stopping = False
        self.started = False  # every worker was ready once: from then on a dead worker is replaced
        self._failed: asyncio.Future[int] | None = None
        self._watchers: set[asyncio.Task] = set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._failed = loop.create_future()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP, "reloading the model"))
        for w in self.workers:
            await self._spawn(w)
        all_ready = asyncio.ensure_future(asyncio.gather(*(w.ready.wait() for w in self.workers)))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({all_ready, stopped, self._failed}, return_when=asyncio.FIRST_COMPLETED)
        if self._failed.done():  # a worker could not start: stop the others and fail as one process would
            stopped.cancel()
            all_ready.cancel()
            code = self._failed.result()
            await self._stop_all()
            return code if code > 0 else 1
        if not stopped.done():
            self.started = True
            if self.settings.metrics_port:
                try:
                    self._serve_metrics()
                except OSError as exc:
                    log.error("cannot serve metrics on port %d: %s", self.settings.metrics_port, exc)
                    await self._stop_all()
                    return 1
            from .app import announce_ready

            log.info("%d workers ready on port %d (pids %s)", self.n, self.port,
                     " ".join(str(w.proc.pid) for w in self.workers if w.proc))
            announce_ready(self.settings, self.port)
            await stopped
        all_ready.cancel()
        log.info("shutting down: draining %d workers for up to %g s", self.n, self.settings.grace_s)
        return await self._stop_all()

    def _serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)
        registry.register(_ProcessesCollector(lambda: [os.getpid(), *(
            w.proc.pid for w in self.workers if w.proc is not None and w.proc.returncode is None)]))
        start_http_server(self.settings.metrics_port, registry=registry)

    async def _spawn(self, w: _Worker) -> None:
        env = {**os.environ, WORKER_ENV: str(w.index), MULTIPROC_ENV: self.metrics_dir}
        w.ready = asyncio.Event()
        # its own session: a terminal's Ctrl-C reaches the supervisor only, which passes it on (a worker that
        # stopped on its own would look like a crash and be replaced)
        w.proc = await asyncio.create_subprocess_exec(*self.cmd, stdin=asyncio.subprocess.PIPE,
                                                      stdout=asyncio.subprocess.PIPE, env=env,
                                                      start_new_session=True)
        w.started_at = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._watch(w, w.proc))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, w: _Worker, proc: asyncio.subprocess.Process) -> None:
        """Relay the worker's stdout (minus its ready line), then handle its exit."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if READY_MARK in line and not w.ready.is_set():
                w.ready.set()
                if self.started:
                    log.info("worker %d replaced (pid %d) and ready", w.index, proc.pid)
                continue
            sys.stdout.write(line)
            sys.stdout.flush()
        code = await proc.wait()
        self._forget(proc.pid)
        if self.stopping:
            return
        if not self.started and not w.ready.is_set():
            log.error("worker %d (pid %d) exited with status %s before it was ready", w.index, proc.pid, code)
            if self._failed is not None and not self._failed.done():
                self._failed.set_result(code if code else 1)
            return
        lived = time.monotonic() - w.started_at
        if lived >= _HEALTHY_AFTER_S:  # it had been fine: replace it at once
            w.backoff_s, delay = _BACKOFF_START_S, 0.0
        else:  # dying young: wait, longer each time, so a crash loop does not eat the machine
            delay, w.backoff_s = w.backoff_s, min(w.backoff_s * 2, _BACKOFF_MAX_S)
        w.restarts += 1
        log.error("worker %d (pid %d) exited with status %s after %.1f s; starting a replacement in %.1f s "
                  "(restart %d)", w.index, proc.pid, code, lived, delay, w.restarts)
        if delay:
            await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(w)

    def _forget(self, pid: int) -> None:
        """A gone worker's live gauges leave the merged metrics (its counters stay: totals must not drop)."""
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, self.metrics_dir)
        except OSError:
            pass

    def _signal_all(self, sig: signal.Signals, why: str) -> None:
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        log.info("%s: signalling %d workers (%s)", why, len(live), sig.name)
        for proc in live:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def _stop_all(self) -> int:
        """SIGTERM to every worker (each drains within the grace), then wait for all of them to exit."""
        self.stopping = True
        self._signal_all(signal.SIGTERM, "draining")
        procs = [w.proc for w in self.workers if w.proc is not None]
        codes = await asyncio.gather(*(p.wait() for p in procs))
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        if self._watchers:
            await asyncio.wait(set(self._watchers), timeout=5)
        bad = [c for c in codes if c != 0]
        log.info("all %d workers stopped%s", len(procs), f" (exit statuses {codes})" if bad else "")
        return bad[0] if bad else 0


class _ProcessesCollector:
    """The ``process_*`` metrics of the whole server, the supervisor and its live workers together (the
    multiprocess merge has none): CPU seconds, memory and open files are summed; start time and the fd limit
    are the supervisor's."""

    _OWN = ("process_start_time_seconds", "process_max_fds")

    def __init__(self, pids) -> None:
        self._pids = pids

    def collect(self):
        from prometheus_client import ProcessCollector
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        totals: dict[str, tuple[str, str, float]] = {}  # name -> (type, help, value)
        for pid in self._pids():
            try:
                families = list(ProcessCollector(pid=lambda p=pid: p, registry=None).collect())
            except Exception:  # noqa: BLE001 - a worker that just exited
                continue
            for fam in families:
                value = sum(s.value for s in fam.samples)
                if fam.name not in totals:
                    totals[fam.name] = (fam.type, fam.documentation, value)
                elif fam.name not in self._OWN:
                    kind, doc, total = totals[fam.name]
                    totals[fam.name] = (kind, doc, total + value)
        for name, (kind, doc, value) in totals.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc if name in self._OWN else f"{doc} (supervisor and workers)", value=value)


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run ``settings.resolved_workers`` workers until SIGTERM; returns the process exit status."""
    try:
        metrics_dir = tempfile.mkdtemp(prefix="curvecast-metrics-")
    except OSError:  # a read-only root without a writable /tmp: shared memory is always writable
        metrics_dir = tempfile.mkdtemp(prefix="curvecast-metrics-", dir="/dev/shm")
    reservation = None
    port = settings.port
    if port == 0:
        reservation, port = _reserve_port(settings.host)
    try:
        return asyncio.run(Supervisor(settings, argv, port, metrics_dir).run())
    finally:
        if reservation is not None:
            reservation.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
