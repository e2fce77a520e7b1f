#!/usr/bin/env bash
# Container entry: serve MODEL_PATH (default: the demo model) on 0.0.0.0:30000; extra args are flags.
set -euo pipefail
exec tessera serve --host 0.0.0.0 --port "${PORT:-30000}" --data-dir "${TESSERA_DATA_DIR:-/data}" \
  ${MODELS_DIR:+--models-dir "$MODELS_DIR"} "$@"
