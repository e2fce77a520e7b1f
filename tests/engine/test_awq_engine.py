"""AWQ checkpoints end to end on the CPU reference path: Tessera loading the packed int4 checkpoint vs HF
transformers running the same model with the dequantized weights in fp32.

Both sides hold the same fp32 weights ((q - z) * s, exact in fp32), so the only differences are summation
order: prompt logprobs must agree within 1e-3 and greedy continuations in >= 99 % of tokens (in practice
all of them). Also TP=2 (gloo; column splits of packed columns, row splits by whole groups), a skipped
module (`modules_to_not_convert`), and the one-line errors for checkpoints and flags that cannot run.
"""

from __future__ import annotations

import json
import os

import pytest

from engine import Engine
from engine.args import ArgsError, ServerArgs
from engine.model_config import preflight
from tests.engine.hf_reference import greedy_agreement, hf_greedy, hf_model, hf_prompt_logprobs
from tests.engine.test_hf_equivalence import make_prompts
from tests.fixtures.awq_checkpoint import build_awq_pair

NEW_TOKENS = 24
GREEDY = {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
LOGPROB_ATOL = 1e-3


@pytest.fixture(scope="module")
def awq_pairs(tiny_model_factory, tmp_path_factory):
    """arch -> AWQPair, built once per module on first use."""
    pairs = {}

    def get(arch: str):
        if arch not in pairs:
            # llama keeps layer 1's MLP in full precision, as a checkpoint's modules_to_not_convert would.
            skip = ("model.layers.1.mlp",) if arch == "llama" else ()
            pairs[arch] = build_awq_pair(tiny_model_factory(arch), str(tmp_path_factory.mktemp(f"awq_{arch}")),
                                         group_size=32, modules_to_not_convert=skip)
        return pairs[arch]
    return get


def _check_against_hf(pair, prompts, **engine_args) -> None:
    expected = [hf_greedy(pair.reference_dir, p, NEW_TOKENS) for p in prompts]
    with Engine(model_path=pair.awq_dir, device="cpu", random_seed=0, **engine_args) as engine:
        outs = engine.generate(input_ids=prompts, sampling_params=GREEDY)
        scored = engine.generate(input_ids=prompts[0], sampling_params={**GREEDY, "max_new_tokens": 1},
                                 return_logprob=True, logprob_start_len=0)
    got = [o["output_ids"] for o in outs]
    agreement = greedy_agreement(got, expected)
    assert agreement >= 0.99, f"greedy agreement {agreement:.3f} with HF on the dequantized weights"
    ref = hf_prompt_logprobs(pair.reference_dir, prompts[0])
    entries = scored["meta_info"]["input_token_logprobs"]
    worst = max(abs(lp - ref[pos - 1, tok].item()) for pos, (lp, tok, _) in enumerate(entries) if pos > 0)
    assert worst < LOGPROB_ATOL, f"prompt logprobs differ from HF by up to {worst:.2e}"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_awq_matches_hf_dequantized(awq_pairs, arch):
    pair = awq_pairs(arch)
    vocab = hf_model(pair.reference_dir).config.vocab_size
    _check_against_hf(pair, make_prompts(vocab, seed=3)[:8])


def test_awq_tp2_matches_hf_dequantized(awq_pairs):
    pair = awq_pairs("llama")  # one architecture is enough for the TP split
    vocab = hf_model(pair.reference_dir).config.vocab_size
    _check_against_hf(pair, make_prompts(vocab, seed=4)[:6], tp_size=2)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_quantization_changes_the_model(awq_pairs, tiny_model_factory, arch):
    """The reference really is the quantized model: int4 moves the logits of the fp32 original."""
    pair = awq_pairs(arch)
    prompt = make_prompts(hf_model(pair.reference_dir).config.vocab_size, seed=5)[0]
    diff = (hf_prompt_logprobs(pair.reference_dir, prompt) - hf_prompt_logprobs(tiny_model_factory(arch), prompt))
    assert diff.abs().max().item() > 10 * LOGPROB_ATOL


def _args(path: str, **kw) -> ServerArgs:
    return ServerArgs(model_path=path, device="cpu", **kw)


def _one_line_error(args: ServerArgs, match: str) -> None:
    with pytest.raises(ArgsError, match=match) as err:
        preflight(args)
    assert "\n" not in str(err.value)


def test_bad_awq_configs_fail_with_one_line(tiny_model_factory, tmp_path):
    base = tiny_model_factory("llama")
    _one_line_error(_args(base, quantization="awq"), "--quantization awq needs a checkpoint quantized with awq")
    pair = build_awq_pair(base, str(tmp_path / "g32"), group_size=32)
    _one_line_error(_args(pair.awq_dir, quantization="fp8"), "--quantization fp8 does not match.*'awq'")
    preflight(_args(pair.awq_dir, quantization="awq"))  # agreeing flag: fine
    # o_proj's input per rank at TP=2 is 64 / 2 = 32 features: a group of 64 would straddle ranks.
    wide = build_awq_pair(base, str(tmp_path / "g64"), group_size=64)
    preflight(_args(wide.awq_dir))
    _one_line_error(_args(wide.awq_dir, tp_size=2), r"group size 64 does not divide o_proj's input per rank "
                                                    r"\(32 = 64 / tp_size 2\)")
    config_path = os.path.join(pair.awq_dir, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    for override, match in [({"group_size": 48}, "group size 48 does not divide q_proj/k_proj/v_proj's input"),
                            ({"group_size": 12}, "group_size must be a positive multiple of 8"),
                            ({"bits": 8}, "8-bit weights is not supported"),
                            ({"version": "gemv"}, "version 'gemv' is not supported"),
                            ({"quant_method": "gptq"}, "unsupported quant_method 'gptq'")]:
        with open(config_path, "w") as f:
            json.dump({**config, "quantization_config": {**config["quantization_config"], **override}}, f)
        _one_line_error(_args(pair.awq_dir), match)


def test_awq_dummy_weights_for_benchmarks(tmp_path):
    """`--load-format dummy --quantization awq` on a config-only directory (bench/models): AWQ-shaped random
    weights (group 128) that keep activations finite."""
    import math

    import torch
    import transformers

    from engine.distributed.parallel_state import TPContext
    from engine.model_config import create_model_config
    from engine.model_loader import load_model

    transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             torch_dtype="bfloat16", architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path)
    args = _args(str(tmp_path), load_format="dummy", quantization="awq", skip_tokenizer_init=True)
    model_config = create_model_config(args, "cpu")
    assert model_config.quant_config.group_size == 128
    model = load_model(args.model_path, "dummy", model_config, TPContext(), torch.device("cpu"))
    weight = model.layers[0].mlp.down_proj.weight  # dequantized at load on the CPU
    assert weight.shape == (256, 512) and torch.isfinite(weight).all()
    assert 0.005 < weight.abs().max().item() <= 15 * 0.0013 and weight.std().item() > 1e-3
    with Engine(model_path=str(tmp_path), device="cpu", load_format="dummy", quantization="awq",
                skip_tokenizer_init=True) as engine:
        out = engine.generate(input_ids=list(range(5, 40)), sampling_params={**GREEDY, "max_new_tokens": 4},
                              return_logprob=True)
    assert len(out["output_ids"]) == 4
    assert all(math.isfinite(lp) for lp, _, _ in out["meta_info"]["output_token_logprobs"])


def test_cuda_gemv_plan_weighs_the_weight_copy() -> None:
    """The CUDA GEMV's second copy of the int4 weights is made when it takes <= 10 % of the free memory (an 8B
    model on an H200), not when it would eat the KV cache (a 70B model on one 80 GB GPU), unless forced; the
    reason is what the startup log prints."""
    from engine.quant.awq import cuda_gemv_plan

    gib = 2**30
    assert cuda_gemv_plan(int(3.6 * gib), 128 * gib, None) == (True, "3.60 GiB weight copy")
    use, why = cuda_gemv_plan(35 * gib, 43 * gib, None)
    assert not use and why == ("its 35.00 GiB weight copy would take more than 10% of the 43.0 GiB free for the "
                               "KV cache; TESSERA_AWQ_CUDA_GEMV=1 forces it")
    assert cuda_gemv_plan(35 * gib, 43 * gib, "1") == (True, "35.00 GiB weight copy, forced by TESSERA_AWQ_CUDA_GEMV=1")
    assert cuda_gemv_plan(1, 128 * gib, "0") == (False, "TESSERA_AWQ_CUDA_GEMV=0")


@pytest.mark.parametrize(("free_gib", "env", "repacked"), [(64, None, True), (1e-6, None, False), (1e-6, "1", True),
                                                         (64, "0", False)])
def test_finish_loading_repacks_when_the_plan_allows(monkeypatch, free_gib, env, repacked) -> None:
    """`AWQLinearMethod.finish_loading` (run once for the whole model after loading): the layers the CUDA GEMV
    takes get its repacked weights when `cuda_gemv_plan` allows the copy, the others keep None (Triton GEMV).
    The GPU checks (`supports`, free memory) are stubbed; the repack itself is plain torch."""
    import torch
    from torch import nn

    from engine.quant import awq
    from kernels import awq_gemv_cuda
    from kernels.awq_gemv_cuda import repack_awq_for_cuda

    def layer(n: int) -> nn.Module:
        m = nn.Module()
        m.qweight = torch.randint(-2**31, 2**31 - 1, (256, n // 8), dtype=torch.int32)
        m.qzeros = torch.randint(-2**31, 2**31 - 1, (2, n // 8), dtype=torch.int32)
        m.scales = torch.rand(2, n).to(torch.bfloat16)
        m.quant_method = awq.AWQLinearMethod(128)
        m.awq_cuda_weights = None
        return m

    layers = [layer(32), layer(24)]  # 24 rows: not a multiple of 16, so the Triton GEMV keeps it
    monkeypatch.setattr(awq_gemv_cuda, "supports", lambda n, k, g, dtype, device: n % 16 == 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * 2**30), 80 * 2**30))
    if env is None:
        monkeypatch.delenv("TESSERA_AWQ_CUDA_GEMV", raising=False)
    else:
        monkeypatch.setenv("TESSERA_AWQ_CUDA_GEMV", env)
    awq.AWQLinearMethod.finish_loading(layers)
    assert layers[1].awq_cuda_weights is None
    if repacked:
        expected = repack_awq_for_cuda(layers[0].qweight, layers[0].qzeros, layers[0].scales)
        assert torch.equal(layers[0].awq_cuda_weights.qweight, expected.qweight)
        assert torch.equal(layers[0].awq_cuda_weights.scale_zero, expected.scale_zero)
    else:
        assert layers[0].awq_cuda_weights is None
