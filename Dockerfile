# Tessera GPU image: CUDA PyTorch + the engine, API server and console.
# Build: docker build -t REGISTRY/tessera:TAG .   Run: see README.md ("On a GPU").
# -devel, not -runtime: FlashInfer (the default attention backend when installed) JIT-compiles its
# kernels with nvcc on first use; the compiled kernels are cached under /data (FLASHINFER_WORKSPACE_BASE),
# so a restarted container with the same volume skips the ~2 minutes of compilation.
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-devel

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TESSERA_DATA_DIR=/data FLASHINFER_WORKSPACE_BASE=/data
WORKDIR /opt/tessera
COPY pyproject.toml README.md ./
COPY engine engine
COPY kernels kernels
COPY app app
COPY web web
COPY migrations migrations
COPY models/demo models/demo
COPY entrypoint.sh /entrypoint.sh
# torch comes from the base image; the constraint keeps pip from replacing it.
RUN python -c "import torch; print(f'torch=={torch.__version__.split(\"+\")[0]}')" > /tmp/torch.txt \
 && pip install -c /tmp/torch.txt -e '.[grammar]' \
 && (pip install -c /tmp/torch.txt 'flashinfer-python==0.6.0' || echo 'flashinfer unavailable: triton backend') \
 && chmod +x /entrypoint.sh
VOLUME /data
EXPOSE 30000
ENTRYPOINT ["/entrypoint.sh"]
