# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
# make test also installs the optional extras its tests exercise: Ray (sweep backend), pyarrow (Parquet export),
# TensorBoard and Lightning (implicitlab.integrations)
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) -e ".[dev]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e ".[dev,ray,parquet,tensorboard,lightning]"
	touch $(TEST_STAMP)

install: $(STAMP)

# The main job: every experiment's quick preset (resumable), every claim, results/report.html.
# A refuted claim is a result, not a failure of the job: the report shows it in red.
# Two worker processes of one torch thread each (the 2 cores we size it for); the claims are bit for bit
# those of one process (measured), since every experiment runs whole in one worker.
run: $(STAMP)
	$(VENV)/bin/implicitlab check --preset quick --out results --no-fail-on-refuted --workers 2 --backend process

# The report's browser test needs Debian's chromium and chromium-driver (installed when missing).
BROWSER := /usr/bin/chromedriver

$(BROWSER):
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
	  echo "could not install chromium (not root / no apt): the browser test will skip outside CI"

test: $(TEST_STAMP) $(BROWSER)
	$(PY) -m pytest -q

# The ensemble benchmark against a plain loop, torch.func and JAX jit(vmap) (the optional bench extra: jax[cpu])
bench: $(STAMP)
	$(PIP) -e ".[dev,bench]"
	$(PY) benchmarks/ensemble.py

clean:
	rm -rf $(VENV) results .pytest_cache
