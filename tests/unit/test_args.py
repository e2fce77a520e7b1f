"""ServerArgs validation and CLI parsing: invalid values fail with one clear line."""

from __future__ import annotations

import argparse

import pytest

from engine.args import ArgsError, ServerArgs
from engine.args_cli import add_cli_args, args_from_namespace


@pytest.mark.parametrize("kwargs,fragment", [
    ({"tp_size": 0}, "--tp-size"),
    ({"mem_fraction_static": 1.5}, "--mem-fraction-static"),
    ({"schedule_policy": "random"}, "--schedule-policy"),
    ({"dtype": "int3"}, "--dtype"),
    ({"kv_cache_dtype": "fp8_e5m2"}, "--kv-cache-dtype"),
    ({"kv_cache_dtype": "int8"}, "--kv-cache-dtype"),
    ({"chunked_prefill_size": 0}, "--chunked-prefill-size"),
    ({"model_path": "/does/not/exist"}, "does not exist"),
    ({"device": "cpu", "attention_backend": "triton"}, "needs a CUDA device"),
    ({"nnodes": 2}, "--dist-init-addr"),
    ({"grammar_backend": "outlines"}, "--grammar-backend"),
    ({"grammar_compile_timeout": 0}, "--grammar-compile-timeout"),
    ({"constrained_json_max_whitespace_cnt": 0}, "--constrained-json-max-whitespace-cnt"),
])
def test_invalid_args_fail_with_one_line(kwargs, fragment, tiny_llama):
    kwargs.setdefault("model_path", tiny_llama)
    with pytest.raises(ArgsError) as err:
        ServerArgs(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("layout,fragment", [
    ("empty-dir", "is not a model directory (no config.json in it)"),
    ("a-file", "is not a model directory (no config.json in it)"),
    ("bad-json", "config.json is not valid JSON"),
    ("json-list", "config.json is not a JSON object"),
])
def test_model_path_that_is_not_a_model_fails_with_one_line(tmp_path, layout, fragment):
    path = tmp_path / "model"
    if layout == "a-file":
        path.write_text("not a model")
    else:
        path.mkdir()
        if layout != "empty-dir":
            (path / "config.json").write_text("{not json" if layout == "bad-json" else "[1, 2]")
    with pytest.raises(ArgsError) as err:
        ServerArgs(model_path=str(path))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_cli_flags_map_to_fields(tiny_llama):
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    ns = parser.parse_args(["--model-path", tiny_llama, "--tp", "2", "--disable-radix-cache",
                            "--mem-fraction-static", "0.5", "--schedule-policy", "lpm"])
    args = args_from_namespace(ns)
    assert (args.tp_size, args.disable_radix_cache, args.mem_fraction_static, args.schedule_policy) == \
        (2, True, 0.5, "lpm")
    with pytest.raises(ArgsError):
        ServerArgs.from_dict({"model_path": tiny_llama, "no_such_flag": 1})


def test_args_are_frozen(tiny_llama):
    args = ServerArgs(model_path=tiny_llama)
    with pytest.raises(AttributeError):
        args.tp_size = 2  # type: ignore[misc]
    assert args.replace(tp_size=2).tp_size == 2


@pytest.mark.parametrize("kwargs,fragment", [
    ({"speculative_algorithm": "eagle"}, "--speculative-algorithm"),
    ({"speculative_algorithm": "draft"}, "needs --speculative-model"),
    ({"speculative_algorithm": "ngram", "speculative_num_draft_tokens": 0}, "--speculative-num-draft-tokens"),
    ({"speculative_algorithm": "ngram", "speculative_num_draft_tokens": 17}, "1..16"),
    ({"speculative_algorithm": "ngram", "speculative_ngram_min_match": 5}, "--speculative-ngram-min-match"),
    ({"speculative_model": "/no/such/draft"}, "no readable config.json"),
    ({"speculative_algorithm": "ngram", "speculative_min_accept_rate": 1.5}, "--speculative-min-accept-rate"),
])
def test_invalid_speculative_args(kwargs, fragment, tiny_llama):
    with pytest.raises(ArgsError) as err:
        ServerArgs(model_path=tiny_llama, **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_speculative_draft_must_share_the_vocabulary(tiny_llama, tmp_path):
    import json
    import shutil

    draft = tmp_path / "draft"
    shutil.copytree(tiny_llama, draft)
    cfg = json.loads((draft / "config.json").read_text())
    cfg["vocab_size"] += 8
    (draft / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArgsError, match="vocab_size .* the draft must share the target's tokenizer"):
        ServerArgs(model_path=tiny_llama, speculative_model=str(draft))
    ok = ServerArgs(model_path=tiny_llama, speculative_model=tiny_llama)
    assert ok.speculative_mode == "draft"
    assert ServerArgs(model_path=tiny_llama, speculative_algorithm="ngram").speculative_mode == "ngram"
    assert ServerArgs(model_path=tiny_llama).speculative_mode is None
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    ns = parser.parse_args(["--model-path", tiny_llama, "--speculative-draft-model-path", tiny_llama,
                            "--speculative-num-draft-tokens", "5"])
    args = args_from_namespace(ns)
    assert (args.speculative_model, args.speculative_num_draft_tokens) == (tiny_llama, 5)


@pytest.mark.parametrize("value,is_fp8", [("auto", False), ("bf16", False), ("bfloat16", False),
                                          ("fp8_e4m3", True), ("fp8", True)])
def test_kv_cache_dtype_flag(value, is_fp8, tiny_llama):
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    args = args_from_namespace(parser.parse_args(["--model-path", tiny_llama, "--kv-cache-dtype", value]))
    assert args.kv_cache_dtype == value and args.kv_cache_is_fp8 == is_fp8
    assert ServerArgs(model_path=tiny_llama).kv_cache_dtype == "auto"
