# Every target runs inside .venv, which `make setup` builds from nothing (idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
FMNIST := /usr/share/datasets/fashion-mnist
# `make serve` listens on loopback only. WARNING: HOST=0.0.0.0 (or any other address) exposes an unauthenticated
# model server to the network; put it behind a proxy with authentication first.
HOST   ?= 127.0.0.1
PORT   ?= 5001

.PHONY: setup data-package repro test test-fast bench serve lint clean
.DEFAULT_GOAL := test

setup: $(STAMP) data-package

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

repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Training speed (run.py), then inference latency per model and the HTTP load on a served champion (MODEL=mlp).
bench: setup
	$(PY) bench/run.py
	$(PY) bench/distributed.py
	$(PY) bench/latency.py
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) bench/serve_load.py --model $(or $(MODEL),mlp)

# Serve models:/$(MODEL)@champion: MLflow's scoring server (onnxruntime) behind a body limit and a finite-values check.
serve: setup
	@test -n "$(MODEL)" || { echo "usage: make serve MODEL=<name> [HOST=127.0.0.1] [PORT=5001]"; exit 2; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m dltorch.cli serve --model $(MODEL) --host $(HOST) --port $(PORT)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV)
