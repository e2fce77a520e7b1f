#!/usr/bin/env bash
# Container entry point. Environment variables map to `tessera serve` flags (MODEL_PATH -> --model-path,
# TP_SIZE -> --tp-size, ...); arguments after the image name come last, so they win. The usual mistakes
# (model dir missing or unreadable, /data unwritable, --gpus forgotten) fail here with one line, then the
# database is migrated and the server replaces this shell (PID 1: SIGTERM reaches it and it drains).
#   entrypoint.sh [FLAGS...]     serve
#   entrypoint.sh healthcheck    exit 0 iff /health answers 200 (the image's HEALTHCHECK)
#   entrypoint.sh CMD [ARGS...]  run CMD instead (e.g. `tessera admin reset-password`)
set -euo pipefail

die() { echo "tessera: error: $*" >&2; exit 2; }

# One variable per `tessera serve` flag (tests/unit/test_entrypoint.py keeps this in step with ServerArgs).
# Not here: --data-dir (TESSERA_DATA_DIR) and --enable-metrics (always on).
VALUE_VARS=(MODEL_PATH SERVED_MODEL_NAME TOKENIZER_PATH HOST PORT TP_SIZE DP_SIZE CONTEXT_LENGTH
  MEM_FRACTION_STATIC MAX_RUNNING_REQUESTS MAX_TOTAL_TOKENS CHUNKED_PREFILL_SIZE SCHEDULE_POLICY
  PAGE_SIZE DTYPE KV_CACHE_DTYPE DEVICE LOAD_FORMAT QUANTIZATION LM_HEAD_QUANTIZATION ATTENTION_BACKEND GRAMMAR_BACKEND CUDA_GRAPH_MAX_BS
  CHAT_TEMPLATE API_KEY RANDOM_SEED LOG_LEVEL NNODES NODE_RANK DIST_INIT_ADDR DRAIN_TIMEOUT
  MODELS_DIR ADMIN_PORT MAX_REQUEST_BYTES GRAMMAR_COMPILE_TIMEOUT CONSTRAINED_JSON_MAX_WHITESPACE_CNT
  TOOL_CALL_PARSER REASONING_PARSER LOAD_BALANCING_POLICY BALANCE_ABS_THRESHOLD BALANCE_REL_THRESHOLD
  BASE_GPU_ID CACHE_THRESHOLD HEALTH_CHECK_INTERVAL MAX_TREE_SIZE MAX_UNHEALTHY_GPUS PRIORITY_AGING_INTERVAL
  REPLICA_WEIGHTS MIXED_CHUNK_STEP_TOKENS INTERLEAVE_PREFILL_TOKENS INTERLEAVE_BACKLOG_TOKENS HYBRID_LONG_CONTEXT_THRESHOLD SPECULATIVE_ALGORITHM SPECULATIVE_MODEL
  SPECULATIVE_NUM_DRAFT_TOKENS SPECULATIVE_NGRAM_MAX_MATCH SPECULATIVE_NGRAM_MIN_MATCH SPECULATIVE_MIN_ACCEPT_RATE)
BOOL_VARS=(DISABLE_RADIX_CACHE DISABLE_CUDA_GRAPH DISABLE_OVERLAP_SCHEDULE DISABLE_FUSED_GEMV
  LOG_REQUESTS SKIP_TOKENIZER_INIT TRUST_REMOTE_CODE DISABLE_ADMIN ENABLE_JUMP_FORWARD
  ENABLE_MIXED_CHUNK)

to_flag() { local v="${1,,}"; echo "--${v//_/-}"; }

healthcheck() {
  python3 - "${PORT:-30000}" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=4)
except Exception as exc:  # any failure is "unhealthy"; the reason goes to the health log
    sys.exit(f"unhealthy: {exc}")
PY
}

# The value a flag ends up with: the last occurrence in the arguments, else the env variable, else $3.
effective() {
  local flag="$1" env_value="$2" value="$3" i
  [ -n "$env_value" ] && value="$env_value"
  for ((i = 0; i < ${#ARGS[@]}; i++)); do
    case "${ARGS[i]}" in
      "$flag") value="${ARGS[i + 1]:-}" ;;
      "$flag"=*) value="${ARGS[i]#*=}" ;;
    esac
  done
  echo "$value"
}

check_model_dir() {
  local dir="$1"
  [ -e "$dir" ] || die "model directory '$dir' does not exist in the container: mount it (-v /srv/models:/models:ro) and set MODEL_PATH=/models/<name>"
  [ -d "$dir" ] || die "MODEL_PATH '$dir' is not a directory: point it at a Hugging Face model directory"
  [ -r "$dir" ] && [ -x "$dir" ] || die "model directory '$dir' is not readable by uid $(id -u): on the host, chmod -R a+rX it"
  [ -e "$dir/config.json" ] || die "'$dir' has no config.json: point MODEL_PATH at a Hugging Face model directory"
  [ -r "$dir/config.json" ] || die "'$dir/config.json' is not readable by uid $(id -u): on the host, chmod -R a+rX the model directory"
}

check_data_dir() {
  local dir="$1" probe
  mkdir -p "$dir" 2>/dev/null || die "cannot create the data directory '$dir' as uid $(id -u)"
  probe="$dir/.write-test.$$"
  if ! (: >"$probe") 2>/dev/null; then
    die "data directory '$dir' is not writable by uid $(id -u): use a named volume (-v tessera-data:$dir) or chown $(id -u):$(id -g) the host directory"
  fi
  rm -f "$probe"
}

check_gpu() {
  local device="$1"
  [ "${TESSERA_FLAVOR:-cpu}" = cuda ] && [ "$device" != cpu ] || return 0
  compgen -G '/dev/nvidia[0-9]*' >/dev/null \
    || die "no NVIDIA GPU is visible in the container: run it with --gpus all (Podman: --device nvidia.com/gpu=all), or use the cpu image"
}

main() {
  if [ "${1:-}" = healthcheck ]; then healthcheck; return; fi
  if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then exec "$@"; fi

  ARGS=("$@")
  local flags=() name value data_dir
  : "${HOST:=0.0.0.0}"
  for name in "${VALUE_VARS[@]}"; do
    value="${!name:-}"
    [ -n "$value" ] && flags+=("$(to_flag "$name")" "$value")
  done
  for name in "${BOOL_VARS[@]}"; do
    value="${!name:-}"
    case "${value,,}" in
      "" | 0 | false | no | off) ;;
      1 | true | yes | on) flags+=("$(to_flag "$name")") ;;
      *) die "$name must be true or false, got '$value'" ;;
    esac
  done
  data_dir="$(effective --data-dir "${TESSERA_DATA_DIR:-}" /data)"
  flags+=(--data-dir "$data_dir")

  if [ "$(effective --load-format "${LOAD_FORMAT:-}" auto)" != dummy ]; then
    local model
    model="$(effective --model-path "${MODEL_PATH:-}" "")"
    [ -z "$model" ] || check_model_dir "$model"
  fi
  check_data_dir "$data_dir"
  check_gpu "$(effective --device "${DEVICE:-}" auto)"
  # The console's database schema is brought to head before the server starts (no admin, no database).
  local a migrate=1
  for a in "${flags[@]}" "$@"; do [ "$a" = --disable-admin ] && migrate=0; done
  if [ "$migrate" = 1 ]; then tessera admin migrate --data-dir "$data_dir"; fi
  exec tessera serve "${flags[@]}" "$@"
}

main "$@"
