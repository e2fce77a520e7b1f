"""ServerArgs: every engine and server setting, parsed once, frozen, validated at construction.

Flag names follow SGLang (`--tp-size`, `--mem-fraction-static`, ...); field names are their snake_case.
Invalid values raise `ArgsError` with one line, before any weights load.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any

from engine.args_error import ArgsError
from engine.speculative_args import check_speculative_args

logger = logging.getLogger(__name__)

SCHEDULE_POLICIES = ("fcfs", "lpm", "priority")
LB_POLICIES = ("round_robin", "min-load", "cache-aware", "min-latency", "weighted")
ATTENTION_BACKENDS = ("torch_native", "triton", "flashinfer", "hybrid")
DTYPES = ("auto", "float32", "bfloat16", "float16", "half", "float", "bf16", "fp16", "fp32")
FP32_DTYPES = ("float32", "float", "fp32")
# KV cache storage: auto = the model's dtype; fp8_e4m3 halves the bytes per token (per-layer scales).
# "bfloat16" and "fp8" are accepted spellings of bf16 and fp8_e4m3 (SGLang / vLLM use them).
KV_CACHE_DTYPES = ("auto", "bf16", "bfloat16", "fp8_e4m3", "fp8")
LOAD_FORMATS = ("auto", "safetensors", "dummy")
# --quantization: weight quantization families (engine/quant); the checkpoint's quantization_config must agree.
QUANTIZATIONS = ("awq", "fp8")
# --lm-head-quantization: the LM head stays in the model dtype unless asked (published FP8 / AWQ checkpoints
# keep it 16-bit); fp8 stores it per output channel in e4m3 (engine/layers/embedding.py).
LM_HEAD_QUANTIZATIONS = ("fp8",)
DEVICES = ("auto", "cpu", "cuda")
GRAMMAR_BACKENDS = ("xgrammar", "llguidance", "none")
# Output formats the API process parses (app/structured); named here so a typo fails at start.
TOOL_CALL_PARSERS = ("llama3", "qwen", "hermes", "mistral")
REASONING_PARSERS = ("qwen3", "deepseek-r1")
# A mixed step always computes at least this many prompt tokens, however many decodes ride along, so
# prefill keeps moving under any load (engine/mixed_chunk.py).
MIN_MIXED_PREFILL_TOKENS = 256
# The interleave budget when --interleave-prefill-tokens is not given: measured on an H200 (8B, 32 req/s) as
# the largest budget that keeps ITL p99 under 50 ms; 768 / 640 starved the prefill (bench/RESULTS.md).
DEFAULT_INTERLEAVE_PREFILL_TOKENS = 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def default_model_path() -> str:
    """`MODEL_PATH` from the environment, else the bundled demo model."""
    env = os.environ.get("MODEL_PATH")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "demo")


@dataclass(frozen=True)
class ServerArgs:
    model_path: str = field(default_factory=default_model_path)
    served_model_name: str | None = None
    tokenizer_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    tp_size: int = 1
    dp_size: int = 1
    context_length: int | None = None
    mem_fraction_static: float = 0.85
    max_running_requests: int | None = None
    max_total_tokens: int | None = None
    # None: engine.schedule_policy.default_chunked_prefill_size (16384 on GPUs of >= 120 GiB, else 8192).
    chunked_prefill_size: int | None = None
    # Decodes ride along with a prefill chunk in one extend forward instead of waiting for it
    # (engine/mixed_chunk.py); while decodes run, a step computes at most mixed_chunk_step_tokens tokens.
    enable_mixed_chunk: bool = False
    mixed_chunk_step_tokens: int = 1536
    # Decode-first chunked prefill (engine/prefill_interleave.py): while decodes run, a prefill step computes at
    # most this many prompt tokens and the next step decodes. 0: off (prefill steps go first, whole chunks).
    # None: DEFAULT_INTERLEAVE_PREFILL_TOKENS, or 0 with --enable-mixed-chunk (`prefill_interleave_tokens`).
    interleave_prefill_tokens: int | None = None
    # ... unless more than this many prompt tokens wait (a burst): then whole chunks go first. 0: no limit.
    interleave_backlog_tokens: int = 4096
    schedule_policy: str = "fcfs"
    disable_radix_cache: bool = False
    page_size: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    device: str = "auto"
    load_format: str = "auto"
    # Weight quantization (engine/quant); default: whatever config.json's quantization_config says.
    quantization: str | None = None
    # LM head weights: None keeps the model dtype; "fp8" quantizes them per output channel at load.
    lm_head_quantization: str | None = None
    attention_backend: str | None = None
    # hybrid: decode batches whose longest sequence exceeds this many tokens use FlashInfer's decode
    # kernel, shorter ones triton's (engine/attention/hybrid.py). 128k: triton decodes faster at 100k too since
    # its tiles were retuned (H200, one request, 2026-12-03: 136.1 vs 132.5 tok/s).
    hybrid_long_context_threshold: int = 131072
    grammar_backend: str = "xgrammar"
    # Structured generation (engine/grammar): a compile slower than this fails its request alone.
    grammar_compile_timeout: float = 30.0
    # JSON grammars allow no free whitespace by default; N allows up to N whitespace characters
    # between tokens of the JSON text.
    constrained_json_max_whitespace_cnt: int | None = None
    enable_jump_forward: bool = False
    # None: 512 on GPUs of >= 70 GiB, else 256 (engine/cuda_graph_runner.default_graph_max_bs).
    cuda_graph_max_bs: int | None = None
    disable_cuda_graph: bool = False
    disable_overlap_schedule: bool = False
    # Batch-1 decode runs fused Triton GEMVs on CUDA (16-bit, TP 1); this keeps cuBLAS + separate kernels.
    disable_fused_gemv: bool = False
    chat_template: str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    api_key: str | None = None
    enable_metrics: bool = True
    log_requests: bool = False
    random_seed: int | None = None
    log_level: str = "info"
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    nnodes: int = 1
    node_rank: int = 0
    dist_init_addr: str | None = None
    # Data parallelism (app/replicas): dp_size replicas of tp_size GPUs each, replica i on GPUs
    # base_gpu_id + i*tp_size ... (+tp_size - 1).
    base_gpu_id: int = 0
    load_balancing_policy: str = "cache-aware"
    # cache-aware: a match of at least cache_threshold of the prompt routes to that replica, unless the
    # loads (outstanding tokens) differ by more than balance_abs_threshold AND by a factor above
    # balance_rel_threshold; then the least loaded replica wins.
    cache_threshold: float = 0.5
    balance_abs_threshold: int = 4096
    balance_rel_threshold: float = 1.5
    max_tree_size: int = 1 << 20
    replica_weights: str | None = None
    health_check_interval: float = 5.0
    max_unhealthy_gpus: int | None = None
    # --schedule-policy priority: a waiting request gains one priority level per this many seconds.
    priority_aging_interval: float = 1.0
    # How long SIGTERM waits for in-flight requests before exiting.
    drain_timeout: float = 30.0
    # Largest HTTP request body accepted (413 above it); bounds what one request can make the API process hold.
    max_request_bytes: int = 8 * 1024 * 1024
    # Admin console (app/admin).
    data_dir: str = "./data"
    models_dir: str | None = None
    admin_port: int | None = None
    disable_admin: bool = False
    # Speculative decoding (engine/speculative): a draft model (`draft`, implied by speculative_model) or
    # prompt lookup (`ngram`) proposes speculative_num_draft_tokens tokens that one target pass verifies.
    speculative_algorithm: str | None = None
    speculative_model: str | None = None
    speculative_num_draft_tokens: int = 4
    # ngram: the longest (then shorter, down to min) suffix of the sequence found earlier in prompt + output.
    speculative_ngram_max_match: int = 4
    speculative_ngram_min_match: int = 1
    # A request whose recent acceptance rate falls below this stops speculating for 16..128 tokens, then
    # probes again (a verify pass that accepts nothing costs more than a decode step); 0 never pauses.
    speculative_min_accept_rate: float = 0.1

    def __post_init__(self) -> None:
        self._validate()

    # ---- derived values -------------------------------------------------------------------
    @property
    def resolved_tokenizer_path(self) -> str:
        return self.tokenizer_path or self.model_path

    @property
    def resolved_served_model_name(self) -> str:
        """The model directory's name (`demo`, `Llama-3.1-8B-Instruct`) unless one is given; requests
        may still name the full path (the API accepts both)."""
        if self.served_model_name:
            return self.served_model_name
        path = self.model_path.rstrip("/")
        return path.rsplit("/", 1)[-1] or path

    @property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def resolved_attention_backend(self) -> str:
        if self.attention_backend:
            return self.attention_backend
        if self.resolved_device == "cpu":
            return "torch_native"
        if self.dtype in FP32_DTYPES:
            return "triton"  # FlashInfer has no fp32 kernels
        # hybrid when FlashInfer is installed: its decode up to 32k tokens is triton's (batch 1 236.3 vs 236.5
        # tok/s, 8B shape on an H200), its FlashInfer prefill is 2x triton's at 100k tokens (7.2 vs 14.8 s) and
        # its long-context decode 1.5x (134 vs 88 tok/s); offline 256 requests the same (8,286 vs 8,264
        # tok/s). Teacher-forced on the GPU its logits are as close to fp32 as triton's (bench/NOTES.md).
        # The model runner falls back to triton for head sizes FlashInfer does not build.
        if importlib.util.find_spec("flashinfer") is not None:
            return "hybrid"
        return "triton"

    @property
    def kv_cache_is_fp8(self) -> bool:
        return self.kv_cache_dtype in ("fp8_e4m3", "fp8")

    @property
    def prefill_interleave_tokens(self) -> int:
        """The interleave budget the scheduler applies: the flag, else the default unless mixed chunks carry the
        decodes instead (the two are exclusive)."""
        if self.interleave_prefill_tokens is not None:
            return self.interleave_prefill_tokens
        return 0 if self.enable_mixed_chunk else DEFAULT_INTERLEAVE_PREFILL_TOKENS

    @property
    def normalized_lb_policy(self) -> str:
        """`round-robin`, `min_load`, ... are accepted; the canonical spellings are LB_POLICIES."""
        name = self.load_balancing_policy.strip().lower().replace("_", "-")
        return "round_robin" if name == "round-robin" else name

    @property
    def parsed_replica_weights(self) -> list[float]:
        """One weight per replica for `weighted` (default: all 1)."""
        if not self.replica_weights:
            return [1.0] * self.dp_size
        try:
            weights = [float(w) for w in self.replica_weights.split(",")]
        except ValueError:
            raise ArgsError(f"--replica-weights must be comma-separated numbers, got {self.replica_weights!r}") from None
        if len(weights) != self.dp_size or any(w <= 0 for w in weights):
            raise ArgsError(f"--replica-weights needs {self.dp_size} positive numbers (one per replica), "
                            f"got {self.replica_weights!r}")
        return weights

    @property
    def resolved_max_unhealthy_gpus(self) -> int:
        """Default: serve (and report healthy) while at least one replica is up."""
        if self.max_unhealthy_gpus is not None:
            return self.max_unhealthy_gpus
        return (self.dp_size - 1) * self.tp_size

    @property
    def speculative_mode(self) -> str | None:
        """`draft`, `ngram` or None (speculation off); a draft model alone implies `draft`."""
        if self.speculative_algorithm:
            return self.speculative_algorithm
        return "draft" if self.speculative_model else None

    @property
    def world_size(self) -> int:
        return self.tp_size

    def replace(self, **changes: Any) -> ServerArgs:
        return dataclasses.replace(self, **changes)

    def for_draft_model(self, **changes: Any) -> ServerArgs:
        """The speculative draft model's args: these, on the draft's checkpoint, without speculation (the
        draft's own config.json decides its quantization; its LM head stays in the model dtype)."""
        return self.replace(model_path=self.speculative_model, tokenizer_path=None, speculative_algorithm=None,
                            speculative_model=None, quantization=None, lm_head_quantization=None,
                            **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerArgs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArgsError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**data)

    # ---- validation -----------------------------------------------------------------------
    def _validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ArgsError(msg)

        need(bool(self.model_path), "--model-path is required (or set MODEL_PATH)")
        need(self.tp_size >= 1, f"--tp-size must be >= 1, got {self.tp_size}")
        need(self.dp_size >= 1, f"--dp-size must be >= 1, got {self.dp_size}")
        need(self.dp_size == 1 or self.nnodes == 1, "--dp-size > 1 with --nnodes > 1 is not supported; "
             "put replicas on several hosts behind sglang-router instead")
        need(self.normalized_lb_policy in LB_POLICIES,
             f"--load-balancing-policy must be one of {', '.join(LB_POLICIES)}, got {self.load_balancing_policy!r}")
        need(0.0 <= self.cache_threshold <= 1.0, f"--cache-threshold must be in [0, 1], got {self.cache_threshold}")
        need(self.balance_abs_threshold >= 0,
             f"--balance-abs-threshold must be >= 0, got {self.balance_abs_threshold}")
        need(self.balance_rel_threshold >= 1.0,
             f"--balance-rel-threshold must be >= 1, got {self.balance_rel_threshold}")
        need(self.max_tree_size >= 1, f"--max-tree-size must be >= 1, got {self.max_tree_size}")
        need(self.base_gpu_id >= 0, f"--base-gpu-id must be >= 0, got {self.base_gpu_id}")
        need(self.health_check_interval > 0,
             f"--health-check-interval must be > 0, got {self.health_check_interval}")
        need(self.max_unhealthy_gpus is None or self.max_unhealthy_gpus >= 0,
             f"--max-unhealthy-gpus must be >= 0, got {self.max_unhealthy_gpus}")
        need(self.priority_aging_interval > 0,
             f"--priority-aging-interval must be > 0, got {self.priority_aging_interval}")
        _ = self.parsed_replica_weights  # raises ArgsError on a malformed list
        need(0 < self.port < 65536, f"--port must be in 1..65535, got {self.port}")
        need(0.0 < self.mem_fraction_static < 1.0,
             f"--mem-fraction-static must be in (0, 1), got {self.mem_fraction_static}")
        need(self.context_length is None or self.context_length >= 2,
             f"--context-length must be >= 2, got {self.context_length}")
        need(self.max_running_requests is None or self.max_running_requests >= 1,
             f"--max-running-requests must be >= 1, got {self.max_running_requests}")
        need(self.max_total_tokens is None or self.max_total_tokens >= 16,
             f"--max-total-tokens must be >= 16, got {self.max_total_tokens}")
        need(self.chunked_prefill_size is None or self.chunked_prefill_size == -1 or self.chunked_prefill_size >= 1,
             f"--chunked-prefill-size must be >= 1 or -1 (off), got {self.chunked_prefill_size}")
        need(self.mixed_chunk_step_tokens >= MIN_MIXED_PREFILL_TOKENS,
             f"--mixed-chunk-step-tokens must be >= {MIN_MIXED_PREFILL_TOKENS}, got {self.mixed_chunk_step_tokens}")
        need(self.interleave_prefill_tokens is None or self.interleave_prefill_tokens >= 0,
             f"--interleave-prefill-tokens must be >= 0 (0: off), got {self.interleave_prefill_tokens}")
        need(self.interleave_backlog_tokens >= 0,
             f"--interleave-backlog-tokens must be >= 0 (0: no limit), got {self.interleave_backlog_tokens}")
        need(not (self.interleave_prefill_tokens and self.enable_mixed_chunk),
             "--interleave-prefill-tokens and --enable-mixed-chunk are two answers to one problem: choose one")
        need(self.hybrid_long_context_threshold >= 1,
             f"--hybrid-long-context-threshold must be >= 1, got {self.hybrid_long_context_threshold}")
        need(self.schedule_policy in SCHEDULE_POLICIES,
             f"--schedule-policy must be one of {', '.join(SCHEDULE_POLICIES)}, got {self.schedule_policy!r}")
        need(self.page_size == 1, f"--page-size {self.page_size} is not supported yet (only 1)")
        need(self.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        need(self.kv_cache_dtype in KV_CACHE_DTYPES,
             f"--kv-cache-dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {self.kv_cache_dtype!r}")
        need(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        need(self.load_format in LOAD_FORMATS,
             f"--load-format must be one of {', '.join(LOAD_FORMATS)}, got {self.load_format!r}")
        need(self.quantization is None or self.quantization in QUANTIZATIONS,
             f"--quantization must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        need(self.lm_head_quantization is None or self.lm_head_quantization in LM_HEAD_QUANTIZATIONS,
             f"--lm-head-quantization must be one of {', '.join(LM_HEAD_QUANTIZATIONS)}, "
             f"got {self.lm_head_quantization!r}")
        need(self.attention_backend is None or self.attention_backend in ATTENTION_BACKENDS,
             f"--attention-backend must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention_backend!r}")
        need(self.grammar_backend in GRAMMAR_BACKENDS,
             f"--grammar-backend must be one of {', '.join(GRAMMAR_BACKENDS)}, got {self.grammar_backend!r}")
        need(self.grammar_compile_timeout > 0,
             f"--grammar-compile-timeout must be > 0, got {self.grammar_compile_timeout}")
        need(self.constrained_json_max_whitespace_cnt is None or self.constrained_json_max_whitespace_cnt >= 1,
             f"--constrained-json-max-whitespace-cnt must be >= 1, got {self.constrained_json_max_whitespace_cnt}")
        need(self.tool_call_parser is None or self.tool_call_parser in TOOL_CALL_PARSERS,
             f"--tool-call-parser must be one of {', '.join(TOOL_CALL_PARSERS)}, got {self.tool_call_parser!r}")
        need(self.reasoning_parser is None or self.reasoning_parser in REASONING_PARSERS,
             f"--reasoning-parser must be one of {', '.join(REASONING_PARSERS)}, got {self.reasoning_parser!r}")
        need(self.cuda_graph_max_bs is None or self.cuda_graph_max_bs >= 1,
             f"--cuda-graph-max-bs must be >= 1, got {self.cuda_graph_max_bs}")
        need(self.log_level.lower() in LOG_LEVELS,
             f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        need(self.nnodes >= 1, f"--nnodes must be >= 1, got {self.nnodes}")
        need(0 <= self.node_rank < self.nnodes, f"--node-rank must be in 0..{self.nnodes - 1}, got {self.node_rank}")
        need(self.nnodes == 1 or self.dist_init_addr is not None, "--dist-init-addr is required when --nnodes > 1")
        need(self.tp_size % self.nnodes == 0, f"--tp-size {self.tp_size} must be a multiple of --nnodes {self.nnodes}")
        need(self.drain_timeout >= 0, f"--drain-timeout must be >= 0, got {self.drain_timeout}")
        need(self.max_request_bytes >= 1024, f"--max-request-bytes must be >= 1024, got {self.max_request_bytes}")
        need(self.admin_port is None or 0 < self.admin_port < 65536,
             f"--admin-port must be in 1..65535, got {self.admin_port}")
        check_speculative_args(self)
        if self.attention_backend in ("flashinfer", "hybrid") and self.dtype in FP32_DTYPES:
            raise ArgsError(f"--attention-backend {self.attention_backend} needs --dtype bfloat16 or float16 "
                            "(FlashInfer has no float32 kernels); use triton for float32")
        if self.device == "cpu" and self.attention_backend in ("triton", "flashinfer", "hybrid"):
            raise ArgsError(f"--attention-backend {self.attention_backend} needs a CUDA device; use torch_native on CPU")
        if self.load_format != "dummy":
            _check_model_dir(self.model_path)


def _check_model_dir(model_path: str) -> None:
    """A model directory must hold a config.json that parses as a JSON object: checked with the other flags, so a
    wrong path fails in one line before anything is written or any weights load (the full config is read later,
    by transformers)."""
    if not os.path.exists(model_path):
        raise ArgsError(f"--model-path {model_path!r} does not exist")
    config = os.path.join(model_path, "config.json")
    if not os.path.isdir(model_path) or not os.path.isfile(config):
        raise ArgsError(f"--model-path {model_path!r} is not a model directory (no config.json in it)")
    try:
        with open(config, encoding="utf-8") as f:
            parsed = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArgsError(f"--model-path {model_path!r}: config.json is not valid JSON ({exc})".splitlines()[0]) from None
    if not isinstance(parsed, dict):
        raise ArgsError(f"--model-path {model_path!r}: config.json is not a JSON object")
