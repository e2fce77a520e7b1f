"""SGLang's request keys that Tessera does not implement, and what "off" means for each.

`sglang-router` and SGLang's own clients serialise their whole request schema on every call (every key
at its default), so the mere presence of a key must never be an error. A key is one of:
- ignored: it cannot change the generated tokens or the response here (bookkeeping, routing hints for a
  router, the format of an output we never produce), whatever its value;
- off-only: it asks for a feature Tessera does not have; accepted at its "off" value, a 400 naming it
  otherwise, so nobody silently gets something other than what they asked for.

The lists follow SGLang 0.5.23's `GenerateReqInput`, `ChatCompletionRequest` and `CompletionRequest`;
tests/app/test_sglang_router.py checks them against SGLang's own source.
"""

from __future__ import annotations

from typing import Any

from app.errors import bad_request

# Both the native and the OpenAI routes.
_COMMON_IGNORED = frozenset({
    "log_metrics", "no_logs", "stream_interval", "return_bytes", "background", "routing_key",
    "conversation_id", "http_worker_ipc", "received_time", "external_trace_header", "custom_labels",
    # Base64 packing of flat raw top-logprobs, which are only produced when the off-only key below is set.
    "return_flat_raw_top_logprobs_b64",
})
_COMMON_OFF_ONLY = frozenset({
    "input_embeds", "image_data", "video_data", "audio_data", "mm_hashes", "mm_content_hashes",
    "use_audio_in_video", "video_config", "watermark", "token_ids_logprob", "return_sampling_mask",
    "sampling_logprobs_mode", "return_flat_raw_top_logprobs", "return_flat_raw_output_top_logprobs",
    "return_hidden_states", "return_routed_experts", "routed_experts_start_len", "return_indexer_topk",
    "modalities", "session_params", "session_id", "lora_path", "lora_id", "custom_logit_processor",
    "custom_params", "positional_embed_overrides", "bootstrap_host", "bootstrap_port", "bootstrap_room",
    "bootstrap_pair_key", "decode_tp_size", "routed_dp_rank", "data_parallel_rank", "disagg_prefill_dp_rank",
    "require_reasoning", "max_thinking_tokens", "extra_key", "cache_salt", "return_entropy",
    "return_prompt_token_ids", "need_wait_for_mm_inputs", "num_items_assigned", "encoder_urls",
    "max_dynamic_patch", "min_dynamic_patch", "image_max_dynamic_patch", "video_max_dynamic_patch",
    "images_config", "mm_processor_kwargs", "multi_item_delimiter_indices", "token_indices_to_pool", "kv_hints",
})

# /generate: the router adds the target `model` (null or a name); a worker serves one model anyway.
NATIVE_IGNORED = _COMMON_IGNORED | {"model"}
NATIVE_OFF_ONLY = _COMMON_OFF_ONLY

# /v1/chat/completions and /v1/completions. `separate_reasoning` is a chat field (--reasoning-parser);
# `stream_reasoning` changes nothing: reasoning deltas always stream as they come.
OPENAI_IGNORED = _COMMON_IGNORED | {"stream_reasoning"}
OPENAI_OFF_ONLY = _COMMON_OFF_ONLY | {
    "return_spec_tokens_details", "return_token_ids", "return_meta_info", "return_input_ids_in_sglext",
    "return_output_ids_in_sglext", "input_ids", "stop_regex", "thinking", "task", "reasoning_effort",
}

# Off values other than null / false / "" / [] / {} (SGLang's defaults for these keys).
_OFF_DEFAULTS: dict[str, tuple[Any, ...]] = {"routed_experts_start_len": (0,)}


def is_off(key: str, value: Any) -> bool:
    if value is None or value is False or value == "" or value == [] or value == {}:
        return True
    if isinstance(value, list):  # batched: one entry per prompt
        return all(is_off(key, v) for v in value)
    return any(value == v and type(value) is type(v) for v in _OFF_DEFAULTS.get(key, ()))


def strip_sglang_keys(data: Any, ignored: frozenset[str], off_only: frozenset[str]) -> Any:
    """Drops ignored keys and off-only keys at their off value; raises the 400 for one that is on."""
    if not isinstance(data, dict):
        return data
    clean = {}
    for key, value in data.items():
        if key in ignored:
            continue
        if key in off_only:
            if is_off(key, value):
                continue
            # Raised (not a ValueError) so pydantic lets it through and the 400 names the key.
            raise bad_request(f"'{key}' is not supported by this server", key)
        clean[key] = value
    return clean
