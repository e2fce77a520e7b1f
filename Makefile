# The two commands a newcomer runs: `make run` and `make test`. Both create .venv/ when missing.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
# Two install levels: `make run` needs only what serving needs (.installed-serve); `make test` adds the test
# tools, SGLang's client, the router, pandas/pyarrow (via datasets), Playwright and Triton's CPU interpreter.
SERVE   := .venv/.installed-serve
STAMP   := .venv/.installed
HOST    ?= 127.0.0.1
PORT    ?= 30000
PIPQ    := --progress-bar on --no-input

.PHONY: run test lint system-deps demo-model bench clean-venv image image-test

$(PY):
	@echo "==> creating .venv/"
	python3 -m venv .venv

# torch goes first and is pinned through constraints.txt so nothing drags in a CUDA build.
$(SERVE): $(PY) pyproject.toml constraints.txt Makefile
	@echo "==> [1/3] upgrading pip"
	@$(PIP) install -q --upgrade pip
	@echo "==> [2/3] torch 2.13.0 (CPU build, the largest download)"
	@$(PIP) install $(PIPQ) -c constraints.txt torch==2.13.0
	@echo "==> [3/3] Tessera and its serving dependencies"
	@$(PIP) install $(PIPQ) -c constraints.txt -e '.[grammar]'
	@touch $(SERVE)
	@echo "==> serving dependencies installed"

# SGLang's frontend drives our server in tests/lang; its full dependency set is huge, so --no-deps.
$(STAMP): $(SERVE)
	@echo "==> test dependencies (pytest, openai, playwright, sglang client and router, datasets, triton)"
	@$(PIP) install $(PIPQ) -c constraints.txt -e '.[test,grammar]'
	@$(PIP) install $(PIPQ) --no-deps -c constraints.txt sglang==0.5.23
	@touch $(STAMP)

# Debian's Chromium drives the browser tests (Playwright never downloads a browser here).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium' for the browser tests"; fi; }

# `make run SPEC=1`: the demo model with its trained draft (models/demo-draft) for speculative decoding.
SPEC    ?=
SPEC_ARGS := $(if $(SPEC),--speculative-model models/demo-draft --speculative-num-draft-tokens 4)
run: $(SERVE)
	.venv/bin/tessera serve --host $(HOST) --port $(PORT) $(SPEC_ARGS)

# Two workers: most tests wait on a subprocess or a server, so two beat one even on two cores (CI's 2-core
# box: about 11 min vs 17-26 serially). --dist loadfile: a module's tests run on one worker in file order
# (the browser suites are one operator session in steps on one server). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP) system-deps
	$(PY) -m pytest -q -x --durations=15 -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	.venv/bin/ruff check engine kernels app lang tests bench scripts examples

demo-model: $(SERVE)
	$(PY) scripts/train_demo_model.py --out models/demo

bench: $(STAMP)
	$(PY) bench/offline.py

# The appliance image (docker/build.sh: buildah or docker). FLAVOR=cpu|cuda; BASE=an image to build FROM
# (docker/base.sh makes a local one where no public registry is reachable).
FLAVOR  ?= cuda
image:
	docker/build.sh --flavor $(FLAVOR) $(if $(BASE),--base $(BASE))

# The image acceptance test (cpu flavour, podman, local registry; see tests/image/acceptance.sh). Root.
image-test: $(STAMP)
	PYTHON=$(PY) tests/image/acceptance.sh
