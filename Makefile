# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv/ on first use and install Legato into it (.venv/bin/legato).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint typecheck unit integration proto clean chart-check ui

install: $(VENV)/.installed ui

# The web UI (frontend/ui: Preact, Vite, TypeScript), built into frontend/ui/dist (not committed),
# which the Python package serves; built again when one of its sources changes.
UI := frontend/ui
UI_SOURCES := $(shell find $(UI)/src -type f 2>/dev/null) $(addprefix $(UI)/,index.html package.json \
	package-lock.json tsconfig.json vite.config.ts)

ui: $(UI)/dist/index.html

$(UI)/dist/index.html: $(UI_SOURCES)
	@bash scripts/build-ui.sh $(UI)
	@touch $@

$(VENV)/.installed: pyproject.toml
	@bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@touch $@

demo: install
	@bash examples/demo.sh

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=15

# The Helm chart: lint, render and strict validation over tests/chart/*.yaml, schema refusals of
# tests/chart/bad/*.yaml (Helm and the validator are built from the Go module proxy once, cached).
chart-check:
	bash deploy/helm/chart-check.sh

proto: install
	bash legato/proto/generate.sh

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache $(UI)/dist $(UI)/node_modules
