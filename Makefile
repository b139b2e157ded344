# `make test`: set up .venv on a fresh machine (Python 3.9-3.11) and run the test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test install demo clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

demo: install
	@echo "make demo arrives with training (train.py / validate.py are not implemented yet)"; exit 1

clean:
	rm -rf $(VENV) .pytest_cache
