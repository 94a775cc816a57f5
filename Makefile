# handoff — two commands on a fresh machine with only Python: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-scale demo clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)  ## migrate the embedded database, start Prefect and serve every deployment
	$(BIN)/handoff db upgrade
	$(BIN)/python -m deployments.serve

test: $(STAMP) lint  ## the whole suite: unit, database (SQLite + PostgreSQL), flows, end to end
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy flows tasks db deployments

bench: $(STAMP)  ## measure; writes var/bench/results.json and a markdown table
	$(BIN)/python -m tests.bench

bench-scale: $(STAMP)  ## 10,000 waiting clients by simulation on PostgreSQL (needs 127.0.0.1:5432)
	$(BIN)/python -m tests.bench --only scale

demo: $(STAMP)
	$(BIN)/handoff db upgrade
	$(BIN)/handoff demo

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
