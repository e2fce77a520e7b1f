"""Llama-family decoder (Llama 2/3.x, Mistral-as-Llama); Qwen2/Qwen3 reuse it with two switches.

Weights keep HF names except that q/k/v and gate/up are packed (`qkv_proj`, `gate_up_proj`);
`load_weights` routes each checkpoint tensor to its packed slice.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from engine.attention.base import AttentionLayerSpec
from engine.distributed.parallel_state import TPContext
from engine.forward_batch import ForwardBatch
from engine.layers.activation import SiluAndMul
from engine.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from engine.layers.linear import ColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from engine.layers.norm import RMSNorm
from engine.layers.rotary import RotaryEmbedding

# checkpoint name fragment -> (packed module fragment, shard index)
_PACKED = {
    ".q_proj.": (".qkv_proj.", 0), ".k_proj.": (".qkv_proj.", 1), ".v_proj.": (".qkv_proj.", 2),
    ".gate_proj.": (".gate_up_proj.", 0), ".up_proj.": (".gate_up_proj.", 1),
}


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class LlamaAttention(nn.Module):
    def __init__(self, config, layer_id: int, tp: TPContext, qkv_bias: bool, qk_norm: bool,
                 quant_config=None) -> None:
        super().__init__()
        self.head_dim = head_dim_of(config)
        num_kv = config.num_key_value_heads
        prefix = f"model.layers.{layer_id}.self_attn"
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, config.num_attention_heads, num_kv,
                                          tp, bias=qkv_bias, quant_config=quant_config,
                                          checkpoint_names=[f"{prefix}.{p}_proj" for p in "qkv"])
        self.o_proj = RowParallelLinear(config.num_attention_heads * self.head_dim, config.hidden_size, tp,
                                        bias=bool(getattr(config, "attention_bias", False)),
                                        quant_config=quant_config, checkpoint_names=[f"{prefix}.o_proj"])
        self.spec = AttentionLayerSpec(layer_id=layer_id, num_q_heads=config.num_attention_heads // tp.size,
                                       num_kv_heads=num_kv // tp.size, head_dim=self.head_dim,
                                       scaling=self.head_dim ** -0.5)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if qk_norm else None

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor, fb: ForwardBatch, rotary: RotaryEmbedding,
                attn_backend) -> torch.Tensor:
        q, k, v = self.split_qkv(self.qkv_proj(hidden))
        return self.o_proj(self.attend(positions, q, k, v, fb, rotary, attn_backend))  # [T, hidden]

    def split_qkv(self, qkv: torch.Tensor):
        """q [T, Hq * D], k/v [T, Hkv * D] views of the packed projection."""
        s = self.spec
        q_size, kv_size = s.num_q_heads * s.head_dim, s.num_kv_heads * s.head_dim
        return qkv.split([q_size, kv_size, kv_size], dim=-1)

    def attend(self, positions, q, k, v, fb: ForwardBatch, rotary: RotaryEmbedding, attn_backend) -> torch.Tensor:
        """q/k norms (Qwen3), rotary, KV store and attention; returns [T, Hq * D] before o_proj."""
        s = self.spec
        q_size, kv_size = s.num_q_heads * s.head_dim, s.num_kv_heads * s.head_dim
        q = q.reshape(-1, s.num_q_heads, s.head_dim)  # [T, Hq, D]
        k = k.reshape(-1, s.num_kv_heads, s.head_dim)  # [T, Hkv, D]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if q.is_cuda and getattr(attn_backend, "fuses_rotary", False):
            # One launch rotates q/k and stores K/V (the triton backend); the CPU path stays HF's torch code.
            return attn_backend.forward(q.reshape(-1, q_size), k.reshape(-1, kv_size), v, s, fb,
                                        rotary=(positions, rotary.rope_cache()))
        q, k = rotary(positions, q, k)
        return attn_backend.forward(q.reshape(-1, q_size), k.reshape(-1, kv_size), v, s, fb)


class LlamaMLP(nn.Module):
    def __init__(self, config, tp: TPContext, layer_id: int = 0, quant_config=None) -> None:
        super().__init__()
        bias = getattr(config, "mlp_bias", False)
        prefix = f"model.layers.{layer_id}.mlp"
        self.inter_local = config.intermediate_size // tp.size
        self.gate_up_proj = ColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2, tp, bias=bias,
                                                 quant_config=quant_config,
                                                 checkpoint_names=[f"{prefix}.gate_proj", f"{prefix}.up_proj"])
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, tp, bias=bias,
                                           quant_config=quant_config, checkpoint_names=[f"{prefix}.down_proj"])
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, layer_id: int, tp: TPContext, qkv_bias: bool, qk_norm: bool,
                 quant_config=None) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_id, tp, qkv_bias, qk_norm, quant_config)
        self.mlp = LlamaMLP(config, tp, layer_id, quant_config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, positions, hidden, residual, fb, rotary, attn_backend):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, fb, rotary, attn_backend)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual

    def forward_single_row(self, positions, stream: torch.Tensor, fb, rotary, attn_backend,
                           l2_budget: int = 0) -> torch.Tensor:
        """Batch-1 decode in four fused GEMV launches plus attention (see `kernels.gemv`).

        `stream` [1, hidden] is the residual stream itself (embedding + every layer's output so far):
        the norms run as GEMV prologues and the residual adds as epilogues, so the same rounding steps
        as `forward` happen, only without their own launches. Returns the updated stream. `l2_budget`: bytes of
        o's and gate_up's weights to prefetch into L2 beside attention (`kernels.l2_prefetch`; 0: none).
        """
        attn, mlp = self.self_attn, self.mlp
        from kernels import pdl  # here, not at import: the CPU image has no Triton (kernels/__init__)

        chain = pdl.gemv_chain(stream.device, _weight_format(mlp.down_proj))
        # Early-KV attention (kernels/decode_attention.py) starts reading the KV cache while qkv streams.
        qkv = _row_gemv(attn.qkv_proj, stream, norm_weight=self.input_layernorm.weight,
                        eps=self.input_layernorm.eps, bias=attn.qkv_proj.bias,
                        trigger_dependents=pdl.early_kv_enabled(stream.device),
                        programmatic=pdl.chained_after(chain, "qkv"))
        # While attention waits on latency, DRAM is idle: o's weights and gate_up's first rows go to L2 beside it.
        from kernels import l2_prefetch

        ranges = l2_prefetch.plan(_streamed_weights(attn.o_proj) + _streamed_weights(mlp.gate_up_proj),
                                  l2_budget) if l2_budget else ()
        with l2_prefetch.beside(ranges):
            out = attn.attend(positions, *attn.split_qkv(qkv), fb, rotary, attn_backend)
            if _fp8_layer_tail_applies(attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
                from kernels.fp8_layer_tail import fp8_layer_tail

                norm = self.post_attention_layernorm
                return fp8_layer_tail(out, stream, attn.o_proj.weight, attn.o_proj.weight_scale, norm.weight, norm.eps,
                                      mlp.gate_up_proj.weight, mlp.gate_up_proj.weight_scale, mlp.down_proj.weight,
                                      mlp.down_proj.weight_scale)
            stream = _row_gemv(attn.o_proj, out, bias=attn.o_proj.bias, residual=stream,
                               programmatic=pdl.o_after_attention(stream.device) or None,
                               trigger_dependents=_early_trigger(attn.o_proj, "o", chain))
            gate_up = _row_gemv(mlp.gate_up_proj, stream, norm_weight=self.post_attention_layernorm.weight,
                                eps=self.post_attention_layernorm.eps, bias=mlp.gate_up_proj.bias,
                                trigger_dependents=_early_trigger(mlp.gate_up_proj, "gate_up", chain),
                                programmatic=pdl.chained_after(chain, "gate_up"))
            return _row_gemv(mlp.down_proj, gate_up, silu_mul=True, bias=mlp.down_proj.bias, residual=stream,
                             trigger_dependents=_early_trigger(mlp.down_proj, "down", chain),
                             programmatic=pdl.chained_after(chain, "down"))


def _early_trigger(linear: nn.Module, projection: str, chain: frozenset[str]) -> bool:
    """Whether `linear`'s batch-1 GEMV lets the next GEMV, a PDL launch, start as its programs start: the CUDA AWQ
    GEMVs (always PDL launches) per `kernels.awq_gemv_cuda.EARLY_TRIGGER`, the Triton ones per `kernels.pdl.
    GEMV_CHAIN` (which makes the next GEMV a PDL launch too)."""
    if getattr(linear, "awq_cuda_weights", None) is None:
        return projection in chain
    from kernels import awq_gemv_cuda

    return projection in awq_gemv_cuda.EARLY_TRIGGER


def _streamed_weights(linear: nn.Module) -> list[torch.Tensor]:
    """The tensors `_row_gemv` streams for `linear`, the row-ordered weight first (its first programs read its
    first bytes), for `kernels.l2_prefetch.plan`."""
    if getattr(linear, "awq_cuda_weights", None) is not None:
        return [linear.awq_cuda_weights.qweight, linear.awq_cuda_weights.scale_zero]
    if hasattr(linear, "qweight"):
        return [linear.qweight, linear.scales]
    return [linear.weight]


def _weight_format(linear: nn.Module) -> str:
    """"awq", "fp8" or "16-bit": what `_row_gemv` streams for `linear` (the L2 prefetch budget and the GEMV chain's
    edges depend on it)."""
    if hasattr(linear, "qweight"):
        return "awq"
    return "fp8" if linear.weight.element_size() == 1 else "16-bit"


def _fp8_layer_tail_applies(*linears: nn.Module) -> bool:
    """Whether o, gate_up and down run as one persistent launch (`kernels.fp8_layer_tail`) instead of three GEMVs:
    TESSERA_FP8_LAYER_TAIL on, all three FP8 on the Triton GEMV (not the opt-in CUDA one), none with a bias."""
    from kernels import fp8_layer_tail

    return fp8_layer_tail.ENABLED and all(
        _weight_format(m) == "fp8" and m.bias is None and not getattr(m, "fp8_cuda_gemv", False) for m in linears)


def _row_gemv(linear: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """One fused batch-1 GEMV through `linear`'s weight: 16-bit (`kernels.gemv`), FP8 with its per-row
    scales (`kernels.fp8_gemv_cuda` where `Fp8LinearMethod.finish_loading` took the layer, else
    `kernels.fp8_gemv`) or AWQ int4 (`kernels.awq_gemv.awq_gemv`), all with the same prologues and
    epilogues. `trigger_dependents` and `programmatic` (kernels/pdl.py) reach the kernels that have them; the others
    ignore them."""
    if getattr(linear, "awq_cuda_weights", None) is not None and x.dtype == linear.scales.dtype:
        from kernels.awq_gemv_cuda import awq_gemv_cuda

        kwargs.pop("programmatic", None)  # a PDL launch already where it can be (`AwqCudaConfig.pdl`)
        return awq_gemv_cuda(x, linear.awq_cuda_weights, **kwargs)
    if hasattr(linear, "qweight"):
        from kernels.awq_gemv import awq_gemv

        kwargs.pop("trigger_dependents", None)
        kwargs.pop("programmatic", None)
        return awq_gemv(x, linear.qweight, linear.qzeros, linear.scales, linear.quant_method.group_size,
                        locks=linear.awq_gemv_locks, **kwargs)
    if getattr(linear, "fp8_cuda_gemv", False) and x.dtype == linear.fp8_act_dtype:
        from kernels.fp8_gemv_cuda import fp8_gemv_cuda

        kwargs.pop("trigger_dependents", None)
        kwargs.pop("programmatic", None)
        return fp8_gemv_cuda(x, linear.weight, linear.weight_scale, **kwargs)
    if linear.weight.dtype == torch.float8_e4m3fn:
        from kernels.fp8_gemv import fp8_gemv

        return fp8_gemv(x, linear.weight, linear.weight_scale, **kwargs)
    from kernels.gemv import fused_gemv

    return fused_gemv(x, linear.weight, **kwargs)


class LlamaForCausalLM(nn.Module):
    qkv_bias = False
    qk_norm = False

    def __init__(self, config, tp: TPContext, max_positions: int, quant_config=None) -> None:
        """`quant_config`: an engine.quant QuantConfig (None: unquantized); it picks each linear's method.
        The embedding, norms and LM head are never quantized."""
        super().__init__()
        self.config = config
        self.tp = tp
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, i, tp, self.qkv_bias or getattr(config, "attention_bias", False), self.qk_norm,
                              quant_config)
            for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, tp)
        if self.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(config, head_dim_of(config), max_positions)
        self.attn_backend = None  # set by the model runner
        # Batch-1 decode through `forward_single_row` (set by the model runner, see `supports_fused_gemv`).
        self.fused_gemv = False
        # Batch-1 LM head through the Triton GEMV even when the layers cannot fuse (quantized layers).
        self.lm_head_gemv = False

    def supports_lm_head_gemv(self) -> bool:
        """A [1, H] row through `kernels.gemv` for the (never quantized) LM head: 16-bit weights on CUDA, TP 1
        (the conditions of the fused path, less the layers' own)."""
        weight = self.lm_head.weight
        return self.tp.size == 1 and weight.is_cuda and weight.dtype in (torch.float16, torch.bfloat16)

    def supports_fused_gemv(self) -> bool:
        """The fused path needs the whole projection on this rank (TP 1: o/down epilogues add the residual
        before any all-reduce), a 16-bit model on CUDA (fp32 keeps the exact cuBLAS path), and layers whose
        method supports it: plain 16-bit `.weight`, FP8 `.weight` + `.weight_scale`, or AWQ `.qweight` /
        `.qzeros` / `.scales` (`_row_gemv`); other quantized layers run their own kernels through the unfused
        path."""
        linears = [m for m in self.layers.modules() if hasattr(m, "quant_method")]
        if not all(m.quant_method.supports_fused_gemv for m in linears):
            return False
        # The activations' dtype (FP8 layers keep float8 weights but compute in the model dtype).
        act = self.embed_tokens.weight
        return self.tp.size == 1 and act.is_cuda and act.dtype in (torch.float16, torch.bfloat16)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, fb: ForwardBatch) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)  # [T, hidden]
        if self.fused_gemv and input_ids.shape[0] == 1:
            # Imported here: the CPU image has no Triton, which kernels/__init__ needs.
            from kernels.l2_prefetch import budget_bytes

            # Once per step, read at each capture like the env switches.
            budget = budget_bytes(hidden.device, _weight_format(self.layers[0].self_attn.o_proj))
            for layer in self.layers:
                hidden = layer.forward_single_row(positions, hidden, fb, self.rotary, self.attn_backend, budget)
            return self.norm(hidden)
        residual = None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual, fb, self.rotary, self.attn_backend)
        hidden, _ = self.norm(hidden, residual)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head.compute_logits(hidden, single_row_gemv=self.fused_gemv or self.lm_head_gemv)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copies checkpoint tensors into this rank's parameters; returns the loaded parameter names."""
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded: set[str] = set()
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if "rotary_emb" in name:
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            shard_id = None
            for frag, (packed, idx) in _PACKED.items():
                if frag in name:
                    name, shard_id = name.replace(frag, packed), idx
                    break
            param = params.get(name)
            if param is None:
                continue  # e.g. extra buffers some checkpoints carry
            loader = getattr(param, "weight_loader", None)
            if loader is None:
                param.data.copy_(tensor)
            elif shard_id is None:
                loader(param, tensor)
            else:
                loader(param, tensor, shard_id)
            loaded.add(name)
        if self.tie_word_embeddings:
            loaded.add("lm_head.weight")
        return loaded


class MistralForCausalLM(LlamaForCausalLM):
    pass
