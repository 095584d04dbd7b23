"""Fuzz corpus regressions: every seed, every input the fuzzer once broke the request path with
(regressions/) and every open engine finding (findings/, with a .txt saying what it found) must go
through the whole request path cleanly: no crash, no hang, no NaN on the wire, rejections naming fields.
See fuzz/README.md for how files get here."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.harness import Pipeline, run_fuzz_input

OUTCOMES = {"undecodable", "rejected", "answered", "engine_unavailable", "engine_error", "bad_answer",
            "fitted", "refused", "scaling_error"}

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
FILES = sorted(p for d in ("seeds", "regressions", "findings") for p in (CORPUS / d).glob("*")
               if p.is_file() and p.suffix != ".txt")


@pytest.fixture(scope="module")
def pipeline():
    p = Pipeline()
    yield p
    p.close()


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_input_passes(pipeline, path):
    data = path.read_bytes()
    if data and data[0] % 2 == 1:
        pytest.importorskip("atheris")
    assert run_fuzz_input(pipeline, data) in OUTCOMES


def test_corpus_is_not_empty():
    assert len(FILES) >= 8
