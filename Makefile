# fusedmlp developer entry points. Everything runs in a local virtual env (.venv) that
# `make setup` creates from scratch, so a fresh machine needs only python3, a C++
# compiler and (for the CUDA kernels) a CUDA toolkit.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CUDA 13.0 build of torch, so the CUDA sources compile whenever a toolkit is present.
TORCH_SPEC ?= torch==2.14.1
export MAX_JOBS ?= 2

SOURCES := setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)

.PHONY: setup build test demo train bench info clean

setup: $(VENV)/.built

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" numpy pytest expecttest ninja "setuptools>=64" wheel \
		scikit-learn tqdm matplotlib
	touch $@

# The extension is compiled against the torch in the venv (hence --no-build-isolation).
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

build: $(VENV)/.built

test: $(VENV)/.built
	$(PY) -m pytest -q tests

info: $(VENV)/.built
	$(PY) -m fusedmlp.info

bench: $(VENV)/.built
	$(PY) benchmarks/bench.py

# The main job: set everything up, show what was built, train the classic MNIST MLP with
# nn.Linear and with fusedmlp (scikit-learn's bundled digits, no download), then a short
# benchmark against eager PyTorch.
demo: $(VENV)/.built
	$(PY) -m fusedmlp.info
	$(PY) -m fusedmlp.train
	$(PY) benchmarks/bench.py --min-run-time 0.3

# e.g. make train TRAIN_ARGS="--epochs 20 --plot loss.png"
train: $(VENV)/.built
	$(PY) -m fusedmlp.train $(TRAIN_ARGS)

clean:
	rm -rf build *.egg-info fusedmlp/_C*.so
