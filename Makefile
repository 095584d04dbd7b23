# Two commands do all the set-up on a fresh machine:
#   make serve   -> creates .venv with the serving dependencies only, starts the server on the bundled model (CPU)
#   make test    -> adds the dev, train and integrations extras to .venv, runs the whole test suite
# Every package either installs is pinned in constraints/ (serve.txt, dev.txt, gpu.txt); `make lock`
# regenerates those files (scripts/lock.py) after a dependency change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --no-build-isolation
EXTRAS ?= dev,train,integrations
hash = $(shell cat $(1) | cksum | cut -d' ' -f1)
SERVE_STAMP := $(VENV)/.serve-$(call hash,pyproject.toml constraints/serve.txt)
TEST_STAMP := $(VENV)/.test-$(call hash,pyproject.toml constraints/serve.txt constraints/dev.txt)
GPU_STAMP := $(VENV)/.gpu-$(call hash,pyproject.toml constraints/serve.txt constraints/gpu.txt)

.PHONY: serve serve-gpu test bench bench-quick proto lock train clean

# pip and setuptools first, at their pinned versions: the project is then built without build isolation,
# so nothing is resolved outside the pins.
$(SERVE_STAMP): pyproject.toml constraints/serve.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints/serve.txt pip setuptools
	$(PIP) -c constraints/serve.txt -e .
	$(PY) scripts/check_onnxruntime.py
	rm -f $(VENV)/.serve-* $(VENV)/.gpu-* && touch $@

$(TEST_STAMP): $(SERVE_STAMP) constraints/dev.txt
	$(PIP) -c constraints/dev.txt -e ".[$(EXTRAS)]"
	$(PY) scripts/check_onnxruntime.py
	rm -f $(VENV)/.test-* && touch $@

# CUDA hosts: onnxruntime-gpu (with CUDA and cuDNN from pip) in place of the CPU build.
$(GPU_STAMP): $(SERVE_STAMP) constraints/gpu.txt
	$(PY) -m pip uninstall --quiet --yes onnxruntime
	$(PIP) -c constraints/serve.txt -c constraints/gpu.txt "onnxruntime-gpu[cuda,cudnn]"
	$(PY) scripts/check_onnxruntime.py
	rm -f $(VENV)/.serve-* && touch $(SERVE_STAMP) $@

serve: $(SERVE_STAMP)
	$(VENV)/bin/curvecast-server $(ARGS)

serve-gpu: $(GPU_STAMP)
	$(VENV)/bin/curvecast-server --device cuda $(ARGS)

test: $(TEST_STAMP)
	$(PY) -m pytest -q $(ARGS)

bench: $(TEST_STAMP)
	$(PY) -m bench run $(ARGS)

bench-quick: $(TEST_STAMP)
	$(PY) -m bench run --quick $(ARGS)

proto: $(TEST_STAMP)
	PATH=$(VENV)/bin:$$PATH scripts/gen_proto.sh

lock:
	$(PYTHON) scripts/lock.py

train: $(TEST_STAMP)
	$(PY) -m training.train $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
