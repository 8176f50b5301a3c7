# make demo   install into .venv (only when pyproject.toml changed) and train the MNIST MLP on local Ray
# make test   install and run the whole CPU test suite (unit + integration on real local Ray)
# make lint   ruff check + format check
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install demo test unit integration lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	@# pip byte-compiles what it installs file by file on one core (~50 s here); compileall
	@# does the same on every core. Needed: this machine's environment sets
	@# PYTHONDONTWRITEBYTECODE=1, so nothing is compiled later. A file that is not valid
	@# Python 3 (some packages ship them) fails to compile, as under pip: not an error.
	-$(BIN)/python -m compileall -q -j 0 $(VENV)/lib/python3*/site-packages > /dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/orch run jobs/mnist_mlp.yaml --fresh

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=25 tests/unit tests/integration

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check orchestrator jobs tests bench
	$(BIN)/ruff format --check orchestrator jobs tests bench

format: $(STAMP)
	$(BIN)/ruff format orchestrator jobs tests bench
	$(BIN)/ruff check --fix orchestrator jobs tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
