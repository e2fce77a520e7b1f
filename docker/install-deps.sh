#!/usr/bin/env bash
# Builds the image's virtualenv (Dockerfile stage `deps`): install-deps.sh FLAVOR VENV CONSTRAINTS WHEELS_DIR
#   cpu:  exactly the pinned list with --no-deps (no triton, no CUDA), torch 2.13.0+cpu from WHEELS_DIR if
#         it holds the wheel, else from the PyTorch CPU index.
#   cuda: the pinned list plus the cuda-only lines, resolved with deps (torch pulls its nvidia-* wheels).
set -euo pipefail
flavor="$1" venv="$2" constraints="$3" wheels="$4"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# A proxy's CA, when the build passes it as the `cacert` secret.
if [ -f /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi

python3 -m venv "$venv"
pip="$venv/bin/pip"
lock="$(mktemp)"
case "$flavor" in
  cpu)
    grep -v -e '^#' -e 'cuda-only' -e '^torch==' "$constraints" | sed 's/ *#.*//' > "$lock"
    shopt -s nullglob
    local_torch=("$wheels"/torch-2.13.0+cpu-*.whl)
    if [ ${#local_torch[@]} -gt 0 ]; then torch=("${local_torch[0]}")
    else torch=(--extra-index-url https://download.pytorch.org/whl/cpu 'torch==2.13.0+cpu')
    fi
    "$pip" install -q --no-deps "${torch[@]}" -r "$lock"
    # Test binaries and C++ headers (nothing compiles against torch on CPU): about 200 MB.
    rm -rf "$venv"/lib/python3*/site-packages/torch/{test,bin,include}
    ;;
  cuda)
    grep -v '^#' "$constraints" | sed 's/ *#.*//' > "$lock"
    "$pip" install -q -c "$lock" -r "$lock"
    # FlashInfer's JIT finds nvcc on PATH (CUDA_HOME = its parent); the PyPI nvcc lives in site-packages.
    nvcc="$(find "$venv" -path '*/bin/nvcc' -type f | head -n 1)"
    [ -n "$nvcc" ] && ln -s "$nvcc" "$venv/bin/nvcc"
    ;;
  *) echo "install-deps.sh: error: FLAVOR must be cpu or cuda, got '$flavor'" >&2; exit 2 ;;
esac
rm -f "$lock"
# Smoke import: a missing pin fails the build here, not at the first request.
"$venv/bin/python" -c "import torch, transformers, xgrammar, fastapi, uvicorn, sqlalchemy, alembic, zmq, argon2"
echo "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') installed for $flavor"
