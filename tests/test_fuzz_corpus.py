"""Fuzz corpus regressions: every seed, every input the fuzzer once broke the request path with
(regressions/) and every open engine finding (findings/, with a .txt saying what it found) must go
through the whole request path cleanly: no crash, no hang, no NaN on the wire, rejections naming fields.
See fuzz/README.md for how files get here."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.harness import Pipeline

OUTCOMES = {"undecodable", "rejected", "answered", "engine_unavailable", "engine_error", "bad_answer"}

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
FILES = sorted(p for d in ("seeds", "regressions", "findings") for p in (CORPUS / d).glob("*")
               if p.is_file() and p.suffix != ".txt")


@pytest.fixture(scope="module")
def pipeline():
    p = Pipeline()
    yield p
    p.close()


def run_fuzz_input(pipeline: Pipeline, data: bytes) -> str:
    """The fuzzer's input format: first byte even = raw request bytes, odd = structured request."""
    if not data:
        return "empty"
    if data[0] % 2 == 0:
        return pipeline.check_bytes(data[1:])
    import atheris

    from fuzz.generate import FdpSource, build_request

    return pipeline.check_request(build_request(FdpSource(atheris.FuzzedDataProvider(data[1:]))))


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_input_passes(pipeline, path):
    data = path.read_bytes()
    if data and data[0] % 2 == 1:
        pytest.importorskip("atheris")
    assert run_fuzz_input(pipeline, data) in OUTCOMES


def test_corpus_is_not_empty():
    assert len(FILES) >= 8
