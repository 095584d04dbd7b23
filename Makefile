# Two commands do all the set-up on a fresh machine:
#   make serve   -> creates .venv on first use, starts the server on the bundled model (CPU)
#   make test    -> creates .venv on first use, runs the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
EXTRAS ?= dev,train,integrations

.PHONY: serve test bench bench-quick proto proto-check train clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	$(PY) scripts/check_onnxruntime.py
	rm -f $(VENV)/.installed-* && touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/curvecast-server $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP)
	$(PY) -m bench run $(ARGS)

bench-quick: $(STAMP)
	$(PY) -m bench run --quick $(ARGS)

proto: $(STAMP)
	PATH=$(VENV)/bin:$$PATH scripts/gen_proto.sh

train: $(STAMP)
	$(PY) -m training.train $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
