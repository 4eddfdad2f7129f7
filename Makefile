# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv (with tools/make_venv.py, which works on a bare Debian python3) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench factors dashboards clean

$(STAMP): pyproject.toml
	$(PYTHON) tools/make_venv.py $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jobcarbon demo

lint: $(STAMP)
	$(BIN)/ruff check plugin tests tools bench
	$(BIN)/ruff format --check plugin tests tools bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/epilog.py
	$(BIN)/python bench/scrape.py
	$(BIN)/python bench/scrape_load.py
	$(BIN)/python bench/slurm_import.py
	$(BIN)/python bench/recompute.py
	$(BIN)/python bench/report.py
	$(BIN)/python bench/k8s_watch.py
	$(BIN)/python bench/grid_sync.py

# Rebuild the bundled factor tables from data/sources, and the demo month (maintainers).
factors: $(STAMP)
	$(BIN)/python tools/build_factors.py
	$(BIN)/python tools/make_demo_data.py

# Regenerate dashboards/*.json and docs/metrics.md from the code (maintainers).
dashboards: $(STAMP)
	$(BIN)/python tools/make_dashboards.py
	$(BIN)/jobcarbon metrics --docs > docs/metrics.md

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
