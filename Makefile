# The two commands a new user runs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m knetflow.cli demo

test: $(STAMP)
	$(PY) -m pytest

# every benchmark script; run.py, lenet.py and charlm.py time PyTorch and JAX beside knetflow
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/run.py
	$(PY) benchmarks/breakdown.py
	$(PY) benchmarks/gemm.py
	$(PY) benchmarks/large_mlp.py
	$(PY) benchmarks/trace_cache.py
	$(PY) benchmarks/trace_cache_compat.py
	$(PY) benchmarks/lenet.py
	$(PY) benchmarks/charlm.py
	$(PY) benchmarks/scheduler.py
	$(PY) benchmarks/serialize.py
	$(PY) benchmarks/distributed.py

clean:
	rm -rf $(VENV) build *.egg-info
