"""SGLang's own load generator, `python -m sglang.bench_serving`, runs unchanged against Tessera.

`--backend sglang` drives the native `/generate` (cumulative-text SSE, `meta_info`), `--backend
sglang-oai` drives `/v1/completions` (OpenAI SSE deltas). Both discover the model through `/v1/models`
and the tokenizer through `/model_info`, exactly as they do against SGLang itself.

The workload is `random-ids`: prompts made of random token ids from the served tokenizer, so nothing is
downloaded (the `random` dataset samples ShareGPT from the HF hub).

One stand-in, for the environment rather than for Tessera: `sglang.benchmark.serving` imports the
constant `FAKE_BOOTSTRAP_HOST` (used only with `--fake-prefill`) from `sglang.srt.disaggregation.utils`,
which pulls in SGLang's whole server runtime (model configs → torchvision built for CUDA). With sglang
installed `--no-deps` on CPU torch that import fails, so the runner below registers a module holding
just that constant when the real one cannot be imported. Every line of bench_serving's client code
(request payloads, SSE parsing, metrics) is SGLang's own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("sglang", reason="install the test extra: pip install --no-deps sglang + its light deps")

# Runs `python -m sglang.bench_serving ARGS...`; see the module docstring for the one stand-in.
_RUNNER = """
import runpy, sys, types
try:
    import sglang.srt.disaggregation.utils  # noqa: F401 - a full SGLang install has it
except Exception as exc:
    print(f"bench runner: using a stand-in for sglang.srt.disaggregation.utils ({exc!r})", file=sys.stderr)
    stand_in = types.ModuleType("sglang.srt.disaggregation.utils")
    stand_in.FAKE_BOOTSTRAP_HOST = "2.2.2.2"
    sys.modules[stand_in.__name__] = stand_in
sys.argv = ["sglang.bench_serving", *sys.argv[1:]]
runpy.run_module("sglang.bench_serving", run_name="__main__", alter_sys=True)
"""

NUM_PROMPTS = 8


def _bench(base_url: str, backend: str, out_dir, *extra: str) -> tuple[str, dict]:
    result_file = out_dir / f"{backend}.jsonl"
    cmd = [sys.executable, "-c", _RUNNER,
           "--backend", backend, "--base-url", base_url,
           "--dataset-name", "random-ids", "--random-input-len", "32", "--random-output-len", "16",
           "--random-range-ratio", "0.5", "--num-prompts", str(NUM_PROMPTS), "--request-rate", "inf",
           "--seed", "1", "--disable-tqdm", "--output-file", str(result_file), *extra]
    env = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True, timeout=180,
                          env={**os.environ, **env})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"bench_serving --backend {backend} exited {proc.returncode}:\n{out[-4000:]}"
    lines = result_file.read_text().splitlines()
    assert len(lines) == 1, lines
    return out, json.loads(lines[0])


def _summary(out: str, label: str) -> float:
    m = re.search(rf"^{re.escape(label)}\s+([0-9.]+)\s*$", out, re.MULTILINE)
    assert m, f"no {label!r} line in bench_serving's summary:\n{out[-3000:]}"
    return float(m.group(1))


@pytest.mark.parametrize("backend", ["sglang", "sglang-oai"])
def test_bench_serving_backend(lang_server, tmp_path, backend) -> None:
    out, result = _bench(lang_server.base_url, backend, tmp_path)
    assert "Serving Benchmark Result" in out
    assert _summary(out, "Successful requests:") == NUM_PROMPTS
    assert _summary(out, "Output token throughput (tok/s):") > 0
    assert result["completed"] == NUM_PROMPTS and result["output_throughput"] > 0
    # ignore_eos is on (bench's default), so the server generated exactly the lengths bench asked for.
    asked = int(re.search(r"^#Output tokens: (\d+)$", out, re.MULTILINE).group(1))
    assert result["total_output_tokens"] == asked
    # Streaming worked token by token: a first token, then inter-token gaps (every output is >= 8 tokens).
    assert result["mean_ttft_ms"] > 0 and result["mean_itl_ms"] > 0
    # bench reads the server's prompt token counts (meta_info / usage) for the input totals.
    assert result["total_input_tokens"] > 0


def test_bench_serving_oai_cache_report(lang_server, tmp_path) -> None:
    """`--cache-report` adds SGLang's `return_cached_tokens_details` to each /v1/completions request."""
    out, result = _bench(lang_server.base_url, "sglang-oai", tmp_path, "--cache-report")
    assert _summary(out, "Successful requests:") == NUM_PROMPTS
    assert "Cache hit rate:" in out
    assert result["completed"] == NUM_PROMPTS
