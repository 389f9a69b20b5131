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

# every benchmark script; run.py, lenet.py and charlm.py time PyTorch and JAX beside knetflow.
# Some machines set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for older OpenBLAS builds' sake;
# unset here, NumPy's OpenBLAS picks its kernels for this CPU as the peers' libraries do.
BENCH := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(BENCH) benchmarks/run.py
	$(BENCH) benchmarks/breakdown.py
	$(BENCH) benchmarks/gemm.py
	$(BENCH) benchmarks/large_mlp.py
	$(BENCH) benchmarks/trace_cache.py
	$(BENCH) benchmarks/trace_cache_compat.py
	$(BENCH) benchmarks/lenet.py
	$(BENCH) benchmarks/charlm.py
	$(BENCH) benchmarks/scheduler.py
	$(BENCH) benchmarks/serialize.py
	$(BENCH) benchmarks/distributed.py

clean:
	rm -rf $(VENV) build *.egg-info
