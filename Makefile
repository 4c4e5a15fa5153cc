# One command each: `make demo` runs Fleet with simulated panels, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test lint format proto bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fleet demo

serve: $(STAMP)
	$(BIN)/fleet serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check fleet tests bench
	$(BIN)/ruff check fleet tests bench
	$(BIN)/mypy fleet

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
