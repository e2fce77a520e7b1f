# The two commands a newcomer runs: `make run` and `make test`. Both create .venv/ when missing.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed
HOST    ?= 127.0.0.1
PORT    ?= 30000

.PHONY: run test lint system-deps demo-model bench clean-venv image image-test

$(PY):
	python3 -m venv .venv

# torch goes first and is pinned through constraints.txt so nothing drags in a CUDA build.
# SGLang's frontend drives our server in tests/lang; its full dependency set is huge, so --no-deps.
$(STAMP): $(PY) pyproject.toml constraints.txt Makefile
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test,grammar]'
	$(PIP) install -q --no-deps -c constraints.txt sglang==0.5.23
	touch $(STAMP)

# Debian's Chromium drives the browser tests (Playwright never downloads a browser here).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium' for the browser tests"; fi; }

run: $(STAMP)
	.venv/bin/tessera serve --host $(HOST) --port $(PORT)

test: $(STAMP) system-deps
	$(PY) -m pytest -q -x --durations=15

lint: $(STAMP)
	.venv/bin/ruff check engine kernels app lang tests bench scripts examples

demo-model: $(STAMP)
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
