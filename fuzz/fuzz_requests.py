"""Coverage-guided fuzzer (atheris / libFuzzer) over the server's request path.

    mkdir -p /tmp/fuzz-work && PYTHONPATH=service:client:. python -m fuzz.fuzz_requests /tmp/fuzz-work \
        fuzz/corpus/seeds -runs=100000 -timeout=30 -rss_limit_mb=4096

(``make``-free; any libFuzzer flag works: -max_total_time=SECONDS, -jobs/-workers, -print_final_stats=1.)
The first byte picks the kind of input (``fuzz.harness.run_fuzz_input``): below 0xC0 a ``ForecastRequest``,
from 0xC0 a ``FitScalingLawRequest``; even: raw bytes, odd: a structured request built from the input
(``fuzz/generate.py``) to reach the engines and the fit more often. Every forecast input goes bytes ->
decoding -> validation -> DataPlane (analytic engine, and the learned engine when its model is present)
-> decisions -> response; every scaling input goes bytes -> decoding -> limits and validation -> the
data plane's admitted, deadline-bounded fit -> response; the properties of ``fuzz/harness.py`` are checked.
A crash, a property violation or a hang (libFuzzer -timeout) writes the input to ./crash-*; copy it
into fuzz/corpus/regressions/ once fixed so tests/test_fuzz_corpus.py keeps it fixed.
Engine/decision bugs on valid queries are recorded as findings (see fuzz/harness.py; saved to
$FUZZ_FINDINGS) without stopping the run; FUZZ_STRICT=1 stops on them too.
Counts are printed every 10,000 inputs (and written every 1,000 to $FUZZ_STATS as JSON when set);
libFuzzer's own "Done N runs" line is the authoritative total.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time

import atheris

with atheris.instrument_imports(include=["curvecast", "fuzz"]):
    import curvecast.engines.analytic.engine  # noqa: F401  (instrument the engines too)
    import fuzz.generate  # noqa: F401
    from fuzz.harness import Pipeline, run_fuzz_input

    try:
        import curvecast.engines.learned.engine  # noqa: F401
    except ImportError:
        pass

PIPELINE: Pipeline | None = None
STARTED = time.time()


def _report(quiet: bool = False) -> None:
    if PIPELINE is None:
        return
    stats = dict(PIPELINE.stats.as_dict(), seconds=round(time.time() - STARTED, 1), engines=PIPELINE.engines,
                 finding_kinds=PIPELINE.findings)
    line = json.dumps(stats)
    if not quiet:
        print(f"[curvecast-fuzz] {line}", file=sys.stderr, flush=True)
    if os.environ.get("FUZZ_STATS"):
        with open(os.environ["FUZZ_STATS"], "w") as fh:
            fh.write(line + "\n")


def test_one_input(data: bytes) -> None:
    global PIPELINE
    if PIPELINE is None:
        PIPELINE = Pipeline()
    if not data:
        return
    run_fuzz_input(PIPELINE, data)
    if PIPELINE.stats.inputs % 1000 == 0:
        _report(quiet=PIPELINE.stats.inputs % 10000 != 0)


def main() -> None:
    atexit.register(_report)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
