"""The `tessera serve` flags: one `--kebab-case` flag per ServerArgs field (SGLang's names), their help
texts and aliases, and the way back from parsed flags to a validated ServerArgs."""

from __future__ import annotations

import argparse
from dataclasses import fields

from engine.args import ServerArgs

_FLAG_ALIASES = {"tp_size": ["--tp"], "dp_size": ["--dp"], "load_balancing_policy": ["--load-balance-method"],
                 "mem_fraction_static": ["--gpu-memory-utilization-limit"],
                 "speculative_model": ["--speculative-draft-model-path"]}
_HELP = {
    "model_path": "model directory (HF layout: config.json, *.safetensors, tokenizer); env MODEL_PATH",
    "chunked_prefill_size": "max prompt tokens per prefill step; -1 turns chunking off",
    "mem_fraction_static": "fraction of the GPU this instance may take for weights + KV cache (two instances "
                           "at 0.5 share one GPU); alias --gpu-memory-utilization-limit",
    "load_balancing_policy": "with --dp-size: round_robin | min-load | cache-aware | min-latency | weighted "
                             "(default cache-aware); alias --load-balance-method",
    "cache_threshold": "cache-aware: prefix match (fraction of the prompt) that routes to a replica (default 0.5)",
    "balance_abs_threshold": "cache-aware: outstanding-token gap above which min-load decides (default 4096)",
    "balance_rel_threshold": "cache-aware: load ratio above which min-load decides (default 1.5)",
    "max_tree_size": "cache-aware: tokens kept per replica in the router's approximate prefix tree",
    "replica_weights": "weighted: comma-separated weight per replica, e.g. 3,1",
    "health_check_interval": "with --dp-size: seconds between replica probes (default 5)",
    "max_unhealthy_gpus": "with --dp-size: /health stays 200 while at most this many GPUs are out "
                          "(default: all but one replica)",
    "priority_aging_interval": "--schedule-policy priority: seconds of waiting that add one priority level",
    "max_total_tokens": "KV cache capacity in tokens (CPU default is sized from RAM)",
    "max_request_bytes": "largest HTTP request body accepted, in bytes (413 above it; default 8 MiB)",
    "grammar_backend": "xgrammar | llguidance | none (llguidance: optional package; none: constrained "
                       "requests get a 400)",
    "grammar_compile_timeout": "seconds a grammar may compile before its request fails (default 30)",
    "constrained_json_max_whitespace_cnt": "allow up to N whitespace characters between JSON tokens "
                                           "(default: none, fixed separators)",
    "enable_jump_forward": "append the grammar's forced continuation in one extend step",
    "tool_call_parser": "format of the model's own tool calls: llama3 | qwen | hermes | mistral (default: "
                        "from the chat template: <tool_call> → qwen, [TOOL_CALLS] → mistral, <|python_tag|> → llama3)",
    "reasoning_parser": "split <think>...</think> into reasoning_content: qwen3 | deepseek-r1",
    "speculative_algorithm": "speculative decoding: draft (a smaller model, --speculative-model) | ngram "
                             "(prompt lookup, no second model); default off",
    "speculative_model": "draft model directory sharing the target's tokenizer (implies --speculative-algorithm "
                         "draft); alias --speculative-draft-model-path",
    "speculative_num_draft_tokens": "tokens proposed per decode step and verified in one target pass (1..16, "
                                    "default 4)",
    "speculative_ngram_max_match": "ngram: longest suffix (tokens) looked up in prompt + output (default 4)",
    "speculative_ngram_min_match": "ngram: shortest suffix that may propose (default 1)",
    "speculative_min_accept_rate": "a request accepting fewer drafts than this (recent average) pauses speculation "
                                   "for 16..128 tokens, then probes again; 0 never pauses (default 0.1)",
    "lm_head_quantization": "fp8: store the LM head in FP8 (per output channel, at load) whatever the layers' "
                            "quantization; batch-1 decode reads half its bytes, logits move by ~1-3 %% "
                            "(default: the model dtype; needs compute capability 8.9+ on a GPU)",
    "kv_cache_dtype": "KV cache storage: auto (the model's dtype) | bf16 | fp8_e4m3 (twice the tokens per GB; "
                      "per-layer k/v scales from the checkpoint, else 1.0)",
    "quantization": "awq | fp8: weight quantization; default: auto-detected from config.json's "
                    "quantization_config (a flag that disagrees with the checkpoint is an error; fp8 on a "
                    "16-bit checkpoint quantizes at load)",
    "attention_backend": "torch_native | triton | flashinfer | hybrid (default: hybrid on CUDA when FlashInfer "
                         "is installed, else triton; torch_native on CPU). hybrid: "
                         "flashinfer prefill, triton decode up to --hybrid-long-context-threshold tokens, "
                         "flashinfer decode above",
    "hybrid_long_context_threshold": "hybrid backend: longest sequence (tokens) of a decode batch up to which "
                                     "triton decodes; above it flashinfer (default 131072)",
    "enable_mixed_chunk": "run decodes in the same forward as a prefill chunk (lower ITL tail under load)",
    "mixed_chunk_step_tokens": "with --enable-mixed-chunk: tokens one step computes while decodes run, decodes "
                               "counting one each (default 1536; at least 256 prompt tokens per step)",
    "cuda_graph_max_bs": "largest decode batch replayed from a CUDA graph; larger batches run eagerly "
                         "(default: 512 on GPUs of 70 GiB or more, else 256)",
    "interleave_prefill_tokens": "while requests decode, a prefill step computes at most N prompt tokens and the "
                                 "next step is a decode step (bounds the ITL tail under load; decodes keep CUDA "
                                 "graphs). 0 = off; default 1024 (0 with --enable-mixed-chunk)",
    "interleave_backlog_tokens": "with --interleave-prefill-tokens: while more than N prompt tokens wait, prefill "
                                 "steps take whole chunks (a burst finishes sooner). 0 = no limit; default 4096",
}


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """Adds one `--kebab-case` flag per ServerArgs field."""
    defaults = ServerArgs.__dataclass_fields__
    for f in fields(ServerArgs):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *_FLAG_ALIASES.get(f.name, [])]
        kind = f.type if isinstance(f.type, str) else str(f.type)
        help_text = _HELP.get(f.name)
        if kind == "bool":
            parser.add_argument(*names, dest=f.name, action="store_true", default=None, help=help_text)
        elif kind.startswith("int"):
            parser.add_argument(*names, dest=f.name, type=int, default=None, help=help_text)
        elif kind.startswith("float"):
            parser.add_argument(*names, dest=f.name, type=float, default=None, help=help_text)
        else:
            parser.add_argument(*names, dest=f.name, type=str, default=None, help=help_text)
    del defaults


def args_from_namespace(ns: argparse.Namespace) -> ServerArgs:
    """Builds ServerArgs from parsed flags; unset flags keep their defaults."""
    given = {f.name: getattr(ns, f.name) for f in fields(ServerArgs) if getattr(ns, f.name, None) is not None}
    return ServerArgs(**given)
