# Every target runs inside .venv, which `make setup` builds from nothing (idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
FMNIST := /usr/share/datasets/fashion-mnist
# `make serve` listens on loopback only. WARNING: HOST=0.0.0.0 (or any other address) exposes an unauthenticated
# model server to the network; put it behind a proxy with authentication first.
HOST   ?= 127.0.0.1
PORT   ?= 5001
# `make serve BACKEND=onnx`: the registered ONNX file in onnxruntime, one worker per core, instead of MLflow's server.
BACKEND ?= mlflow
# `make stack`: a team's services on loopback (PostgreSQL, an S3 server, the MLflow tracking server).
STACK_DIR         ?= /var/tmp/dltorch-stack
STACK_PG_PORT     ?= 5433
STACK_S3_PORT     ?= 5002
STACK_MLFLOW_PORT ?= 5000
STACK_ARGS = --data-dir $(STACK_DIR) --postgres-port $(STACK_PG_PORT) --s3-port $(STACK_S3_PORT) \
             --mlflow-port $(STACK_MLFLOW_PORT)

.PHONY: setup data-package system-packages stack stack-stop plots repro test test-fast bench serve lint clean
.DEFAULT_GOAL := test

setup: $(STAMP) data-package system-packages

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The real Fashion-MNIST offline: Debian ships it. Without root or apt, say how to get it instead.
data-package:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "note: Fashion-MNIST is not in $(FMNIST). Install it with 'sudo apt-get install dataset-fashion-mnist'," ; \
		echo "      or let the fetch stage download it (needs internet), or set fetch.source_dir in params.yaml."; \
	fi

# The team stack's database and the browser the UI tests drive: Debian's packages, as root (CI is root).
SYSTEM_PACKAGES := postgresql chromium
system-packages:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	else \
		echo "note: install $(SYSTEM_PACKAGES) (sudo apt-get install $(SYSTEM_PACKAGES)) for make stack and its tests"; \
	fi

# Start (or leave running) the stack and print the variables to export; stack-stop stops it. Both idempotent.
stack: setup
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m dltorch.cli stack up $(STACK_ARGS)

stack-stop:
	@$(PY) -m dltorch.cli stack down $(STACK_ARGS)

# `dvc plots show` as an HTML page that draws without internet (DVC's own page loads vega from a CDN).
PLOTS_TEMPLATE := .dvc/tmp/plots-offline.html
plots: setup
	$(PY) -m dltorch.cli plots-template --out $(PLOTS_TEMPLATE)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc plots show --html-template $(PLOTS_TEMPLATE)

# dvc repro, each stage's wall time kept in bench/repro_times.json for `make bench` (bench/repro.py).
repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/repro.py run

# One pytest worker per core (pytest-xdist); a file whose module-scoped servers are built once stays on one worker.
PYTEST := $(PY) -m pytest -q -n auto --dist loadgroup

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# The last `make repro`'s wall time and each model's share (repro.py), training speed (run.py), then inference latency
# per model and the HTTP load on served champions (the MLP and the ResNet, as #14 asks for both; MODEL=<name> for one).
bench: setup
	$(PY) bench/repro.py
	$(PY) bench/run.py
	$(PY) bench/distributed.py
	$(PY) bench/latency.py
	for model in $(or $(MODEL),mlp resnet); do \
		PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/serve_load.py --model $$model || exit 1; \
	done

# Serve models:/$(MODEL)@champion: MLflow's scoring server (onnxruntime) behind a body limit and a finite-values check.
serve: setup
	@test -n "$(MODEL)" || { echo "usage: make serve MODEL=<name> [HOST=127.0.0.1] [PORT=5001]"; exit 2; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m dltorch.cli serve --model $(MODEL) --host $(HOST) --port $(PORT) \
		--backend $(BACKEND)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV)
