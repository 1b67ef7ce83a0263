# medfed: the two entry points of a fresh machine are `make simulate` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: 2.13.0 is the CPU wheel; an open range pulls a CUDA build.
TORCH  := torch==2.13.0
DATA   := data/synthetic-lesions.npz
RUN    := runs/demo

export FLWR_TELEMETRY_ENABLED := 0

.PHONY: simulate test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(DATA): $(VENV)/.installed
	$(BIN)/medfed-sim generate --out $(DATA)

## simulate: 3 simulated hospitals, Dirichlet(1.0) label skew, DP at epsilon 8, with baselines.
simulate: $(VENV)/.installed $(DATA)
	$(BIN)/medfed-sim run --data $(DATA) --sites 3 --rounds 10 --local-epochs 2 \
		--batch-size 64 --lr 0.003 --partition dirichlet:1.0 --dp-epsilon 8 \
		--baseline pooled --baseline local --out $(RUN)

## test: lint, then the whole test suite.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs data .pytest_cache .ruff_cache
