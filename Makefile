# Two commands do everything on a fresh machine: `make run` (main job on the bundled sample) and
# `make test` (the whole suite). Both create .venv and install Grinder on first use only.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Grinder needs Python 3.11 or newer; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/grinder data ls --root data/sample/lake
	$(BIN)/grinder data check --root data/sample/lake --symbol BTCUSDT
	$(BIN)/grinder backtest static_grid --root data/sample/lake --config strategies/static_grid.toml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q --durations=20

bench: $(STAMP)
	$(BIN)/python bench/data_layer.py
	$(BIN)/python bench/agreement.py
	$(BIN)/python bench/backtest_speed.py
	$(BIN)/python bench/sweep_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
