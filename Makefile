# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
# make test also installs the optional extras its tests exercise: Ray (sweep backend), pyarrow (Parquet export)
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) -e ".[dev]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e ".[dev,ray,parquet]"
	touch $(TEST_STAMP)

install: $(STAMP)

# The main job: every experiment on its quick preset, figures + claims tables under results/.
run: $(STAMP)
	$(VENV)/bin/implicitlab run all --preset quick --out results

test: $(TEST_STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/ensemble.py

clean:
	rm -rf $(VENV) results .pytest_cache
