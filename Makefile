# Two entry points: `make demo` (the main job) and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitune-installed

.PHONY: demo test clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vitune

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
