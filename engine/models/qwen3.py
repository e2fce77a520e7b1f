"""Qwen3: the Llama decoder with per-head RMSNorm on q and k before rotary, no q/k/v bias."""

from __future__ import annotations

from engine.models.llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    qk_norm = True
