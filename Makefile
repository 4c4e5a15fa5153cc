# One command each: `make demo` runs Fleet with simulated panels, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install web demo serve test lint format proto bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The dashboard's browser code (web/ → fleet/web/static/dist/, not in git): `npm ci` again when
# package-lock.json changed, esbuild when a source did. Without npm the dashboard says how to build.
WEB_BUNDLE := fleet/web/static/dist/app.js
NODE_STAMP := node_modules/.package-lock.json

$(NODE_STAMP): package-lock.json package.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund; \
	else echo "npm not found: install Node.js 18+ to build the dashboard's scripts"; fi

$(WEB_BUNDLE): $(NODE_STAMP) web/build.mjs $(wildcard web/src/*)
	@if command -v npm >/dev/null; then npm run build; fi

web: $(WEB_BUNDLE)

demo: $(STAMP) $(WEB_BUNDLE)
	$(BIN)/fleet demo

serve: $(STAMP) $(WEB_BUNDLE)
	$(BIN)/fleet serve

test: $(STAMP) $(WEB_BUNDLE)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check fleet tests bench
	$(BIN)/ruff check fleet tests bench
	$(BIN)/mypy fleet bench

format: $(STAMP)
	$(BIN)/ruff format fleet tests bench
	$(BIN)/ruff check --fix fleet tests bench

# Regenerate the alarm-panel protobuf modules from fleet/integrations/alarm_panel/proto/*.proto.
proto: $(STAMP)
	cd fleet/integrations/alarm_panel/proto && PATH=$(CURDIR)/$(BIN):$$PATH $(CURDIR)/$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --mypy_out=. alarm.proto heartbeat.proto

bench: $(STAMP)
	$(BIN)/python -m bench.ingest

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
