# make install  install the package with every extra and the dev tools (.[all,dev]) into .venv,
#               only when pyproject.toml changed; `pip install .` alone is the lean core
# make demo   install, then train the MNIST MLP on local Ray
# make test   install and run the whole CPU test suite (unit + integration on real local Ray)
# make lint   ruff check + format check (.ci/run runs it before the tests)
# make cluster-up / cluster-down   a 3-node Ray cluster + an S3 server on 127.0.0.1 (cluster/local_cluster.py)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# pip byte-compiles all 24k files it installs, on one core (~50 s here); most are never
# imported. Installed without that, the bytecode is written by the first import instead, which
# this machine's environment turns off (PYTHONDONTWRITEBYTECODE=1): the commands below turn it
# back on for themselves and the processes they start (Ray's workers included), and the
# install imports the stack once so that a plain `.venv/bin/orch` finds it compiled too.
RUN     := env -u PYTHONDONTWRITEBYTECODE
WARM    := import torch, torchvision, ray.train.torch, ray.tune, ray.data, ray.rllib, \
           transformers, deepspeed, pyarrow.parquet, orchestrator.cli

.PHONY: install demo test unit integration lint format bench clean cluster-up cluster-down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e '.[all,dev]'
	$(RUN) $(BIN)/python -c "$(WARM)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(RUN) $(BIN)/orch run jobs/mnist_mlp.yaml --fresh

test: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q -ra --durations=25 tests/unit tests/integration

unit: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check orchestrator jobs tests bench cluster
	$(BIN)/ruff format --check orchestrator jobs tests bench cluster

format: $(STAMP)
	$(BIN)/ruff format orchestrator jobs tests bench cluster
	$(BIN)/ruff check --fix orchestrator jobs tests bench cluster

cluster-up: $(STAMP)
	$(BIN)/python cluster/local_cluster.py up

cluster-down: $(STAMP)
	$(BIN)/python cluster/local_cluster.py down

clean:
	rm -rf $(VENV) runs .pytest_cache
