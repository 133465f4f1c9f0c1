# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed

.PHONY: run test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: every experiment on its quick preset, figures + claims tables under results/.
run: $(STAMP)
	$(VENV)/bin/implicitlab run all --preset quick --out results

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/ensemble.py

clean:
	rm -rf $(VENV) results .pytest_cache
