# fusedmlp developer entry points. Everything runs in a local virtual env (.venv) that
# `make setup` creates from scratch, so a fresh machine needs only python3, a C++
# compiler and (for the CUDA kernels) a CUDA toolkit.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CUDA 13.0 build of torch, so the CUDA sources compile whenever a toolkit is present.
TORCH_SPEC ?= torch==2.14.1
# Library models the fuse() tests run on; torchvision's release is tied to torch's (change
# both together, e.g. TORCH_SPEC=torch==2.13.0 TEST_MODEL_SPECS="torchvision==0.28.0 timm==1.0.31").
TEST_MODEL_SPECS ?= torchvision==0.29.1 timm==1.0.31
# The other packages the build, the tests and the demo need (oldest-torch-check's venv too).
TEST_DEPS := numpy pytest expecttest hypothesis ninja setuptools>=77 wheel scikit-learn tqdm \
	matplotlib
export MAX_JOBS ?= 2

SOURCES := setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)

.PHONY: setup build test demo train bench info fuzz sanitize dist-check arm-check gemm-check \
	oldest-torch-check clean

setup: $(VENV)/.built

# Re-run when the package list here or in pyproject.toml changes (an older venv would lack them).
$(VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(foreach dep,$(TEST_DEPS),'$(dep)') $(TEST_MODEL_SPECS)
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

# Many more hypothesis examples than the CI run.
fuzz: $(VENV)/.built
	FUZZ_EXAMPLES=3000 $(PY) -m pytest -q tests/test_fuzz.py

# The CPU suite on an AddressSanitizer + UBSan build of the extension, built apart in
# build/asan so the normal build is untouched. torch itself is not instrumented, so ASan
# is preloaded; leak checking is off (CPython and torch keep allocations until exit); the
# RSS test is left out (ASan's quarantine keeps freed memory by design), and so are the
# tests of repository files rather than of the built extension, which are not copied next
# to the build: the benchmark smoke test, gpu_check.sh's dry run, the CUDA index-math
# checker (csrc/cuda/index_math.h) and setup.py's source lists.
ASAN_LIB := build/asan/lib
sanitize: $(VENV)/.deps
	FUSEDMLP_SANITIZE=1 FUSEDMLP_CUDA=0 $(PY) setup.py build --build-base build/asan --build-lib $(ASAN_LIB)
	cp -r tests $(ASAN_LIB)/
	cd $(ASAN_LIB) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(abspath $(PY)) -m pytest -q -p no:cacheprovider --rootdir . tests \
	  -k "not ddp and not compile and not export" --ignore tests/test_bench.py \
	  --ignore tests/test_gpu_check.py --ignore tests/test_cuda_index_math.py \
	  --ignore tests/test_packaging.py \
	  --deselect tests/test_reliability.py::test_no_memory_growth_over_3000_training_steps

# What a package index would serve: sdist -> wheel built from it -> fresh venv -> smoke
# test (CPU-only build unless FUSEDMLP_CUDA=1). See scripts/dist_check.sh.
dist-check: $(VENV)/.deps
	PYTHON=$(PY) bash scripts/dist_check.sh

# The CPU kernels on 64-bit Arm via a cross compiler and qemu-user (installed with apt-get
# when possible, skipped with a message when not). See scripts/arm_check.sh.
arm-check: $(VENV)/.deps
	PYTHON=$(PY) bash scripts/arm_check.sh

# The whole suite against the oldest torch pyproject.toml accepts (2.11, also the lent GPU
# machines' release), in its own venv and copy of the tree under build/oldest-torch (skipped
# with a message where no index offers that torch). See scripts/oldest_torch_check.sh.
oldest-torch-check:
	PYTHON=$(PYTHON) TEST_DEPS='$(TEST_DEPS)' bash scripts/oldest_torch_check.sh

# The same standalone GEMM check, natively: every ISA this CPU has, no torch in the loop.
gemm-check: $(VENV)/.deps
	PYTHON=$(PY) bash scripts/arm_check.sh --native

clean:
	rm -rf build *.egg-info fusedmlp/_C*.so
