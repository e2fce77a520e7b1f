"""FP8 checkpoints (every published layout) and `--quantization fp8` through the offline Engine on CPU,
against HF transformers running the same model with the dequantized weights in fp32.

CPU runs the FP8 reference path (weights dequantized to fp32, activations unquantized), so against
HF on the dequantized weights only summation order differs: prompt log-probs (log-softmax of the
logits) within 1e-3 and greedy agreement >= 99 %. This checks loading: scale layouts and shapes,
per-shard scales of packed qkv / gate_up, TP slicing. The W8A8 GPU kernels are checked against torch
in tests/kernels/test_fp8.py (`-m gpu`).

`--quantization fp8` on a bf16 checkpoint (CPU computes in fp32) is checked twice: exactly (same tolerances) against HF on
the per-channel FP8 round trip of the weights, and loosely against HF on the bf16 weights in fp32 (FP8
costs ~2-3 % per weight; this tiny model's logits are peaked, so log-probs move by ~0.08 on average):
mean |Δ log-prob| < 0.2 and >= 75 % of the greedy tokens also the original model's argmax
(teacher-forced; measured 82.5 %: a random 64-wide model has many near-ties).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from engine import Engine
from engine.args import ArgsError
from tests.engine.hf_reference import greedy_agreement, hf_greedy, hf_prompt_logprobs
from tests.engine.test_hf_equivalence import make_prompts
from tests.fixtures.fp8_checkpoints import LAYOUTS, write_fp8_checkpoint, write_quantize_at_load_reference

NEW_TOKENS = 24
LOGPROB_ATOL = 1e-3
GREEDY = {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
LOGPROB_PROMPT = [5, 17, 99, 250, 31, 77, 8, 140, 12, 60, 33, 201]


def _engine_outputs(path: str, prompts: list[list[int]], **server_args):
    with Engine(model_path=path, device="cpu", random_seed=0, **server_args) as engine:
        outs = engine.generate(input_ids=prompts, sampling_params=GREEDY)
        lp = engine.generate(input_ids=LOGPROB_PROMPT, sampling_params={**GREEDY, "max_new_tokens": 1},
                             return_logprob=True, logprob_start_len=0)
    logprobs = [e[0] for e in lp["meta_info"]["input_token_logprobs"][1:]]
    return [o["output_ids"] for o in outs], torch.tensor(logprobs)


def _hf_outputs(path: str, prompts: list[list[int]]):
    ref = hf_prompt_logprobs(path, LOGPROB_PROMPT)
    logprobs = torch.tensor([ref[i, tok].item() for i, tok in enumerate(LOGPROB_PROMPT[1:])])
    return [hf_greedy(path, p, NEW_TOKENS) for p in prompts], logprobs


@pytest.fixture(scope="module")
def prompts(tiny_llama) -> list[list[int]]:
    from tests.engine.hf_reference import hf_model

    return make_prompts(hf_model(tiny_llama).config.vocab_size, seed=3)[:10]


@pytest.mark.parametrize(("layout", "extra"), [(layout, {}) for layout in LAYOUTS] + [("fp8-tensor", {"tp_size": 2})],
                         ids=list(LAYOUTS) + ["fp8-tensor-tp2"])
def test_fp8_checkpoint_matches_hf_dequantized(tiny_llama, tmp_path, prompts, layout, extra):
    fp8_dir, ref_dir = write_fp8_checkpoint(tiny_llama, str(tmp_path / layout), layout)
    got_ids, got_lp = _engine_outputs(fp8_dir, prompts, **extra)
    ref_ids, ref_lp = _hf_outputs(ref_dir, prompts)
    assert (got_lp - ref_lp).abs().max() < LOGPROB_ATOL, (got_lp - ref_lp).abs().max()
    assert greedy_agreement(got_ids, ref_ids) >= 0.99
    # And the FP8 model is not the fp32 one: the test would notice weights loaded unquantized.
    _, orig_lp = _hf_outputs(tiny_llama, prompts[:1])
    assert (got_lp - orig_lp).abs().max() > 10 * LOGPROB_ATOL


def _bf16_copy(src: str, out: str) -> str:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = json.loads(open(os.path.join(out, "config.json")).read())
    config["torch_dtype"] = config["dtype"] = "bfloat16"
    open(os.path.join(out, "config.json"), "w").write(json.dumps(config))
    return out


def test_quantize_at_load_matches_hf(tiny_llama, tmp_path, prompts):
    bf16 = _bf16_copy(tiny_llama, str(tmp_path / "bf16"))
    got_ids, got_lp = _engine_outputs(bf16, prompts, quantization="fp8")
    exact_ids, exact_lp = _hf_outputs(write_quantize_at_load_reference(bf16, str(tmp_path / "rt")), prompts)
    assert (got_lp - exact_lp).abs().max() < LOGPROB_ATOL
    assert greedy_agreement(got_ids, exact_ids) >= 0.99
    _, orig_lp = _hf_outputs(bf16, prompts[:1])
    assert (got_lp - orig_lp).abs().mean() < 0.2, (got_lp - orig_lp).abs().mean()  # measured 0.08
    # A random tiny model has near-ties, so one flipped token sends the rest of a greedy run elsewhere:
    # count per-token agreement with the original model teacher-forced on the engine's own tokens.
    agree = _teacher_forced_agreement(bf16, prompts, got_ids)
    assert agree >= 0.75, agree  # measured 0.825


@torch.no_grad()
def _teacher_forced_agreement(path: str, prompts: list[list[int]], outputs: list[list[int]]) -> float:
    from tests.engine.hf_reference import hf_model

    model, hits, total = hf_model(path), 0, 0
    for prompt, out in zip(prompts, outputs):
        logits = model(torch.tensor([prompt + out])).logits[0]
        predicted = logits[len(prompt) - 1:-1].argmax(-1).tolist()
        hits += sum(p == o for p, o in zip(predicted, out))
        total += len(out)
    return hits / total


def test_fp8_dummy_load_runs(tiny_llama):
    """`--load-format dummy --quantization fp8` (benchmarks): FP8 parameters filled, finite logits."""
    with Engine(model_path=tiny_llama, device="cpu", load_format="dummy", quantization="fp8") as engine:
        out = engine.generate(input_ids=LOGPROB_PROMPT, sampling_params={**GREEDY, "max_new_tokens": 4},
                              return_logprob=True, logprob_start_len=0)
    lps = [e[0] for e in out["meta_info"]["input_token_logprobs"][1:]]
    assert len(out["output_ids"]) == 4 and all(lp is not None and lp == lp and lp > -1e9 for lp in lps)


def _with_quant_config(tiny_llama: str, tmp_path, quant_cfg: dict) -> str:
    import shutil

    d = tmp_path / "bad"
    shutil.copytree(tiny_llama, d)
    config = json.loads((d / "config.json").read_text())
    config["quantization_config"] = quant_cfg
    (d / "config.json").write_text(json.dumps(config))
    return str(d)


@pytest.mark.parametrize(("quant_cfg", "message"), [
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "block-wise FP8"),
    ({"quant_method": "fp8", "activation_scheme": "sometimes"}, "activation_scheme"),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {}}, "pack-quantized"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int",
                                                                              "strategy": "group"}}}},
     "only FP8 weights"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float",
                                                                              "strategy": "block"}}}},
     "strategy 'block'"),
])
def test_unsupported_fp8_layouts_fail_in_one_line(tiny_llama, tmp_path, quant_cfg, message):
    from engine.args import ServerArgs
    from engine.model_config import create_model_config

    path = _with_quant_config(tiny_llama, tmp_path, quant_cfg)
    with pytest.raises(ArgsError, match=message) as err:
        create_model_config(ServerArgs(model_path=path, device="cpu"), "cpu")
    assert "\n" not in str(err.value)
    assert os.path.isdir(path)


@pytest.mark.parametrize(("arch", "server_args", "layers"), [
    ("llama", {}, False),  # the LM head alone
    ("llama", {"quantization": "fp8"}, True),  # with the layers
    ("llama3", {}, False),  # tied embeddings: the embedding keeps its 16-bit rows
    ("llama", {"tp_size": 2}, False),  # vocabulary-sharded: each rank quantizes its own rows
], ids=["head-only", "with-fp8-layers", "tied", "tp2"])
def test_fp8_lm_head_matches_hf(tiny_model_factory, tmp_path, prompts, arch, server_args, layers):
    """--lm-head-quantization fp8 against HF on the same checkpoint with the LM head (and, with --quantization
    fp8, the layers) replaced by the per-channel FP8 round trip: the same tolerances as the layers'."""
    bf16 = _bf16_copy(tiny_model_factory(arch), str(tmp_path / "bf16"))
    got_ids, got_lp = _engine_outputs(bf16, prompts, lm_head_quantization="fp8", **server_args)
    ref = write_quantize_at_load_reference(bf16, str(tmp_path / "rt"), layers=layers, lm_head=True)
    exact_ids, exact_lp = _hf_outputs(ref, prompts)
    assert (got_lp - exact_lp).abs().max() < LOGPROB_ATOL, (got_lp - exact_lp).abs().max()
    assert greedy_agreement(got_ids, exact_ids) >= 0.99
    # The head really was quantized: against the 16-bit head, log-probs move by far more than the tolerance.
    unquantized = write_quantize_at_load_reference(bf16, str(tmp_path / "rt16"), layers=layers, lm_head=False)
    _, head16_lp = _hf_outputs(unquantized, prompts[:1])
    assert (got_lp - head16_lp).abs().max() > 10 * LOGPROB_ATOL


def test_lm_head_quantization_rejects_unknown_value(tiny_llama):
    with pytest.raises(ArgsError, match="--lm-head-quantization must be one of fp8"):
        Engine(model_path=tiny_llama, device="cpu", lm_head_quantization="int4")
