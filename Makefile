# strbench: the two commands. `make quickstart` sets up .venv and runs the main job on the built-in data;
# `make test` sets up .venv and runs the tests. Re-running either is quick once .venv is current.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.strbench-installed
# pytest-xdist processes of `make test`, each running whole test modules (--dist loadfile)
TEST_WORKERS ?= 2

.PHONY: setup test quickstart bench clean-runs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -rf strbench.egg-info  # stale in-tree metadata would hide pyproject's entry points (the method registry)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -c "import torch, torchvision, torch_fidelity, mlflow, optuna; print('strbench env: torch', torch.__version__)"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

quickstart: setup
	$(VENV)/bin/strbench run experiments/quickstart.yaml
	$(VENV)/bin/strbench report experiments/quickstart.yaml --table 1
	@echo "Browse the runs: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"

bench: setup
	$(VENV)/bin/strbench bench all

clean-runs:
	rm -rf mlflow.db mlartifacts .strbench
