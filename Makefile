# `make demo`: set up .venv on a fresh machine and run the digits demo (train, validate, fold, validate).
# `make test`: set up .venv and run the test suite on three workers, all but the zoo lane (CI's command).
#   (Python 3.9-3.11)
# `make test-all`: the whole suite: `make test` and the tests marked zoo (MindCV models at the zoo sweep's scale).
# `make test-fast`: the suite without the tests marked slow or msrun (pyproject.toml), on three workers.
#   (pytest-xdist; each test file runs on one worker, so a file's module fixtures run once; docs/testing.md)
# `make bench`: set up .venv and print the benchmark tables (also written to benchmarks/results.md).
# `make study`: set up .venv and reproduce ACNet's ablations and kernel analyses on the digits (study_out/).
# `make sweep`: set up .venv; train one step, convert and strict-load every MindCV model with ACBs (docs/sweep.md; hours);
#               `make sweep BLOCK_TYPE=dbb` (any kind): with that kind's blocks (docs/sweep_dbb.md);
#               `MODE=0`: the train step in graph mode (docs/sweep_dbb_graph.md).
# `make families`: one member per MindCV family with every kind: tables and conversions (docs/families.md; ~20 min).
# `make test-compat`: another stack in a venv of its own (.venv-compat): MindSpore MINDSPORE (default: the
#               constraints' 2.8.0) and MindCV MINDCV (a pip requirement, folder or source archive; default: MindCV
#               0.5.0, GitHub main, from ../shared/vendor/), acnet_ms installed into it by pip, which keeps both;
#               then the kind contract's PyNative fast lane, the .pth imports and the demo (docs/compatibility.md).
# `make install`: set up .venv only: acnet_ms installed editable with its test extra (pyproject.toml), at the
#                 versions of constraints.txt.
# `make clean`: remove .venv, .venv-compat and every output folder.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
BLOCK_TYPE ?= acb
MODE       ?= 1
# the test targets' workers (`make test PARALLEL=` runs serially)
PARALLEL ?= -n 3 --dist loadfile

.PHONY: demo test test-all test-fast test-compat bench study sweep families install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# the package itself, editable (the checkout's acnet_ms is the one imported), with every extra the tests need;
# the dependencies are listed once, in the requirements files that pyproject.toml reads (ranges), and installed
# at the exact versions of constraints.txt (the stack the suite is run on)
$(VENV)/.installed: pyproject.toml requirements.txt requirements-demo.txt requirements-study.txt requirements-onnx.txt \
                   requirements-test.txt constraints.txt | $(VENV)/bin/python
	$(PIP) -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m acnet_ms.demo

test: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q $(PARALLEL) -m "not zoo" tests

test-all: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q $(PARALLEL) tests

test-fast: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q $(PARALLEL) -m "not slow and not msrun" tests

# the installed MindSpore and MindCV, one line: the lane checks that installing acnet_ms kept them
export STACK_VERSIONS = from importlib.metadata import version; print(version("mindspore"), version("mindcv"))
MINDSPORE ?= $(shell sed -n 's/^mindspore==//p' constraints.txt)
MINDCV    ?= ../shared/vendor/mindcv-0.5.0-51b0636.tar.gz
COMPAT    := .venv-compat
test-compat:
	rm -rf $(COMPAT)
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install --quiet --disable-pip-version-check "mindspore==$(MINDSPORE)" "numpy<2"
	$(COMPAT)/bin/python -m pip install --quiet --disable-pip-version-check "$(MINDCV)"
	$(COMPAT)/bin/python -c "$$STACK_VERSIONS" > $(COMPAT)/stack.txt
	$(COMPAT)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	$(COMPAT)/bin/python -c "$$STACK_VERSIONS" | cmp -s - $(COMPAT)/stack.txt || \
	    { echo "error: installing acnet_ms replaced MindSpore and MindCV $$(cat $(COMPAT)/stack.txt)"; exit 1; }
	$(COMPAT)/bin/python -m acnet_ms --version
	PATH="$(abspath $(COMPAT))/bin:$$PATH" $(COMPAT)/bin/python -m pytest -q $(PARALLEL) \
	    -m "not slow and not msrun and not graph" tests/test_kind_contract.py tests/test_pth_import.py
	cd "$$(mktemp -d)" && "$(abspath $(COMPAT))/bin/python" -m acnet_ms.demo

bench: install
	$(PY) benchmarks/bench.py --out benchmarks/results.md

study: install
	$(PY) -m acnet_ms.study --out study_out

sweep: install
	$(PY) benchmarks/sweep.py --block_type $(BLOCK_TYPE) --mode $(MODE)

families: install
	$(PY) benchmarks/families.py --out docs/families.md

clean:
	rm -rf $(VENV) $(COMPAT) .pytest_cache build acnet_ms.egg-info demo_out study_out analysis_out data/digits
