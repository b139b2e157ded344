# `make demo`: set up .venv on a fresh machine and run the digits demo (train, validate, fold, validate).
# `make test`: set up .venv and run the test suite.        (Python 3.9-3.11)
# `make bench`: set up .venv and print the benchmark tables (also written to benchmarks/results.md).
# `make study`: set up .venv and reproduce ACNet's ablations and kernel analyses on the digits (study_out/).
# `make sweep`: set up .venv; train one step, convert and strict-load every MindCV model with ACBs (docs/sweep.md; hours).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench study sweep install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-demo.txt requirements-study.txt requirements-onnx.txt \
                   requirements-test.txt | $(VENV)/bin/python
	$(PIP) -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m acnet_ms.demo

test: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/bench.py --out benchmarks/results.md

study: install
	$(PY) -m acnet_ms.study --out study_out

sweep: install
	$(PY) benchmarks/sweep.py --out docs/sweep.md

clean:
	rm -rf $(VENV) .pytest_cache demo_out study_out analysis_out data/digits
