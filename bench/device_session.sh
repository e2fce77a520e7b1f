#!/usr/bin/env bash
# One device call = one run of this script: named stages, each under its own timeout, everything teed
# into $OUT. Usage (on the device machine, repo root): bash bench/device_session.sh STAGE [STAGE ...]
#
# The wheels the GPU image lacks (pyzmq, msgpack, flashinfer-python, apache-tvm-ffi) travel in
# .whl_gpu/ (see bench/RESULTS.md) and are installed into /tmp/site first.
set -u
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl_gpu/*.whl >/dev/null 2>&1 && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/device.txt"

XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")

# FlashInfer JIT-compiles its kernels at first use (~2 min for the prefill + decode families): a cache
# saved by an earlier call (stage fi-cache-save, carried back as .exp/fi-cache.tgz) is restored first.
FI_BASE=${FLASHINFER_WORKSPACE_BASE:-$HOME}
if [ -f .exp/fi-cache.tgz ]; then
  # FlashInfer runs ninja before every load: the restored objects must look newer than the headers pip
  # just wrote to /tmp/site, or ninja rebuilds them all.
  mkdir -p "$FI_BASE/.cache" && tar xzf .exp/fi-cache.tgz -C "$FI_BASE/.cache" &&
    find "$FI_BASE/.cache/flashinfer" -exec touch -d "$(date -d '+10 min')" {} + && echo "flashinfer JIT cache restored"
fi

online_32() {  # online_32 ENGINE_ARGS_JSON...: one in-process serving run at 32 req/s per engine configuration
  local i=0 e
  for e in "$@"; do
    i=$((i + 1))
    echo "engine args: $e"
    env ${ONLINE_TRACE:+TESSERA_STEP_TRACE="$OUT/trace-$i.jsonl"} python3 bench/serving.py --backend engine \
      --request-rate 32 --num-prompts 400 --engine-args "$e" || return 1
  done
}
export -f online_32

awq_old_vs_new_ttft() {  # AWQ single stream (TTFT, batch-1 tok/s) in /tmp/old (an older tree), then this one
  local t
  for t in /tmp/old .; do
    echo "== tree $t"
    (cd $t && python3 bench/single_stream.py --quantization awq --engine-args '{"attention_backend": "triton"}' 2>&1 |
      grep -E "decode_tok_s")
  done
}
awq_old_vs_new_offline() {  # AWQ offline, 128 requests of 256-1024 in / 256 out, in /tmp/old, then this tree
  local t
  for t in /tmp/old .; do
    echo "== tree $t"
    (cd $t && python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy --num-prompts 128 \
      --min-input 256 --max-input 1024 --output-len 256 \
      --engine-args '{"quantization": "awq", "attention_backend": "triton", "skip_tokenizer_init": true}' 2>&1 | tail -3)
  done
}
export -f awq_old_vs_new_ttft awq_old_vs_new_offline

with_clocks() {  # with_clocks CSV CMD...: CMD with the SM clock, power and clock-event reasons sampled every 100 ms
  nvidia-smi -lms 100 --format=csv,noheader,nounits \
    --query-gpu=timestamp,clocks.sm,power.draw,power.limit,temperature.gpu,clocks_event_reasons.active > "$1" &
  local smi=$! csv=$1 rc
  shift
  "$@"
  rc=$?
  kill "$smi"
  python3 bench/smi_summary.py "$csv"
  return $rc
}
export -f with_clocks
export OUT

ratio_runs() {  # ratio_runs LAYERS:L2_MB:HEAD[:TAIL] ...: batch-1 decode tok/s (triton attention, 8B dummy) per spec,
  # e.g. ":0:" bf16, "awq:32:fp8" AWQ layers with a 32 MB L2 prefetch and the FP8 LM head; an empty L2_MB keeps the
  # default; TAIL 1 / 0 sets TESSERA_FP8_LAYER_TAIL (FP8 layers' o + gate_up + down as one launch)
  local spec q mb h tail e
  for spec in "$@"; do
    IFS=: read -r q mb h tail <<< "$spec"
    e="{\"attention_backend\": \"triton\"${h:+, \"lm_head_quantization\": \"$h\"}}"
    echo "== layers ${q:-bf16}, LM head ${h:-16-bit}, L2 prefetch ${mb:-default} MB${tail:+, FP8 layer tail $tail}"
    env ${mb:+TESSERA_L2_PREFETCH_MB=$mb} ${tail:+TESSERA_FP8_LAYER_TAIL=$tail} python3 bench/single_stream.py ${q:+--quantization $q} --engine-args "$e" 2>&1 |
      grep -E "decode_tok_s|Error" | cut -c1-70
  done
}
export -f ratio_runs

gemv_ncu() {  # gemv_ncu [gemv_ncu.py args]: Nsight Compute counters of the batch-1 GEMVs (bench/gemv_ncu.py): the
  # details page to $OUT/ncu-details.csv, a summary table, stall reasons per kernel, the hottest SASS lines
  local ncu names
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  echo "ncu: $ncu"; "$ncu" --version | tail -1
  "$ncu" --profile-from-start off --clock-control none --set full -f -o /tmp/gemv python3 bench/gemv_ncu.py "$@" \
    > /tmp/ncu-run.log 2>&1
  grep -v "^==PROF==" /tmp/ncu-run.log | tail -25
  names=$(grep "^PROFILED" /tmp/ncu-run.log | awk '{print $3 ":" $4}' | paste -sd,)
  "$ncu" -i /tmp/gemv.ncu-rep --csv --page details > "$OUT/ncu-details.csv"
  "$ncu" -i /tmp/gemv.ncu-rep --csv --page raw > /tmp/ncu-raw.csv
  "$ncu" -i /tmp/gemv.ncu-rep --csv --page source --print-source sass -k regex:"fp8_gemv|awq_gemv" > /tmp/ncu-src.csv 2>&1
  python3 bench/gemv_ncu.py --summary "$OUT/ncu-details.csv" --raw /tmp/ncu-raw.csv --names "$names"
  python3 bench/gemv_ncu.py --source /tmp/ncu-src.csv | head -400
  gzip -c /tmp/ncu-raw.csv > "$OUT/ncu-raw.csv.gz"
}
export -f gemv_ncu

fp8_tiles() {  # fp8_tiles NxK:LEAN:PREWAIT ...: a TESSERA_FP8_GEMV_TUNED overlay (8 rows, 1024 columns, 4 warps) for this GPU
  local entries="" t shape lean pw
  for t in "$@"; do
    IFS=: read -r shape lean pw <<< "$t"
    entries+="${entries:+, }\"$shape\": {\"block_n\": 8, \"block_k\": 1024, \"num_warps\": 4, \"num_stages\": 1, \"split_k\": 1, \"lean\": $lean, \"prewait\": $pw}"
  done
  printf '{"%s/132sm": {%s}}' "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" "$entries"
}

stage() {  # stage NAME TIMEOUT_S CMD...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1
  local rc=$?
  echo "=== $name rc=$rc in $((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
}

for s in "$@"; do
  case $s in
    # pytest-xdist (carried) compiles the many Triton specialisations on 8 CPU cores at once.
    kernel-tests) stage kernel-tests 420 python3 -m pytest -q -m gpu -o addopts="" $XDIST tests/kernels ;;
    fused-decode-test) stage fused-decode-test 120 python3 -m pytest -q -o addopts="" tests/engine/test_fused_decode.py ;;
    flashinfer-padded) stage flashinfer-padded 240 python3 -m pytest -q -m gpu -o addopts="" -rA \
                         tests/engine/test_gpu_flashinfer_graphs.py -k padded ;;
    engine-tests) stage engine-tests 300 python3 -m pytest -q -m gpu -o addopts="" -rA tests/engine -k "not flashinfer" ;;
    flashinfer-tests) stage flashinfer-tests 420 python3 -m pytest -q -m gpu -o addopts="" -rA tests/engine -k flashinfer ;;
    # FP8 KV cache: kernels and backends vs torch references, engine (triton, flashinfer, hybrid; graphs),
    # then the accuracy report on the 8B shape (dummy weights) for each backend.
    fp8-kv-tests) stage fp8-kv-tests 540 python3 -m pytest -q -m gpu -o addopts="" -rA -s \
      tests/kernels/test_kernel_fp8_kv.py tests/engine/test_gpu_fp8_kv.py ;;
    fp8-kv-accuracy) stage fp8-kv-accuracy 540 env OUT="$OUT" bash -c 'for b in triton flashinfer hybrid; do
      python3 bench/kv_accuracy.py --model-path bench/models/llama-3.1-8b --load-format dummy --device cuda \
        --kv-dtypes bf16,fp8_e4m3 --attention-backend $b --num-prompts 16 --prompt-len 1024 --steps 64 \
        --out "$OUT/kv_accuracy.jsonl"; done' ;;
    # The hybrid backend and mixed chunks on the GPU (also part of flashinfer-tests / engine-tests).
    hybrid-tests) stage hybrid-tests 420 python3 -m pytest -q -m gpu -o addopts="" -rA -k "hybrid or mixed" \
                    tests/engine/test_gpu_flashinfer_hybrid.py tests/engine/test_gpu_engine.py ;;
    gemv-bench) stage gemv-bench 300 python3 bench/gemv_bench.py ;;
    fp8-kernel-tests) stage fp8-kernel-tests 300 python3 -m pytest -q -m gpu -o addopts="" $XDIST tests/kernels/test_fp8.py ;;
    fp8-engine-test) stage fp8-engine-test 300 python3 -m pytest -q -m gpu -o addopts="" -rA -s tests/engine/test_gpu_fp8.py ;;
    fp8-gemv-bench) stage fp8-gemv-bench 300 python3 bench/fp8_gemv_bench.py ;;
    # Per-device GEMV tiles (split-K for the small projections): writes $OUT/gemv_tuned.json, a
    # kernels/gemv_configs.py TUNED entry; single-tuned then runs the engine with it (TESSERA_GEMV_TUNED).
    gemv-sweep) stage gemv-sweep 200 python3 bench/gemv_bench.py --sweep --out "$OUT/gemv_tuned.json" ;;
    gemv-gpu-test) stage gemv-gpu-test 150 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rA \
                     tests/kernels/test_kernel_gpu.py -k gemv ;;
    single-tuned) if [ -f "$OUT/gemv_tuned.json" ]; then
                    stage single-tuned 150 env TESSERA_GEMV_TUNED="$OUT/gemv_tuned.json" python3 bench/single_stream.py \
                      --engine-args '{"attention_backend": "triton"}'
                  else echo "single-tuned: no $OUT/gemv_tuned.json (run gemv-sweep first)"; fi ;;
    single) stage single 150 python3 bench/single_stream.py --engine-args '{"attention_backend": "triton"}' ;;
    single-fp8) stage single-fp8 200 python3 bench/single_stream.py \
                  --engine-args '{"quantization": "fp8", "attention_backend": "triton"}' ;;
    single-unfused) stage single-unfused 150 python3 bench/single_stream.py \
                      --engine-args '{"attention_backend": "triton", "disable_fused_gemv": true}' ;;
    single-awq) stage single-awq 240 python3 bench/single_stream.py --quantization awq \
                  --engine-args '{"attention_backend": "triton"}' ;;
    # Quantized batch-1 decode in ~200 s: FP8 + AWQ GEMV tile sweep (one parallel precompile; each shape's
    # winner lands in $OUT/{fp8,awq}_gemv_tuned.json as soon as it is timed, so a cut-short sweep still
    # helps), then single-stream decode for each with its overlay. A missing overlay file is ignored by
    # kernels/quant_gemv_configs.py (defaults), so the single-stream runs happen whatever the sweep did.
    quant-speed) stage quant-sweep 80 python3 bench/quant_gemv_sweep.py --kind fp8,awq
                 stage quant-single-fp8 60 env TESSERA_FP8_GEMV_TUNED="$OUT/fp8_gemv_tuned.json" \
                   python3 bench/single_stream.py --engine-args '{"quantization": "fp8", "attention_backend": "triton"}'
                 stage quant-single-awq 60 env TESSERA_AWQ_GEMV_TUNED="$OUT/awq_gemv_tuned.json" \
                   TESSERA_AWQ_DEQUANT_MIN_ROWS="$(cat "$OUT/awq_dequant_min_rows.txt" 2>/dev/null)" \
                   python3 bench/single_stream.py --engine-args '{"quantization": "awq", "attention_backend": "triton"}'
                 grep -h "layer projections\|dequant_min_rows" "$OUT/quant-sweep.log" | tee -a "$OUT/summary.txt"
                 for q in fp8 awq; do echo "$q: $(grep -o '"decode_tok_s": [0-9.]*, "ttft_ms": [0-9.]*' \
                   "$OUT/quant-single-$q.log" | head -1)"; done | tee -a "$OUT/summary.txt" ;;
    awq-kernel-tests) stage awq-kernel-tests 420 python3 -m pytest -q -m gpu -o addopts="" $XDIST \
                        tests/kernels/test_awq_gemm.py ;;
    awq-engine-test) stage awq-engine-test 300 python3 -m pytest -q -m gpu -o addopts="" -rA tests/engine/test_gpu_awq.py ;;
    awq-bench) stage awq-bench 480 python3 bench/awq_bench.py ;;
    single-flashinfer) stage single-flashinfer 300 python3 bench/single_stream.py \
                         --engine-args '{"attention_backend": "flashinfer"}' ;;
    profile) stage profile 150 python3 bench/profile_step.py --batch-sizes 1 --prefill-reqs 1 --prefill-len 128 ;;
    tp2) stage tp2 540 python3 bench/tp_bench.py --tp 2 --runs 2 ;;
    tp4) stage tp4 540 python3 bench/tp_bench.py --tp 4 --runs 2 ;;  # needs nvidia-h200-x4
    grammar-bench) stage grammar-bench 300 python3 bench/grammar_bench.py --model-path bench/models/llama-3.1-8b \
                     --load-format dummy --engine-args '{"attention_backend": "triton"}' ;;
    # Speculative decoding, 8B shape, dummy weights: the mechanics' overhead at ~0 % acceptance (`wrong-raw`: every
    # step verifies; `wrong`: failing requests pause) and the ngram workload; batch 1 streamed (spec-bench), batch 8
    # (spec-bench-b8). Acceptance rates here mean nothing (dummy weights). One stage per device call.
    spec-bench) stage spec-bench 560 python3 bench/spec_bench.py --model-path bench/models/llama-3.1-8b \
                  --load-format dummy --modes base,wrong-raw,wrong,ngram --workloads random,repetitive --num-prompts 2 \
                  --input-len 512 --output-len 256 --engine-args '{"attention_backend": "triton"}' ;;
    spec-bench-b8) stage spec-bench-b8 560 python3 bench/spec_bench.py --model-path bench/models/llama-3.1-8b \
                     --load-format dummy --modes base,wrong-raw,wrong,ngram --workloads repetitive --batch 8 \
                     --num-prompts 8 --input-len 512 --output-len 256 --engine-args '{"attention_backend": "triton"}' ;;
    # One call's worth of GPU checks for this session's features on triton (FlashInfer's JIT alone would
    # take ~2 minutes): FP8 and AWQ engines, FP8 KV, mixed chunks, speculative decoding, per-token FP8 quant.
    # -v -s: every test's verdict and printed agreement reach the log as it finishes (a stage cut off by its
    # limit loses pytest's final summary; on 2026-12-02 that hid the measured values of 6 failures).
    verify-new) stage verify-new 540 python3 -m pytest -v -s -m gpu -o addopts="" -rA \
                  tests/engine/test_gpu_fp8.py tests/engine/test_gpu_awq.py tests/engine/test_gpu_fp8_kv.py \
                  tests/engine/test_gpu_speculative.py tests/engine/test_gpu_engine.py tests/kernels/test_fp8.py \
                  -k "(test_gpu_fp8 or test_gpu_awq or test_gpu_speculative or mixed or per_token) and not flashinfer and not hybrid"
                stage awq-kernel-tests 120 python3 -m pytest -q -m gpu -o addopts="" $XDIST tests/kernels/test_awq_gemm.py ;;
    # The quantized kernels' accuracy, teacher-forced (tests/engine/quant_accuracy.py; in-process runners with
    # small KV pools, so xdist can run them side by side), and the per-token activation quantization kernel.
    verify-quant) stage verify-quant 200 python3 -m pytest -v -s -m gpu -o addopts="" -rA \
                    tests/engine/test_gpu_fp8.py tests/engine/test_gpu_awq.py tests/kernels/test_fp8.py \
                    -k "(bf16 or fp16 or per_token) and not fp32" ;;
    # Whole-engine GPU checks (each Engine sizes its KV pool from free memory: one at a time): speculative
    # greedy identity, mixed chunks with graphs, fp8 KV graphs + overlap vs eager.
    verify-engine) stage verify-engine 230 python3 -m pytest -v -s -m gpu -o addopts="" -rA \
                     tests/engine/test_gpu_speculative.py tests/engine/test_gpu_engine.py tests/engine/test_gpu_fp8_kv.py \
                     -k "test_gpu_speculative or (mixed and not hybrid) or (graphs_and_overlap and triton)" ;;
    spec-tests) stage spec-tests 300 python3 -m pytest -q -o addopts="" -rA tests/engine/test_gpu_speculative.py ;;
    # the real 131 K Tekken vocabulary (bench/tekken_tokenizer.py; build it here and carry it as .exp/tekken-hf)
    grammar-bench-tekken) stage grammar-bench-tekken 300 python3 bench/grammar_bench.py \
                            --model-path bench/models/llama-3.1-8b --load-format dummy --tokenizer-path .exp/tekken-hf \
                            --engine-args '{"attention_backend": "triton"}' ;;
    suite) stage suite 420 python3 bench/run_suite.py ;;
    suite-awq) stage suite 540 python3 bench/run_suite.py --skip-hf --quantizations awq ;;
    suite-quant) stage suite 600 python3 bench/run_suite.py --skip-hf --quantizations awq,fp8 ;;
    # Long context, one request: TTFT and decode tok/s at 8k / 32k / 100k on the default backend (hybrid),
    # with the weights + KV decode roofline; -hybrid / -triton name the backend.
    # Eighth session: decode attention's launch shapes (bf16 and fp8 pools; fp16 vs bf16 upcast for fp8) ...
    decode-tiles) stage decode-tiles 240 bash -c 'python3 bench/kernels_bench.py --sweep-tiles --skip-extend &&
                    python3 bench/kernels_bench.py --sweep-tiles --skip-extend --kv-dtype fp8_e4m3' ;;
    decode-tiles-fp8) stage decode-tiles-fp8 400 python3 bench/kernels_bench.py --sweep-tiles --skip-extend \
                        --kv-dtype fp8_e4m3 ;;
    decode-gpu-test) stage decode-gpu-test 200 python3 -m pytest -q -m gpu -o addopts="" -rA $XDIST \
                       tests/kernels/test_kernel_fp8_kv.py tests/kernels/test_kernel_attention.py tests/kernels/test_kernel_gpu.py -k decode ;;
    # ... and prefills queued behind running decodes plus the sync-free prefill path, against torch_native
    # (fp32 engine, overlap on), with the fp8 decode kernel's GPU tests.
    overlap-gpu-test) stage overlap-gpu-test 240 bash -c 'python3 -m pytest -q -m gpu -o addopts="" -rA \
                        tests/engine/test_gpu_engine.py -k "matches_torch_native and overlap" &&
                        python3 -m pytest -q -m gpu -o addopts="" -rA tests/kernels/test_kernel_fp8_kv.py -k decode' ;;
    long-context) stage long-context 480 python3 bench/long_context.py ;;
    long-context-hybrid) stage long-context-hybrid 330 python3 bench/long_context.py \
                           --engine-args '{"attention_backend": "hybrid"}' ;;
    dense-prefill-test) stage dense-prefill-test 200 python3 -m pytest -q -m gpu -o addopts="" -rA \
                          tests/kernels/test_kernel_backends.py -k dense ;;
    # 100k only: the default (FlashInfer's dense prefill for one request over one run of slots) and the paged
    # kernel it replaced, two engines in one call.
    long-context-100k) stage long-context-100k 330 python3 bench/long_context.py --input-lens 100000 ;;
    # Ninth session: 100k with larger prefill chunks (16k / 32k tokens: fewer chunk boundaries), one engine each.
    long-context-100k-chunks) stage long-context-100k-chunks 330 bash -c 'for c in 16384 32768; do
                                python3 bench/long_context.py --input-lens 100000 \
                                  --engine-args "{\"chunked_prefill_size\": $c}" | grep "^{" || exit 1; done' ;;
    # Decode at 100k on triton's kernel (block 128 tiles since the eighth session: 105 us per layer at 100k in the
    # kernel sweep) vs the default hybrid hand-over to FlashInfer above 32768 tokens, one engine each.
    long-context-100k-decode) stage long-context-100k-decode 330 bash -c 'for t in 32768 1000000; do
                                python3 bench/long_context.py --input-lens 100000 \
                                  --engine-args "{\"hybrid_long_context_threshold\": $t}" | grep "^{" || exit 1; done' ;;
    long-context-100k-paged) stage long-context-100k-paged 150 env TESSERA_FLASHINFER_DENSE_PREFILL=0 \
                               python3 bench/long_context.py --input-lens 100000 ;;
    fi-cache-save) stage fi-cache-save 60 bash -c 'tar czf "$OUT/fi-cache.tgz" -C "'"$FI_BASE"'/.cache" flashinfer &&
                     ls -l "$OUT/fi-cache.tgz"' ;;
    long-context-triton) stage long-context-triton 480 python3 bench/long_context.py \
                           --engine-args '{"attention_backend": "triton"}' ;;
    # Tail latency under load: 32 req/s (inputs 256-1024, 256 out), one engine per engine-args JSON (online_32).
    online-32) stage online-32 570 bash -c 'online_32 "{}" "{\"enable_mixed_chunk\": true}"' ;;
    # With TESSERA_STEP_TRACE ($OUT/trace-N.jsonl: every forward's mode, rows, tokens and GPU time) for the
    # default and interleave 1024, to fit bench/schedule_sim.py's step-time model to the real runs.
    # AWQ batch 1 with the nibble-plane GEMV: its GPU test, the AWQ-only tile sweep (planes tiles first), then
    # single-stream decode with the winners.
    # The lean nibble-plane loop (eighth session): GPU tests, the sweep, then the fused batch-1 path only.
    awq-lean) stage awq-lean-test 200 python3 -m pytest -q -m gpu -o addopts="" $XDIST \
                tests/kernels/test_awq_gemm.py tests/engine/test_gpu_awq.py -k "planes or fp16"
              stage awq-lean-sweep 90 python3 bench/quant_gemv_sweep.py --kind awq --no-prefill
              stage awq-lean-single 60 env TESSERA_AWQ_GEMV_TUNED="$OUT/awq_gemv_tuned.json" \
                TESSERA_AWQ_DEQUANT_MIN_ROWS=64 python3 bench/single_stream.py --engine-args \
                '{"quantization": "awq", "attention_backend": "triton"}' ;;
    # Ninth session: the new defaults (interleave 1024 below a 4096-token backlog, 16384-token chunks on this GPU)
    # against the old ones (no interleaving, 8192-token chunks), online at 32 req/s and offline (256 at once).
    online-32-defaults) stage online-32-defaults 330 bash -c \
                          'online_32 "{}" "{\"interleave_prefill_tokens\": 0, \"chunked_prefill_size\": 8192}"' ;;
    offline-defaults) stage offline-defaults 400 bash -c 'g="\"cuda_graph_max_bs\": 256"
                   for e in "{$g}" "{$g, \"interleave_prefill_tokens\": 0, \"chunked_prefill_size\": 8192}"; do
                     python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                       --engine-args "$e" | grep "^{" || exit 1; done';;
    offline-fp8-kv) stage offline-fp8-kv 200 python3 bench/offline.py --model-path bench/models/llama-3.1-8b \
                      --load-format dummy --engine-args \
                      '{"cuda_graph_max_bs": 256, "quantization": "fp8", "kv_cache_dtype": "fp8_e4m3"}' ;;
    # The lean FP8 GEMV loop (ninth session, prepared offline from SASS): GPU tests, the FP8 sweep (lean tiles
    # among the candidates), then batch-1 FP8 decode with the sweep's winners.
    fp8-lean) stage fp8-lean-sweep 90 python3 bench/quant_gemv_sweep.py --kind fp8 --no-prefill
              stage fp8-lean-single 80 env TESSERA_FP8_GEMV_TUNED="$OUT/fp8_gemv_tuned.json" python3 \
                bench/single_stream.py --engine-args '{"quantization": "fp8", "attention_backend": "triton"}'
              stage fp8-lean-test 120 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rA tests/kernels/test_fp8.py \
                -k "gemv and gpu" ;;
    # Where the batch-1 FP8 step's time goes (ninth session: the lean GEMVs saved 176 us per token alone, ~50 in
    # the step): per-kernel times of one graphed decode step, bf16 then FP8 weights.
    profile-fp8-b1) stage profile-fp8-b1 200 bash -c 'for e in "{}" "{\"quantization\": \"fp8\"}"; do
                      echo "engine args: $e"; python3 bench/profile_step.py --batch-sizes 1 --prefill-reqs 1 \
                        --prefill-len 128 --engine-args "$e" || exit 1; done' ;;
    # The tensor-core AWQ GEMV (ninth session, prepared offline from SASS: 2.0-3.0 instructions per weight vs the lean
    # loop's 4.3-5.6): its GPU tests first (its inline asm never ran on a GPU), then the AWQ sweep with its tiles,
    # then batch-1 AWQ decode with the winners.
    awq-mma) stage awq-mma-test 200 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rA tests/kernels/test_awq_mma.py
             stage awq-mma-sweep 90 python3 bench/quant_gemv_sweep.py --kind awq --no-prefill
             stage awq-mma-single 80 env TESSERA_AWQ_GEMV_TUNED="$OUT/awq_gemv_tuned.json" \
               TESSERA_AWQ_DEQUANT_MIN_ROWS=64 python3 bench/single_stream.py --engine-args \
               '{"quantization": "awq", "attention_backend": "triton"}' ;;
    # Deferred KV slot frees (tenth session): the allocator test, then engines that free device slots every step
    # (radix cache off; speculative drafts rejected) against their references.
    kv-free-tests) stage kv-free-tests 150 python3 -m pytest -q -m gpu -o addopts="" -rA tests/engine/test_slot_allocator.py \
                     tests/engine/test_gpu_graph_padding.py tests/engine/test_gpu_speculative.py ;;
    # Batch-1 decode attention per min_split_len at 160-32k tokens (tenth session: 7.2 us per layer at ~130 tokens
    # in the FP8 step profile, 3 splits merged through counters).
    decode-b1-split-len) stage decode-b1-split-len 150 python3 bench/kernels_bench.py --sweep-min-split-len ;;
    online-32-pair) stage online-32-pair 330 bash -c 'online_32 "{}" "{\"interleave_prefill_tokens\": 1024}"' ;;
    awq-planes) stage awq-planes-test 200 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rA \
                  tests/kernels/test_awq_gemm.py tests/engine/test_gpu_awq.py -k "planes or fp16"
                stage awq-planes-sweep 90 python3 bench/quant_gemv_sweep.py --kind awq --no-prefill
                for f in 1 0; do  # unfused (7 launches per layer), then the fused batch-1 path (4)
                  stage awq-planes-single-unfused$f 60 env TESSERA_AWQ_GEMV_TUNED="$OUT/awq_gemv_tuned.json" \
                    TESSERA_AWQ_DEQUANT_MIN_ROWS=64 python3 bench/single_stream.py --engine-args \
                    "{\"quantization\": \"awq\", \"attention_backend\": \"triton\", \"disable_fused_gemv\": $([ $f = 1 ] && echo true || echo false)}"
                  echo "awq planes, disable_fused_gemv=$f: $(grep -o '"decode_tok_s": [0-9.]*' \
                    "$OUT/awq-planes-single-unfused$f.log" | head -1)" | tee -a "$OUT/summary.txt"
                done
                grep -h "layer projections" "$OUT/awq-planes-sweep.log" | tee -a "$OUT/summary.txt" ;;
    # The interleave-1024 row again (its 51.1 ms p99 was one run; 768 / 640 came out worse: 67 / 60 ms).
    online-32-1024) stage online-32-1024 200 bash -c 'online_32 "{\"interleave_prefill_tokens\": 1024}"' ;;
    # Where offline-256's time goes per precision: a 256-row decode step at 768 context and an 8 x 1024 prefill,
    # bf16 / FP8 weights / FP8 weights + FP8 KV (the offline target sits at 1.25-1.30x of bf16).
    profile-offline-fp8) stage profile-offline-fp8 300 bash -c 'for e in "{}" "{\"quantization\": \"fp8\"}" \
                           "{\"quantization\": \"fp8\", \"kv_cache_dtype\": \"fp8_e4m3\"}"; do echo "engine args: $e"
                           python3 bench/profile_step.py --attention-backend hybrid --batch-sizes 256 --context 768 \
                             --prefill-reqs 8 --prefill-len 1024 --engine-args "$e" || exit 1; done' ;;
    online-32-trace) stage online-32-trace 570 env ONLINE_TRACE=1 bash -c \
                       'online_32 "{}" "{\"interleave_prefill_tokens\": 1024}"' ;;
    # The graph-batch cliff (bench/NOTES.md, 2026-12-03): 256-row graphs (the default below 70 GiB) vs the default.
    online-32-graphs) stage online-32-graphs 570 bash -c 'online_32 "{\"cuda_graph_max_bs\": 256}" "{}"' ;;
    # The next interleave budgets (bench/NOTES.md, sixth session: the fitted simulator picks 768; 640 below it).
    online-32-next) stage online-32-next 330 bash -c \
                      'online_32 "{\"interleave_prefill_tokens\": 768}" "{\"interleave_prefill_tokens\": 640}"' ;;
    # One mixed step (a 1408-token chunk + 128 decode rows at 640 context) vs the chunk and the decode step apart.
    profile-mixed) stage profile-mixed 240 python3 bench/profile_step.py --attention-backend hybrid --batch-sizes 128 \
                     --context 640 --prefill-reqs 1 --prefill-len 1408 --mixed 1408 128 ;;
    # The last 8192-token chunk of a 100k prompt (92k cached): attention vs GEMM time in the kernel table.
    profile-long-prefill) stage profile-long-prefill 240 python3 bench/profile_step.py --attention-backend hybrid \
                            --batch-sizes 1 --prefill-reqs 1 --prefill-len 8192 --prefill-prefix 92000 ;;
    # The same with the H200's default 16384-token chunks (the last one of a 100k prompt).
    profile-long-prefill16) stage profile-long-prefill16 240 python3 bench/profile_step.py --attention-backend hybrid \
                              --batch-sizes 1 --prefill-reqs 1 --prefill-len 16384 --prefill-prefix 83616 ;;
    # ... over the slot run 1..n: FlashInfer's dense (ragged) prefill, as a 100k prompt on a fresh pool runs it.
    profile-long-prefill16-dense) stage profile-long-prefill16-dense 240 python3 bench/profile_step.py \
                                    --attention-backend hybrid --batch-sizes 1 --prefill-reqs 1 --prefill-len 16384 \
                                    --prefill-prefix 83616 --dense ;;
    # One 100k prompt with the step trace (GPU ms per forward next to its host launch time): TTFT vs GPU busy.
    long-context-100k-trace) stage long-context-100k-trace 330 bash -c 'TESSERA_STEP_TRACE="$OUT/trace-100k.jsonl" \
                               python3 bench/long_context.py --input-lens 100000 &&
                               python3 bench/trace_summary.py "$OUT/trace-100k.jsonl"' ;;
    # The 100k prompt with the GPU's SM clock, power and clock-event reasons sampled every 100 ms (a step trace showed the
    # GPU busy for all of the TTFT, yet the chunks run ~15 % slower than the same chunk in profile_step.py).
    long-context-100k-clocks) stage long-context-100k-clocks 200 bash -c 'with_clocks "$OUT/smi-100k.csv" \
                                python3 bench/long_context.py --input-lens 100000' ;;
    # The 100k prompt's last 16k chunk in profile_step.py over random KV (the default now) and over zeros, with clocks.
    profile-dense-clocks) stage profile-dense-clocks 300 bash -c 'a="--attention-backend hybrid --batch-sizes 1
        --prefill-reqs 1 --prefill-len 16384 --prefill-prefix 83616 --dense"
        with_clocks "$OUT/smi-dense-random.csv" python3 bench/profile_step.py $a | grep -E "^prefill|^busy|^SM|^power|samples"
        with_clocks "$OUT/smi-dense-zero.csv" python3 bench/profile_step.py $a --zero-kv | grep -E "^prefill|^busy|^SM|^power|samples"' ;;
    # Batch-1 TTFT and decode at 512 tokens with the dense-prefill threshold at 2048 (the old default) and at its default.
    single-dense-threshold) stage single-dense-threshold 330 bash -c 'for n in 2048 256; do echo "dense threshold $n";
        TESSERA_FLASHINFER_DENSE_PREFILL=$n python3 bench/single_stream.py --runs 5 --output-len 64; date; done' ;;
    # Long-context decode at batch 8 (64k tokens each) on each decode backend: the hybrid rule picks by the longest
    # sequence (triton up to 131072), measured so far at batch 1 only.
    decode-long-batch) stage decode-long-batch 300 bash -c 'for b in triton flashinfer; do echo "backend $b";
        python3 bench/profile_step.py --attention-backend $b --batch-sizes 8 1 --context 65536 --prefill-reqs 1 \
          --prefill-len 128 | grep -E "^decode bs|PROFILE"; done' ;;
    # Programmatic dependent launch on a graphed chain of 128 batch-1 GEMVs (the 8B layer's projections), bf16 and FP8:
    # plain GEMVs (measured 2026-12-04), then the engine's fused GEMVs with kernels/pdl.py off and on, then its tests.
    pdl) stage pdl 300 bash -c 'python3 bench/pdl_bench.py; python3 bench/pdl_bench.py --fp8;
           python3 bench/pdl_bench.py --engine-kernels; python3 bench/pdl_bench.py --engine-kernels --fp8;
           python3 -m pytest -q -m gpu -o addopts="" -rA tests/kernels/test_pdl.py tests/engine/test_gpu_pdl.py' ;;
    # Attention's idle DRAM time at batch 1: the o projection from L2 vs DRAM, and an L2 touch of its weights on a side
    # stream during attention (bench/l2_prefetch_bench.py), FP8 and bf16.
    l2-prefetch) stage l2-prefetch 120 bash -c 'python3 bench/l2_prefetch_bench.py; python3 bench/l2_prefetch_bench.py --bf16' ;;
    # Batch-1 decode step (FP8 and bf16) with PDL off and on, graphs recaptured in turn on one runner (bench/step_ab.py):
    # the engine-level check before PDL is made default.
    pdl-step) stage pdl-step 400 python3 bench/step_ab.py --switch pdl --quantizations fp8,bf16 ;;
    # Every one-request chunk of 256+ tokens dense (the 100k prompt's last 1,696-token chunk too): the run that moved the
    # default threshold from 2048 to 256 (now the same as long-context-100k).
    long-context-100k-dense256) stage long-context-100k-dense256 200 env TESSERA_FLASHINFER_DENSE_PREFILL=256 \
                                  python3 bench/long_context.py --input-lens 100000 ;;
    # The step-token budget of mixed chunks: 1024 / 2048 / 3072 (1536 is the default, run by online-32).
    online-32-sweep) stage online-32-sweep 570 bash -c 'm="\"enable_mixed_chunk\": true, \"mixed_chunk_step_tokens\""
                       online_32 "{$m: 1024}" "{$m: 2048}" "{$m: 3072}"' ;;
    # Decode-first chunked prefill (--interleave-prefill-tokens) at 32 req/s: 1024 / 2048 prompt tokens per step.
    online-32-interleave) stage online-32-interleave 570 bash -c \
                            'online_32 "{\"interleave_prefill_tokens\": 1024}" "{\"interleave_prefill_tokens\": 2048}"' ;;
    # Offline 256 requests (inputs 256-1024, 256 out): bf16, FP8 weights, FP8 weights + FP8 KV (target >= 1.3x bf16).
    # Before interleaving can be the default: its cost on the offline workload (256 requests at once).
    offline-interleave) stage offline-interleave 400 bash -c 'g="\"cuda_graph_max_bs\": 256"
                   for e in "{$g}" "{$g, \"interleave_prefill_tokens\": 1024}"; do
                     python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                       --engine-args "$e" | grep "^{" || exit 1; done';;
    # bf16 against FP8 weights + FP8 KV only (the 1.3x target), one log.
    offline-fp8-pair) stage offline-fp8-pair 400 bash -c 'g="\"cuda_graph_max_bs\": 256"
                   for e in "{$g}" "{$g, \"quantization\": \"fp8\", \"kv_cache_dtype\": \"fp8_e4m3\"}"; do
                     python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                       --engine-args "$e" | grep "^{" || exit 1; done';;
    offline-fp8) stage offline-fp8 570 bash -c 'g="\"cuda_graph_max_bs\": 256"
                   for e in "{$g}" "{$g, \"quantization\": \"fp8\"}" "{$g, \"quantization\": \"fp8\", \"kv_cache_dtype\": \"fp8_e4m3\"}"; do
                     python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                       --engine-args "$e" | grep "^{" || exit 1; done';;
    # Batch-1 AWQ GEMV: GemLite's Triton kernels (pip gemlite, carried in .whl_gpu) against kernels/awq_gemv.py.
    gemlite-bench) stage gemlite-bench 420 python3 bench/gemlite_bench.py ;;
    tinygemm-bench) stage tinygemm-bench 300 python3 bench/gemlite_bench.py --matmul-types "" ;;
    # Batch-1 decode attention: 128-token splits past 1024 tokens (kernels/decode_attention.py LONG_SPLIT_*), the kernel
    # sweep, its GPU tests, then the engine's batch-1 step at 1.5k / 2k / 3k context with the rule off and on.
    long-split) stage long-split 420 bash -c 'python3 bench/kernels_bench.py --sweep-min-split-len &&
                  python3 -m pytest -q -m gpu -o addopts="" '"$XDIST"' tests/kernels/test_kernel_fp8_kv.py \
                    tests/kernels/test_kernel_attention.py tests/kernels/test_kernel_gpu.py -k decode &&
                  python3 bench/step_ab.py --switch long-split --quantizations bf16,fp8 --contexts 1536 2048 3072' ;;
    # The decode kernel doing the rotary + K/V store itself (DecodeRotary): kernel + engine GPU tests, then the batch-1
    # step with it off / on at 640 and 2048 tokens.
    fused-rotary) stage fused-rotary 420 bash -c 'python3 -m pytest -q -m gpu -o addopts="" -rA '"$XDIST"' \
                    tests/kernels/test_kernel_gpu.py tests/kernels/test_kernel_fp8_kv.py tests/kernels/test_kernel_fused.py -k "decode or rotary" &&
                    python3 -m pytest -q -m gpu -o addopts="" -rA tests/engine/test_gpu_fused_rotary.py &&
                    python3 bench/step_ab.py --switch fused-rotary --quantizations bf16,fp8 --contexts 640 2048' ;;
    # The fused decode rotary at large batches (measured at batch 1 only so far): every split program loads q twice.
    fused-rotary-batch) stage fused-rotary-batch 300 bash -c 'for b in 64 256; do
                          python3 bench/step_ab.py --switch fused-rotary --quantizations bf16 --batch-size $b --contexts 768
                          done' ;;
    # Bit-identity of the fused rotary at large batches: kernel tests (64 / 256 rows) and the engine step with the
    # repeat check (are rounds of one setting identical?).
    fused-rotary-check) stage fused-rotary-check 300 bash -c 'python3 -m pytest -q -m gpu -o addopts="" -rA \
                          tests/kernels/test_kernel_fused.py -k rotary;
                          python3 bench/step_ab.py --switch fused-rotary --quantizations bf16,fp8 --batch-size 64 --contexts 768 --rounds 2;
                          python3 bench/step_ab.py --switch fused-rotary --quantizations bf16,fp8 --contexts 640' ;;
    # The tensor-core AWQ GEMV (CUDA via NVRTC): GPU tests, then per-projection times against the Triton GEMV.
    awq-cuda) stage awq-cuda 400 bash -c 'python3 -m pytest -q -m gpu -o addopts="" -rA tests/kernels/test_awq_gemv_cuda.py 2>&1 | tail -25;
                 python3 bench/awq_cuda_bench.py' ;;
    # The CUDA AWQ GEMV in the engine: GPU AWQ tests (batch-1 fp16 goes through it), then single stream with it
    # off / on.
    awq-cuda-engine) stage awq-cuda-engine 400 bash -c 'python3 -m pytest -q -m gpu -o addopts="" -rA tests/engine/test_gpu_awq.py 2>&1 | tail -6;
                 for on in 0 1; do TESSERA_AWQ_CUDA_GEMV=$on python3 bench/single_stream.py --quantization awq \
                   --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep decode_tok_s; done' ;;
    # AWQ (CUDA GEMV, default tiles) and bf16 single stream on one machine: the AWQ / bf16 ratio.
    awq-ratio) stage awq-ratio 240 bash -c 'python3 bench/single_stream.py --quantization awq --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep -E "decode_tok_s|AWQ batch-1 GEMV";
                 python3 bench/single_stream.py --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep decode_tok_s' ;;
    # Everything the fourteenth session left unmeasured, ~5 minutes: GPU tests of the CUDA GEMV (PDL chain included)
    # and of the engine's AWQ path, the 13-config sweep (tiles 4, PDL), PDL in the engine step, the AWQ / bf16 ratio.
    awq-next) stage awq-next-tests 240 python3 -m pytest -q -m gpu -o addopts="" -rA tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_awq.py
              stage awq-next-sweep 200 python3 bench/awq_cuda_bench.py
              stage awq-next-rows 200 python3 bench/awq_cuda_bench.py --rows 2,4,8,16,64
              stage awq-next-pdl 200 python3 bench/step_ab.py --switch awq-pdl --quantizations awq --contexts 640
              stage awq-next-ratio 240 bash -c 'python3 bench/single_stream.py --quantization awq --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep -E "decode_tok_s|AWQ batch-1 GEMV";
                 python3 bench/single_stream.py --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep decode_tok_s' ;;
    # fifteenth session: the tensor-core CUDA FP8 GEMV (tests, sweep against the Triton GEMV, engine step A/B,
    # FP8 and bf16 single stream on one machine; the log must say `FP8 batch-1 GEMV: CUDA`)
    s15-fp8) stage s15-fp8-tests 220 python3 -m pytest -q -m gpu -o addopts="" -rA -x tests/kernels/test_fp8_gemv_cuda.py tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_fp8.py
             stage s15-fp8-sweep 170 python3 bench/fp8_cuda_bench.py
             stage s15-fp8-step 150 python3 bench/step_ab.py --switch fp8-cuda --quantizations fp8 --contexts 640
             stage s15-fp8-ratio 200 bash -c 'python3 bench/single_stream.py --quantization fp8 --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep -E "decode_tok_s|FP8 batch-1 GEMV";
                python3 bench/single_stream.py --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep decode_tok_s' ;;
    # AWQ with PDL on by default and batches of 2-64 rows through awq_gemm_cuda: GPU tests, single stream, and an
    # offline 32-request run (decode batches <= 32) with the small-batch kernel off / on, then bf16
    s15-awq) stage s15-awq-tests 240 python3 -m pytest -q -m gpu -o addopts="" -rA -x tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_awq.py
             stage s15-awq-single 120 bash -c 'python3 bench/single_stream.py --quantization awq --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 | grep -E "decode_tok_s|AWQ batch-1 GEMV"'
             stage s15-awq-batch32 260 bash -c 'for v in 1 64 bf16; do echo "AWQ_CUDA_MAX_ROWS=$v";
                 if [ $v = bf16 ]; then q=""; else q="\"quantization\": \"awq\", "; fi;
                 TESSERA_AWQ_CUDA_MAX_ROWS=${v/bf16/64} python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                   --num-prompts 32 --min-input 256 --max-input 1024 --output-len 256 \
                   --engine-args "{${q}\"attention_backend\": \"triton\", \"skip_tokenizer_init\": true}" 2>&1 | tail -2; done' ;;
    # awq_gemm_small with up to 4 column groups (32 rows) per weight pass
    s15-awq32) stage s15-awq32-tests 170 python3 -m pytest -q -m gpu -o addopts="" -rA -x tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_awq.py -k "small_batch or fp16 or matches_reference"
               stage s15-awq32-rows 60 python3 bench/awq_cuda_bench.py --rows 8,16,24,32,64
               stage s15-awq32-batch 150 bash -c 'for v in 1 4; do echo "AWQ_CUDA_MAX_GROUPS=$v";
                 TESSERA_AWQ_CUDA_MAX_GROUPS=$v python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                   --num-prompts 32 --min-input 256 --max-input 1024 --output-len 256 \
                   --engine-args "{\"quantization\": \"awq\", \"attention_backend\": \"triton\", \"skip_tokenizer_init\": true}" 2>&1 | tail -2; done' ;;
    # the FP8 CUDA GEMV again, after applying bench/results/2026-12-05-s15-fp8-cuda-v2-unmeasured.diff (four HMMA
    # chains per tile, a chunk's ring slot refilled before its math)
    s15-fp8b) stage s15-fp8b-tests 80 python3 -m pytest -q -m gpu -o addopts="" -x tests/kernels/test_fp8_gemv_cuda.py
              stage s15-fp8b-sweep 90 python3 bench/fp8_cuda_bench.py
              stage s15-fp8b-step 90 env TESSERA_FP8_CUDA_GEMV=1 python3 bench/step_ab.py --switch fp8-cuda --quantizations fp8 --contexts 640 ;;
    # sixteenth session, first call on an H100 (the issue's ratios are "H100 and/or H200"; every quantized batch-1
    # figure since the second session is an H200's): H100 FP8 tiles, then bf16 / AWQ / FP8 single stream on one
    # machine, the GPU tests the fifteenth session left unrun, and the FP8 CUDA GEMV v2 against the Triton GEMV
    s16-h100) stage s16-h100-roofline 60 python3 bench/roofline.py
              stage s16-h100-fp8tiles 120 python3 bench/quant_gemv_sweep.py --kind fp8 --out "$OUT/fp8_h100.json"
              stage s16-h100-ratio 300 bash -c 'for q in bf16 awq fp8; do echo "== $q";
                 if [ $q = bf16 ]; then a=""; else a="--quantization $q"; fi;
                 TESSERA_FP8_GEMV_TUNED=$OUT/fp8_h100.json python3 bench/single_stream.py $a --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 |
                   grep -E "decode_tok_s|batch-1 GEMV"; done'
              stage s16-h100-tests 200 python3 -m pytest -q -m gpu -o addopts="" -rf tests/kernels/test_fp8_gemv_cuda.py tests/engine/test_gpu_fp8.py tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_awq.py
              stage s16-h100-fp8cuda 90 python3 bench/fp8_cuda_bench.py --quick ;;
    # sixteenth session, second call (H100): the engine GPU tests call 1 ran out of time for (xdist now), the AWQ
    # CUDA GEMV's sweep on this device (its defaults are the H200's), where a batch-1 step goes per kernel for
    # bf16 / FP8 / AWQ at the single-stream context, then the three single streams with FP8_TUNED's new H100 entry.
    s16b-h100) stage s16b-tests 170 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rf tests/kernels/test_fp8_gemv_cuda.py \
                 tests/engine/test_gpu_fp8.py tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_awq.py
               stage s16b-awqcuda 100 python3 bench/awq_cuda_bench.py
               stage s16b-profile 160 bash -c 'for e in "{}" "{\"quantization\": \"fp8\"}" "{\"quantization\": \"awq\"}"; do
                 echo "engine args: $e"; python3 bench/profile_step.py --batch-sizes 1 --prefill-reqs 1 --context 640 \
                   --prefill-len 128 --engine-args "$e" 2>&1 | grep -vE "Warning|warn_once|^-+|^\s*$|cuda(Memcpy|Graph|Launch|Device|Stream)|Activity|^prefill|nvjet|Self CPU" || exit 1; done'
               stage s16b-ratio 160 bash -c 'for q in bf16 fp8 awq; do echo "== $q";
                 if [ $q = bf16 ]; then a=""; else a="--quantization $q"; fi;
                 python3 bench/single_stream.py $a --engine-args "{\"attention_backend\": \"triton\"}" 2>&1 |
                   grep -E "decode_tok_s|batch-1 GEMV"; done' ;;
    # sixteenth session, third call (H100): the GPU tests with the fixed KV pool (9 OOMs in call 2 came from xdist
    # workers starving each other), the new AWQ dequantize kernel against the tree before it (.exp/old-69336be.tar,
    # carried): per projection, then where it shows for users: AWQ TTFT and large-batch offline throughput.
    s16c-h100) mkdir -p /tmp/old && tar xf .exp/old-69336be.tar -C /tmp/old && cp bench/awq_dequant_bench.py /tmp/old/bench/
               stage s16c-tests 170 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rf tests/kernels/test_fp8_gemv_cuda.py \
                 tests/engine/test_gpu_fp8.py tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_awq.py \
                 tests/engine/test_gpu_fused_rotary.py tests/engine/test_gpu_pdl.py "tests/kernels/test_awq_gemm.py::test_awq_dequantize_gpu_exact"
               stage s16c-dequant 80 python3 bench/awq_dequant_bench.py
               stage s16c-dequant-old 50 bash -c 'cd /tmp/old && python3 bench/awq_dequant_bench.py --default-only'
               stage s16c-ttft 120 bash -c awq_old_vs_new_ttft
               stage s16c-offline 160 bash -c awq_old_vs_new_offline ;;
    # sixteenth session, fourth call (H100): the dequantize kernel's default now 16 rows per program (call 3: 3.2x
    # faster than 32), its sweep around that, AWQ TTFT / offline against the old tree again, then the GPU tests.
    s16d-h100) mkdir -p /tmp/old && tar xf .exp/old-69336be.tar -C /tmp/old
               stage s16d-dequant 60 python3 bench/awq_dequant_bench.py
               stage s16d-ttft 120 bash -c awq_old_vs_new_ttft
               stage s16d-offline 140 bash -c awq_old_vs_new_offline
               stage s16d-tests 240 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rf tests/kernels/test_fp8_gemv_cuda.py \
                 tests/engine/test_gpu_fp8.py tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_awq.py \
                 tests/engine/test_gpu_fused_rotary.py tests/engine/test_gpu_pdl.py "tests/kernels/test_awq_gemm.py::test_awq_dequantize_gpu_exact" \
                 "tests/kernels/test_awq_gemm.py::test_awq_kernels_gpu" ;;
    # sixteenth session, fifth call (H100): with dequantize 3x faster, where dequantize + cuBLAS now beats the CUDA
    # small-batch kernel (AWQ_CUDA_MAX_ROWS / DEQUANT_MATMUL_MIN_ROWS), bf16 on call 4's offline workload, and
    # the Triton PDL switch on this device (it lost on the H200).
    s16e-h100) stage s16e-rows 150 python3 bench/awq_cuda_bench.py --rows 16,24,32,48,64
               stage s16e-bf16-offline 90 python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                 --num-prompts 128 --min-input 256 --max-input 1024 --output-len 256 \
                 --engine-args "{\"attention_backend\": \"triton\", \"skip_tokenizer_init\": true}"
               stage s16e-pdl 170 python3 bench/step_ab.py --switch pdl --quantizations bf16,fp8,awq ;;
    # sixteenth session, sixth call (H100): AWQ_CUDA_MAX_ROWS 40 and DEQUANT_MATMUL_MIN_ROWS 2 (call 5's crossover):
    # the AWQ GPU tests through the engine and kernels, and call 4's offline workload again.
    s16f-h100) stage s16f-tests 200 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rf tests/engine/test_gpu_awq.py \
                 tests/kernels/test_awq_gemm.py tests/kernels/test_awq_gemv_cuda.py tests/engine/test_gpu_pdl.py
               stage s16f-offline 80 python3 bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
                 --num-prompts 128 --min-input 256 --max-input 1024 --output-len 256 \
                 --engine-args "{\"quantization\": \"awq\", \"attention_backend\": \"triton\", \"skip_tokenizer_init\": true}" ;;
    # seventeenth session, first call (H100): the L2 prefetch beside batch-1 attention (kernels/l2_prefetch.py).
    # The microbench first (does a bulk prefetch land in L2? does it slow attention?), then the engine's decode
    # step per budget for FP8 / AWQ / bf16, then the GPU tests.
    s17a-h100) stage s17a-micro 150 bash -c 'python3 bench/l2_prefetch_bench.py && python3 bench/l2_prefetch_bench.py \
                 --programs 32 --chunk 4096 && python3 bench/l2_prefetch_bench.py --programs 2 --chunk 65536 &&
                 python3 bench/l2_prefetch_bench.py --bf16 --gate-up-mb 0'
               stage s17a-step 300 python3 bench/step_ab.py --switch l2-prefetch --quantizations fp8,awq,bf16 \
                 --l2-prefetch-mb 16,24,32,40 --reps 100
               stage s17a-tests 120 python3 -m pytest -q -m gpu -o addopts="" -rf tests/kernels/test_l2_prefetch.py \
                 tests/engine/test_gpu_l2_prefetch.py ;;
    # Eighteenth session: the FP8 LM head (tiles swept, then the batch-1 ratios with and without it), the L2
    # prefetch A/B at two budgets, and both features' GPU tests. Stage limits sum to 570 s.
    s18a) stage s18a-sweep 90 python3 bench/quant_gemv_sweep.py --kind fp8 --ops lm_head --out "$OUT/fp8_head_tuned.json"
          stage s18a-ratios 300 bash -c 'ratio_runs ":0:" "fp8:0:" "fp8:0:fp8" "awq:0:" "awq:0:fp8" ":0:fp8"'
          stage s18a-tests 120 python3 -m pytest -q -m gpu -o addopts="" -rf -k "lm_head or l2" \
            tests/engine/test_gpu_fp8.py tests/kernels/test_l2_prefetch.py tests/engine/test_gpu_l2_prefetch.py
          stage s18a-l2 60 python3 bench/step_ab.py --switch l2-prefetch --quantizations fp8,awq \
            --l2-prefetch-mb 24,32 --reps 50 ;;
    # Call 2: bf16, then AWQ with the FP8 head and the L2 prefetch (same machine); the L2 tests with tracebacks.
    s18b) stage s18b-ratios 130 bash -c 'ratio_runs ":0:" "awq:32:fp8"'
          stage s18b-tests 120 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf \
            tests/kernels/test_l2_prefetch.py tests/engine/test_gpu_l2_prefetch.py ;;
    # Nineteenth session: the FP8 layer tail (o + gate_up + down in one persistent launch, kernels/fp8_layer_tail.py):
    # its GPU tests (bit-identical to the three GEMVs, graphs), the 32-layer chain per grid size, the engine's decode
    # step off / on, then batch-1 tok/s: bf16, FP8 + FP8 head, the same with the tail. Stage limits sum to 560 s.
    s19a) stage s19a-tests 100 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf \
            tests/kernels/test_fp8_layer_tail.py tests/engine/test_fused_decode.py
          stage s19a-bench 90 python3 bench/fp8_tail_bench.py --per-sm 0,1,2,3,4
          stage s19a-step 70 python3 bench/step_ab.py --switch fp8-tail --quantizations fp8 --reps 50
          stage s19a-ratios 300 bash -c 'ratio_runs ":0:" "fp8:0:fp8:0" "fp8:0:fp8:1"' ;;
    # Call 2: the tail's GPU tests with room to compile, the tail with lean 2 everywhere (121 registers: 4 programs
    # per SM without spills, one o / down row block per program), and AWQ with the FP8 head on this H100.
    s19b) stage s19b-tests 240 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf \
            tests/kernels/test_fp8_layer_tail.py tests/engine/test_fused_decode.py
          stage s19b-bench 70 python3 bench/fp8_tail_bench.py --per-sm 4 --tiles "8,2,8,2,8,2"
          stage s19b-ratios 220 bash -c 'ratio_runs ":0:" "awq::fp8" "awq::"' ;;
    # Call 3: the ring FP8 GEMV loop (kernels/fp8_gemv_ring.py): GPU tests, the sweep with the ring tiles in the
    # candidates, then bf16, FP8 + FP8 head with the tables' tiles, and the same with the sweep's winners.
    s19c) stage s19c-tests 150 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf \
            tests/kernels/test_fp8.py tests/kernels/test_fp8_layer_tail.py -k "ring or layer_tail"
          stage s19c-sweep 120 python3 bench/quant_gemv_sweep.py --kind fp8 --ops qkv,o,gate_up,down \
            --out "$OUT/fp8_ring_tuned.json"
          stage s19c-ratios 240 bash -c 'ratio_runs ":0:" "fp8:0:fp8"
            TESSERA_FP8_GEMV_TUNED=$OUT/fp8_ring_tuned.json ratio_runs "fp8:0:fp8"' ;;
    # Prepared for the next call (nineteenth session, not run: no device time left): what the RMSNorm prologue costs
    # each FP8 GEMV shape (with vs without it, same tile), then the missing H200 cell, FP8 + FP8 head vs bf16.
    s20a) stage s20a-prologue 90 python3 bench/fp8_prologue_cost.py
          stage s20a-ratios 150 bash -c 'ratio_runs ":0:" "fp8:0:fp8"' ;;
    # Twentieth session: early-KV batch-1 attention (kernels/decode_attention.py, TESSERA_DECODE_EARLY_KV): its GPU
    # kernel tests (bit-identical to the plain launch with equal tiles, as a PDL launch), then the step A/B for the
    # three weight formats (the qkv GEMV triggers the attention launch as its programs start).
    s20b) stage s20b-tests 200 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf $XDIST \
            tests/kernels/test_kernel_fused.py tests/kernels/test_pdl.py -k "early_kv or fused_rotary_gpu or pdl"
          stage s20b-step 330 python3 bench/step_ab.py --switch early-kv --quantizations bf16,fp8,awq --rounds 3 \
            --reps 100 ;;
    # Then the ratios with it on (bf16, FP8 + FP8 head, AWQ + FP8 head) and its engine test.
    s20c) stage s20c-ratios 300 env TESSERA_DECODE_EARLY_KV=1 bash -c 'ratio_runs ":0:" "fp8:0:fp8" "awq::fp8"'
          stage s20c-engine-test 280 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf \
            tests/engine/test_gpu_early_kv.py ;;
    # Call 2: the same with the merge's first chunk requested with the log-sum-exps, and with the early kernel's
    # registers capped at 128 (so it fits beside three AWQ qkv programs; TESSERA_DECODE_EARLY_MAXNREG, removed since:
    # no faster); then the ratios with early KV on.
    s20d) stage s20d-tests 200 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf $XDIST \
            tests/kernels/test_kernel_fused.py tests/kernels/test_kernel_attention.py -k "early_kv or fused_rotary_gpu or gpu"
          stage s20d-step 150 python3 bench/step_ab.py --switch early-kv --quantizations bf16,fp8,awq --reps 100 \
            --contexts 640 8192 32768
          stage s20d-step-cap 100 env TESSERA_DECODE_EARLY_MAXNREG=128 python3 bench/step_ab.py --switch early-kv \
            --quantizations bf16,awq --reps 100
          stage s20d-ratios 300 env TESSERA_DECODE_EARLY_KV=1 bash -c 'ratio_runs ":0:" "fp8:0:fp8" "awq::fp8"
            TESSERA_DECODE_EARLY_MAXNREG=128 ratio_runs "awq::fp8"' ;;
    # Call 3: the early-KV engine test, then AWQ + FP8 head against bf16 (early KV on). The call also ran AWQ with the
    # qkv / o GEMVs at depth 4 (a knob since removed: 430.9 vs 437.8 tok/s at depth 2).
    s20e) stage s20e-engine-test 200 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf \
            tests/engine/test_gpu_early_kv.py
          stage s20e-ratios 240 env TESSERA_DECODE_EARLY_KV=1 bash -c 'ratio_runs ":0:" "awq::fp8"' ;;
    # Call 4, early KV now the default: the ratios at the defaults, AWQ also without its L2 prefetch.
    s20f) stage s20f-ratios 330 bash -c 'ratio_runs ":0:" "fp8:0:fp8" "awq::fp8" "awq:0:fp8"' ;;
    # Call 5: the o projection as a PDL launch after early-KV attention (bit-identical: step_ab exits non-zero
    # otherwise); FP8's qkv at 16 rows per program (384 programs: room on most SMs for one attention program) with
    # the early kernel uncapped / capped at 128 registers (a knob removed since); then bf16 and FP8 + FP8 head with
    # TESSERA_PDL_O=1.
    s20g) stage s20g-o-pdl 100 python3 bench/step_ab.py --switch o-pdl --quantizations bf16,fp8 --reps 100
          stage s20g-qkv16 120 bash -c 'echo "{\"NVIDIA H100 80GB HBM3/132sm\": {\"6144x4096\": {\"block_n\": 16,
            \"block_k\": 1024, \"num_warps\": 4, \"num_stages\": 1, \"split_k\": 1, \"lean\": 2}}}" > /tmp/qkv16.json
            for cap in 0 128; do echo "FP8 qkv 16 rows, early-KV register cap $cap"
              TESSERA_FP8_GEMV_TUNED=/tmp/qkv16.json TESSERA_DECODE_EARLY_MAXNREG=$cap python3 bench/step_ab.py \
                --switch early-kv --quantizations fp8 --reps 100 | tail -2; done'
          stage s20g-ratios 200 env TESSERA_PDL_O=1 bash -c 'ratio_runs ":0:" "fp8:0:fp8"' ;;
    # Twenty-first session: Nsight Compute counters of every batch-1 GEMV (bf16, FP8, AWQ; why each streams below
    # the copy rate). (Its second stage timed the FP8 prologue eagerly: the host's launch rate; now graph-timed.)
    s21a) stage s21a-ncu 360 bash -c gemv_ncu
          stage s21a-prologue 90 python3 bench/fp8_prologue_cost.py ;;
    # Call 2 ran three variants removed since (none faster; bench/NOTES.md, twenty-first session): the AWQ GEMV with
    # cp.async weight rings, the FP8 CUDA GEMV with cp.async rings, the FP8 Triton loop in fp16 pairs.
    # Call 3: the AWQ GEMV as persistent CTAs (kernels/awq_gemv_cuda.py `persist`): per-shape sweep against the
    # default, the engine step A/B (bit-identity enforced), its GPU tests, then bf16 and AWQ + FP8 head with and
    # without it.
    # Twenty-second session, call s22a (ran; its STAGED prologue A/B since removed, diff in bench/results/
    # 2026-12-06-s22-awq-staged-prologue.diff): the AWQ o / gate_up / down GEMVs letting the next GEMV start as their
    # CTAs start (kernels/awq_gemv_cuda.py EARLY_TRIGGER) per set of projections, where the step's time goes, ratios.
    s22a) stage s22a-tests 90 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf $XDIST \
            tests/kernels/test_awq_gemv_cuda.py -k "pdl_chain or graph or reference"
          stage s22a-trigger 120 python3 bench/step_ab.py --switch awq-early-trigger --quantizations awq --rounds 3 \
            --reps 100 --awq-early-trigger "o;down;o,down;o,gate_up,down"
          stage s22a-ratios 150 bash -c 'ratio_runs ":0:" "awq::fp8"; TESSERA_AWQ_EARLY_TRIGGER=o,down ratio_runs "awq::fp8"'
          stage s22a-profile 60 python3 bench/profile_step.py --batch-sizes 1 --prefill-reqs 1 --prefill-len 128 \
            --engine-args '{"quantization": "awq", "lm_head_quantization": "fp8"}' ;;
    # Twenty-third session, call 1: the ratios at the new defaults (AWQ early triggers on), the bf16 / FP8 Triton
    # GEMVs as a PDL chain (TESSERA_PDL_GEMV_CHAIN), the AWQ early-trigger kernel test, the engine PDL / chain tests.
    # Ran (bench/results/2026-12-06-s23-h100/); the chain was not taken: its stage and test need the patch
    # bench/results/2026-12-06-s22-gemv-chain.diff applied.
    s23b) stage s23b-ratios 180 bash -c 'ratio_runs ":0:" "awq::fp8" "fp8::fp8"'
          stage s23b-chain 170 python3 bench/step_ab.py --switch gemv-chain --quantizations fp8,bf16 --rounds 3 --reps 100
          stage s23b-tests 90 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf $XDIST \
            tests/kernels/test_awq_gemv_cuda.py -k "pdl_chain or graph or reference"
          stage s23b-engine-tests 150 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf tests/engine/test_gpu_pdl.py ;;
    # Call 2: the AWQ L2 prefetch budget with the early triggers on (then, on the warm machine, ratio_runs with AWQ at
    # 0 / 16 / 32 MB: bench/RESULTS.md, twenty-third session).
    s23c) stage s23c-l2 120 python3 bench/step_ab.py --switch l2-prefetch --quantizations awq --rounds 3 --reps 100 \
            --l2-prefetch-mb 16,32,48 ;;
    # Next session (needs `git apply bench/results/2026-12-06-s22-gemv-chain.diff`): the Triton GEMV chain per edge
    # for FP8 and bf16 (all three edges measured +0.90 % FP8, -1.77 % bf16), its engine test, then the ratios.
    s24a) stage s24a-chain 200 python3 bench/step_ab.py --switch gemv-chain --quantizations fp8,bf16 --rounds 3 \
            --reps 100 --gemv-chain "gate_up;down;o;gate_up,down"
          stage s24a-engine-test 280 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf \
            tests/engine/test_gpu_pdl.py -k gemv_chain
          stage s24a-ratios 130 bash -c 'ratio_runs ":0:" "fp8::fp8"' ;;
    s24b) stage s24b-chain 200 python3 bench/step_ab.py --switch gemv-chain --quantizations fp8,bf16 --rounds 3 \
            --reps 100 --gemv-chain "gate_up;down;o;gate_up,down"
          stage s24b-ratios 170 bash -c 'ratio_runs ":0:" "fp8::fp8" "awq::fp8"' ;;
    # Twenty-fifth session: the AWQ GEMV's group loop with its mma chain split (kernels/awq_gemv_cuda.py CHAINS):
    # per GEMV, then in the engine's step, the kernel tests with the split configs, then the ratios at the default.
    s25a) stage s25a-bench 200 python3 bench/awq_cuda_bench.py --quick
          stage s25a-step 240 python3 bench/step_ab.py --switch awq-chains --quantizations awq --rounds 3 --reps 100 \
            --awq-chains "2;2e;4e"
          stage s25a-tests 120 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf $XDIST \
            tests/kernels/test_awq_gemv_cuda.py -k "reference or graph or pdl_chain" ;;
    # Call 2: the per-class chains (qkv / o 4 accumulators, down 2 with the early refill) in the step, the engine's
    # AWQ GPU tests at the new default, then the ratios: bf16, AWQ + FP8 head at the new default twice and with one
    # chain everywhere (the old kernel) once, FP8 + FP8 head, bf16 again.
    s25b) stage s25b-step 150 python3 bench/step_ab.py --switch awq-chains --quantizations awq --rounds 3 --reps 100 \
            --awq-chains "4,1,2e;4,2,2e;4e,1,2e"
          stage s25b-engine-tests 200 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf tests/engine/test_gpu_awq.py
          stage s25b-ratios 330 bash -c 'ratio_runs ":0:" "awq::fp8"; TESSERA_AWQ_CUDA_CHAINS=1 ratio_runs "awq::fp8";
            ratio_runs "awq::fp8" "fp8::fp8" ":0:"' ;;
    # Call 3: tiles x warps x chain settings per GEMV (does splitting the chain move the best tiles / warps?).
    s25c) stage s25c-sweep 400 python3 bench/awq_cuda_bench.py --chains ;;
    # H200: the default chains against one chain in the step, then the ratios at today's defaults.
    s25d) stage s25d-step 120 python3 bench/step_ab.py --switch awq-chains --quantizations awq --rounds 3 --reps 100 \
            --awq-chains "4,2,2e"
          stage s25d-ratios 200 bash -c 'ratio_runs ":0:" "awq::fp8" "fp8::fp8"' ;;
    # The small-batch kernel (2-8 rows: one column group) with its chains split, then its kernel tests.
    s25g) stage s25g-rows 150 python3 bench/awq_cuda_bench.py --rows 2,4,8 --small-splits 1,2,4
          stage s25g-tests 120 python3 -m pytest -q -m gpu -o addopts="" --tb=short -rf $XDIST \
            tests/kernels/test_awq_gemv_cuda.py -k "small_batch" ;;
    # Twenty-sixth session: where the batch-1 step waits (bench/step_timeline.py: per-kernel advance of the
    # stream's end in graph replays), bf16 / FP8 + FP8 head / AWQ + FP8 head at 640 tokens.
    s26a) stage s26a-timeline 240 bash -c 'for e in "{}" "{\"quantization\": \"fp8\", \"lm_head_quantization\": \"fp8\"}" \
            "{\"quantization\": \"awq\", \"lm_head_quantization\": \"fp8\"}"; do
            python3 bench/step_timeline.py --engine-args "$e"; done' ;;
    # Next: inside the early-KV attention (bench/attention_stamps.py: per-program %globaltimer at start, before and after
    # the PDL wait, at the end), bf16 / FP8 + FP8 head / AWQ + FP8 head at 640 tokens. Run 2026-12-07 (twenty-seventh session,
    # bench/results/2026-12-07-s27-h100/).
    stamps) stage stamps 200 bash -c 'for e in "{}" "{\"quantization\": \"fp8\", \"lm_head_quantization\": \"fp8\"}" \
              "{\"quantization\": \"awq\", \"lm_head_quantization\": \"fp8\"}"; do
              python3 bench/attention_stamps.py --engine-args "$e"; done' ;;
    # The stamps (twenty-seventh session) say the early-KV attention never waits for qkv and that FP8 loses after the
    # wait (median 5.3 vs 4.5 us per program, last end 9.0 vs 6.5 us after the first wait return): the o GEMV, a PDL
    # launch after the attention's wait, requests its whole first iteration (lean 4 x 1024 = all of K: FP8 o's 16.8 MB)
    # before its own wait, queued in DRAM ahead of the attention's post-wait loads. `Fp8GemvConfig.prewait` sends only
    # 1-3 of those chunks before the wait (0 = all, the control), through the FP8 tile overlay: GPU tests, the step
    # timelines, then the single stream at the best span against the control, twice each, next to bf16.
    s28a) stage s28a-tests 240 python3 -m pytest -q -m gpu -o addopts="" $XDIST tests/kernels/test_fp8.py tests/kernels/test_fp8_prewait.py -k "prewait or lean"
          for p in 0 1 2 3; do
            fp8_tiles "4096x4096:4:$p" > /tmp/o-pw$p.json
            TESSERA_FP8_GEMV_TUNED=/tmp/o-pw$p.json stage "s28a-o-pw$p" 90 python3 bench/step_timeline.py \
              --engine-args '{"quantization": "fp8", "lm_head_quantization": "fp8"}'
          done
          best=$(for p in 1 2 3; do echo "$(grep -o 'span median [0-9.]*' "$OUT/s28a-o-pw$p.log" | awk '{print $3}') $p"; done |
                 sort -n | head -1 | awk '{print $2}')
          echo "best prewait by span: $best" | tee -a "$OUT/summary.txt"
          stage s28a-ratio 400 bash -c "ratio_runs ':0:'; for r in 1 2; do for p in 0 ${best:-2}; do echo \"prewait \$p\";
            TESSERA_FP8_GEMV_TUNED=/tmp/o-pw\$p.json ratio_runs fp8::fp8; done; done" ;;
    # s28a (2026-12-07, H100): o with prewait 3 -> span 3,001 -> 2,975 us, single stream 326.9 / 327.4 -> 330.6 / 330.5
    # tok/s (1.775x bf16's 186.2); prewait 1 / 2 gave the attention back 2.3 / 1.8 us but o lost more. The same for the
    # other PDL launches that request chunks before their wait while the kernel before them still streams: down
    # (launched by gate_up's early trigger, lean 3) with 1 / 2, qkv (launched by down's, lean 2) with 1, each on top
    # of o's 3, and o's own edge (o lets gate_up start early) on top of it; then the single stream at the best span
    # against o's 3 alone and against o as before (all 4 chunks before the wait), twice each.
    s28b) # name:o's prewait:down's:qkv's:TESSERA_PDL_GEMV_CHAIN (empty: the default gate_up,down)
          for v in base:3:0:0: down1:3:1:0: down2:3:2:0: qkv1:3:0:1: chain-o:3:0:0:o,gate_up,down none:0:0:0:; do
            IFS=: read -r name opw dpw qpw chain <<< "$v"
            fp8_tiles "4096x4096:4:$opw" "4096x14336:3:$dpw" "6144x4096:2:$qpw" > "/tmp/s28b-$name.json"
            echo "export TESSERA_FP8_GEMV_TUNED=/tmp/s28b-$name.json${chain:+ TESSERA_PDL_GEMV_CHAIN=$chain}" > "/tmp/s28b-$name.env"
            [ "$name" = none ] || (. "/tmp/s28b-$name.env" && stage "s28b-$name" 90 python3 bench/step_timeline.py \
              --engine-args '{"quantization": "fp8", "lm_head_quantization": "fp8"}')
          done
          best=$(for n in down1 down2 qkv1 chain-o; do echo "$(grep -o 'span median [0-9.]*' "$OUT/s28b-$n.log" | awk '{print $3}') $n"; done |
                 sort -n | head -1 | awk '{print $2}')
          echo "best by span: $best" | tee -a "$OUT/summary.txt"
          stage s28b-ratio 480 bash -c "ratio_runs ':0:'; for r in 1 2; do for n in none base ${best:-down1}; do echo \"variant \$n\";
            (. /tmp/s28b-\$n.env && ratio_runs fp8::fp8); done; done" ;;
    # s28b (2026-12-07, H100; spans us, o's 3 in all): base 2,977.9, down 1 2,956.0, down 2 2,954.0, qkv 1 2,945.7, o's edge
    # 3,012.4; single stream base 330.8 / 330.4, qkv 1 331.1 / 331.0, o's 4 327.2 / 327.3, bf16 186.1 tok/s. Down's and
    # qkv's prewait act on different edges (gate_up's tail, down's tail): the single stream with both (ratio only: the
    # session's last device minutes). Run 2026-12-07: o 3 + qkv 1 + down 2 333.4 / 333.4 against o 3 + qkv 1 331.5 /
    # 331.1 (bf16 186.1): taken as the H100 defaults; down 1's run was cut by the end of the device time.
    s28d) for v in dq2:2:1 dq1:1:1 qkv1:0:1; do
            IFS=: read -r name dpw qpw <<< "$v"
            fp8_tiles "4096x4096:4:3" "4096x14336:3:$dpw" "6144x4096:2:$qpw" > "/tmp/s28d-$name.json"
          done
          stage s28d-ratio 400 bash -c 'ratio_runs ":0:"; for n in dq2 qkv1 dq2 qkv1 dq1; do echo "variant $n";
            TESSERA_FP8_GEMV_TUNED=/tmp/s28d-$n.json ratio_runs fp8::fp8; done' ;;
    # AWQ + FP8 head at today's defaults (with s28b, whose ratio stage runs bf16, on a device that has no same-call
    # AWQ figure yet, e.g. the H200)
    s28c) stage s28c-awq 120 bash -c 'ratio_runs "awq::fp8"' ;;
    # Where the ~50-70 us per token between the FP8 step's span and the single stream's token time goes (twenty-eighth
    # session: 333.4 tok/s = 3.00 ms per token against a ~2.92-2.95 ms graph span): the single stream with the step
    # trace (`TESSERA_STEP_TRACE`: host launch time and CUDA-event GPU time of each forward, i.e. the replay's input
    # copies plus the graph), then the decode forwards' median GPU time against their launch cadence (the host loop's
    # period = the token time): cadence - GPU time is what the GPU spends outside the forward (sampling, the batch's
    # H2D copies, the req_to_token store). Prepared 2026-12-07, not run.
    s29a) stage s29a-trace 150 bash -c 'TESSERA_STEP_TRACE=/tmp/s29a.jsonl python3 bench/single_stream.py --quantization fp8 \
            --engine-args "{\"attention_backend\": \"triton\", \"lm_head_quantization\": \"fp8\"}" 2>&1 | grep decode_tok_s | cut -c1-60
          python3 -c "import json, statistics as st
rows = [json.loads(l) for l in open(\"/tmp/s29a.jsonl\")]
dec = [r for r in rows if r[\"mode\"] == \"decode\" and r[\"rows\"] == 1]
gaps = [b[\"t\"] - a[\"t\"] for a, b in zip(dec, dec[1:]) if b[\"t\"] - a[\"t\"] < 0.02]
print(\"decode forwards\", len(dec), \"GPU ms median\", st.median(r[\"gpu_ms\"] for r in dec),
      \"launch cadence ms median\", round(1e3 * st.median(gaps), 3))"' ;;
    # s29b: the decode inputs built into the graph's input block (engine/graph_inputs.py) against the session-start
    # tree (8b62ceb, /tmp/base): GPU tests of the graph paths, then per tree the token timeline (GPU ops outside the
    # graph per token) and the FP8 single stream, then bf16 for the ratio.
    s29b) git worktree add -f /tmp/base 8b62ceb >/dev/null 2>&1; cp bench/token_timeline.py /tmp/base/bench/
          stage s29b-tests 240 python3 -m pytest -q -o addopts="" $XDIST -rf tests/engine/test_gpu_graph_padding.py \
            tests/engine/test_gpu_engine.py tests/engine/test_gpu_speculative.py tests/engine/test_gpu_fp8.py \
            tests/kernels/test_fp8_prewait.py
          for t in /tmp/base .; do
            n=$([ "$t" = . ] && echo new || echo base)
            (cd $t && stage "s29b-timeline-$n" 120 python3 bench/token_timeline.py \
              --engine-args '{"quantization": "fp8", "lm_head_quantization": "fp8"}')
          done
          for r in 1 2; do for t in /tmp/base .; do
            n=$([ "$t" = . ] && echo new || echo base)
            (cd $t && stage "s29b-fp8-$n-$r" 150 bash -c "ratio_runs fp8::fp8")
          done; done
          stage s29b-bf16 150 bash -c "ratio_runs ':0:'" ;;
    # s29b (2026-12-07, H100): outside the graph per FP8 token 68.4 -> 52.1 us (period 2,972 -> 2,954 us), single
    # stream 333.0 / 333.2 -> 335.2 / 335.2 tok/s (bf16 186.7: 1.795x); torch's argmax of the 128k row is 29.5 us of
    # the 52. s29c: the chunked argmax (kernels/argmax.py) and the sampler's model-dtype greedy path on top; the
    # measurement first, then the tests of everything this session touched, each file its own summary.
    s29c) stage s29c-timeline 120 python3 bench/token_timeline.py --engine-args '{"quantization": "fp8", "lm_head_quantization": "fp8"}'
          stage s29c-ratio 200 bash -c "ratio_runs fp8::fp8 fp8::fp8 ':0:'"
          stage s29c-tests-cpu-paths 120 python3 -m pytest -q -o addopts="" -rf tests/kernels/test_argmax.py \
            tests/unit/test_sampler.py tests/engine/test_gpu_graph_padding.py
          stage s29c-tests-prewait 120 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rf tests/kernels/test_fp8_prewait.py
          stage s29c-tests-engine 200 python3 -m pytest -q -m gpu -o addopts="" $XDIST -rf tests/engine/test_gpu_engine.py \
            tests/engine/test_gpu_speculative.py tests/engine/test_gpu_fp8.py ;;
    suite-skip-hf) stage suite 300 python3 bench/run_suite.py --skip-hf ;;
    *) echo "unknown stage $s" ;;
  esac
done
cat "$OUT/summary.txt"
