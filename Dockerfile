# Tessera appliance image. One file, two flavours (build with docker/build.sh, or plain
# `docker build --build-arg FLAVOR=cpu -t tessera:cpu .`):
#   FLAVOR=cuda (default)  CUDA PyTorch from PyPI, FlashInfer 0.6.0 with its JIT toolchain (nvcc from
#                          PyPI + g++), xgrammar; what `docker run --gpus all` in the README runs.
#   FLAVOR=cpu             CPU PyTorch, no triton/FlashInfer/CUDA; serves the bundled demo model; CI runs it.
# BASE_IMAGE is any Debian-bookworm-like image with python3 (>= 3.10) and python3-venv: the default is
# the public one; docker/base.sh builds an equivalent local one with mmdebstrap (no registry needed).
# Behind a TLS-intercepting proxy pass its CA as a build secret (never a layer):
#   --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# ---- stage 1: the virtualenv with every pinned dependency (changes only with docker/constraints.txt)
FROM ${BASE_IMAGE} AS deps
ARG FLAVOR=cuda
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build
COPY docker/constraints.txt docker/install-deps.sh ./
RUN --mount=type=secret,id=cacert \
    --mount=type=bind,source=docker/wheels,target=/wheels \
    bash ./install-deps.sh "${FLAVOR}" /opt/venv ./constraints.txt /wheels

# ---- stage 2: the runtime image
FROM ${BASE_IMAGE}
ARG FLAVOR=cuda
ARG VERSION=0.1.0
ARG GIT_SHA=unknown
ARG SOURCE=https://github.com/tessera-llm/tessera
LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="Tessera LLM inference appliance (${FLAVOR})" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai.tessera.flavor="${FLAVOR}"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# FlashInfer JIT-compiles its attention kernels with nvcc + a host C++ compiler on first use (cuda only).
# hadolint ignore=DL3008
RUN if [ "${FLAVOR}" = cuda ]; then \
      apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --uid 1000 --user-group --create-home --home-dir /home/tessera --shell /usr/sbin/nologin tessera \
 && mkdir -p /data /models \
 && chown tessera:tessera /data
COPY --from=deps /opt/venv /opt/venv
WORKDIR /opt/tessera
COPY pyproject.toml README.md ./
COPY engine engine
COPY kernels kernels
COPY app app
COPY web web
COPY migrations migrations
COPY models/demo models/demo
# Editable, as in development: the code finds migrations/, web/ and models/demo beside itself, and the
# dist-info maps the top-level `kernels` package to tessera (transformers then never imports it).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation --no-index -q -e . \
 && /opt/venv/bin/python -m compileall -q engine kernels app migrations >/dev/null
COPY --chmod=0755 entrypoint.sh /usr/local/bin/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/tessera \
    TESSERA_FLAVOR=${FLAVOR} \
    TESSERA_DATA_DIR=/data \
    HF_HOME=/data/hf \
    FLASHINFER_WORKSPACE_BASE=/data
USER 1000:1000
VOLUME ["/models", "/data"]
EXPOSE 30000
# /health is 200 only while a generation would be served; the start period covers weight loading.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["/usr/local/bin/entrypoint.sh", "healthcheck"]
# Exec form: the server is PID 1 and gets SIGTERM itself; it drains for --drain-timeout (30 s), so stop
# with a longer timeout (`docker stop -t 40`).
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
