"""Wire fuzzer: arbitrary bytes to every RPC of a real server process, over loopback.

    PYTHONPATH=service:client:. python -m fuzz.fuzz_wire --inputs 100000 [--concurrency 32] [--seed 0]

The in-process fuzzer (``fuzz_requests``) checks the request path behind decoding; this one checks what
only a running server shows: undecodable, truncated and mutated messages sent with an identity serializer
to ``Forecast``, ``ForecastBatch``, ``FitScalingLaw`` and ``GetModelInfo``. Properties, for every input:

- the status is never UNKNOWN or INTERNAL (an undecodable body is INVALID_ARGUMENT naming the message type);
- the server stays up, keeps answering health checks, and its resident memory stays under ``--rss-limit-mb``;
- the whole run ends by itself (bounded count, a per-call deadline).

Inputs are a mix of random bytes, valid requests (from ``fuzz/generate.py``) cut short or with bytes
flipped, and valid requests as they are. Prints one JSON line of counts per method and status at the end
and exits non-zero on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "service", ROOT / "client"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from .generate import build_request, build_scaling_request  # noqa: E402
from .harness import pb  # noqa: E402

METHODS = ("Forecast", "ForecastBatch", "FitScalingLaw", "GetModelInfo")
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


class RandomSource:
    """``fuzz.generate.Source`` over ``random.Random``: seeded, so a run is reproducible."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def float(self) -> float:
        return self.r.choice((self.r.uniform(-1e300, 1e300), self.r.uniform(-10, 10), float("nan"), float("inf")))

    def unit(self) -> float:
        return self.r.random()


def _valid(method: str, src: RandomSource) -> bytes:
    if method == "Forecast":
        return build_request(src, max_points=60).SerializeToString()
    if method == "ForecastBatch":
        return pb.ForecastBatchRequest(requests=[build_request(src, max_points=30)
                                                 for _ in range(src.int(0, 4))]).SerializeToString()
    if method == "FitScalingLaw":
        return build_scaling_request(src, max_points=40).SerializeToString()
    return pb.GetModelInfoRequest().SerializeToString()


def make_input(method: str, rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # random bytes, mostly undecodable
        return rng.randbytes(rng.randrange(0, 400))
    body = bytearray(_valid(method, RandomSource(rng)))
    if kind == 1 and body:  # cut short: a length-delimited field runs past the end
        return bytes(body[: rng.randrange(len(body))])
    if kind == 2 and body:  # flipped bytes
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] = rng.randrange(256)
    return bytes(body)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_server(extra: list[str]) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "curvecast.server.app", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
           *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "client"), str(ROOT)])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # the server's own ready line carries the port it bound
        if "ready on port" in line:
            port = int(line.rsplit("port", 1)[1].split()[0].strip('",}'))
            return proc, port
    raise RuntimeError("server exited before it was ready")


async def run(args: argparse.Namespace) -> int:
    proc, port = start_server(args.server_args)
    rng = random.Random(args.seed)
    counts: Counter[str] = Counter()
    violations: list[str] = []
    peak_rss = 0.0
    started = time.monotonic()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            calls = {m: channel.unary_unary(f"/curvecast.v1.Curvecast/{m}") for m in METHODS}  # identity (de)serializer
            health = health_pb2_grpc.HealthStub(channel)
            queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=args.concurrency * 2)

            async def worker() -> None:
                while (item := await queue.get()) is not None:
                    method, body = item
                    try:
                        await calls[method](body, timeout=args.call_timeout)
                        code = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as err:
                        code = err.code()
                        if code in FORBIDDEN and len(violations) < 20:
                            violations.append(f"{method}: {code.name} {err.details()!r} for {body[:80].hex()}")
                    counts[f"{method}/{code.name}"] += 1

            workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
            for i in range(args.inputs):
                method = METHODS[i % len(METHODS)]
                await queue.put((method, make_input(method, rng)))
                if i % 1000 == 0:
                    peak_rss = max(peak_rss, _rss_mb(proc.pid))
                    if peak_rss > args.rss_limit_mb:
                        violations.append(f"server RSS {peak_rss:.0f} MB over the {args.rss_limit_mb} MB limit")
                        break
                    if proc.poll() is not None:
                        violations.append(f"server exited with {proc.returncode} after {i} inputs")
                        break
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            if status.status != health_pb2.HealthCheckResponse.SERVING:
                violations.append(f"health after the run: {status.status}")
            peak_rss = max(peak_rss, _rss_mb(proc.pid))
    finally:
        proc.terminate()
        proc.wait(60)
    summary = {"inputs": sum(counts.values()), "seconds": round(time.monotonic() - started, 1),
               "peak_rss_mb": round(peak_rss, 1), "violations": violations, "counts": dict(sorted(counts.items()))}
    print(json.dumps(summary))
    return 1 if violations else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--call-timeout", type=float, default=30.0, help="per-call deadline (s)")
    p.add_argument("--rss-limit-mb", type=float, default=2048.0)
    p.add_argument("server_args", nargs="*", help="extra curvecast-server flags (after --)")
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
