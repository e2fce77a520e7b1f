"""Deployment: model catalog, validation against hardware and model, apply / failure / reset, precedence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.admin import resolve_startup_args
from app.admin.deployment import DeploymentInvalid, validate_deployment
from app.admin.fakes import write_fake_model
from app.admin.model_catalog import list_models

pytestmark = pytest.mark.asyncio


async def test_model_catalog(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_fake_model(root / "org" / "nested-llama", vocab_size=100, hidden_size=8, max_context=1234)
    shape_only = root / "bench-shape"
    shape_only.mkdir(parents=True)
    (shape_only / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 1024, "num_hidden_layers": 2, "intermediate_size": 4096,
        "vocab_size": 1000, "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16", "tie_word_embeddings": True}))
    (root / "not-a-model").mkdir()
    bad = root / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{oops")
    models = {m.name: m for m in list_models(str(root))}
    assert set(models) == {"org/nested-llama", "bench-shape", "bad"}
    nested = models["org/nested-llama"]
    assert nested.architecture == "LlamaForCausalLM" and nested.num_params == 2 * 100 * 8
    assert not nested.params_estimated and nested.dtype == "bfloat16" and nested.max_context == 1234
    assert nested.size_bytes > 2 * 100 * 8 * 2 and nested.has_weights
    shape = models["bench-shape"]
    assert shape.params_estimated and shape.num_params and 20e6 < shape.num_params < 40e6
    assert not shape.has_weights and shape.max_context == 32768
    assert models["bad"].error and "config.json" in models["bad"].error
    assert list_models(None) == [] and list_models(str(tmp_path / "missing")) == []


async def test_validation_against_hardware_and_model(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_fake_model(root / "m", num_heads=4, max_context=4096)
    models = list_models(str(root))
    current = {"model_path": str(root / "m"), "tp_size": 1, "mem_fraction_static": 0.85, "chunked_prefill_size": 8192,
               "schedule_policy": "fcfs", "disable_radix_cache": False, "dtype": "auto"}

    def check(form: dict, gpus: int = 0, mem: list[float] | None = None) -> dict:
        return validate_deployment(form, models=models, current_args=current, gpu_count=gpus,
                                   gpu_mem_total_mib=mem or [])

    ok = check({"model_path": "m", "context_length": "4096", "max_running_requests": ""})
    assert ok["model_path"] == str(root / "m") and ok["context_length"] == 4096 and ok["max_running_requests"] is None
    cases = [
        ({"tp_size": 2}, 0, None, "tp_size"),  # no GPU: TP 1 only
        ({"tp_size": 4}, 2, None, "tp_size"),  # more than the GPUs present
        ({"tp_size": 3}, 4, None, "tp_size"),  # does not divide 4 heads
        ({"tp_size": 0}, 1, None, "tp_size"),  # an error, not "1 GPU"
        ({"tp_size": -2}, 1, None, "tp_size"),
        ({"context_length": 4097}, 0, None, "context_length"),
        ({"mem_fraction_static": 0.96}, 0, None, "mem_fraction_static"),
        ({"mem_fraction_static": 0.05}, 0, None, "mem_fraction_static"),
        ({"chunked_prefill_size": 0}, 0, None, "chunked_prefill_size"),
        ({"schedule_policy": "random"}, 0, None, "schedule_policy"),
        ({"max_running_requests": "lots"}, 0, None, "max_running_requests"),
        ({"model_path": "/elsewhere/model"}, 0, None, "model_path"),
        ({"model_path": "m"}, 1, [0.1], "mem_fraction_static"),  # weights do not fit on a 0.1 MiB GPU
        ({"port": 1}, 0, None, "_"),  # only deployment fields
    ]
    for form, gpus, mem, field in cases:
        with pytest.raises(DeploymentInvalid) as err:
            check(form, gpus, mem)
        assert field in err.value.errors, (form, err.value.errors)
    assert check({"tp_size": 2}, 2, [80000.0, 80000.0])["tp_size"] == 2
    assert check({"tp_size": ""}, 1)["tp_size"] == 1  # the form's empty field: 1 GPU
    assert check({"chunked_prefill_size": -1})["chunked_prefill_size"] == -1


async def test_apply_success_and_saved_settings_win(console, app) -> None:
    c, h = console
    demo = app.state.demo
    d = (await c.get("/admin/api/deployment")).json()
    assert d["effective_source"]["source"] == "flags" and d["current"]["model_path"].endswith("tiny-llama")
    assert {m["name"] for m in d["models"]} == {"tiny-llama", "tiny-qwen3", "broken-model"}
    assert d["hardware"]["gpu_count"] == 0 and d["limits"]["tp_size"] == [1, 1]
    assert "override" in d["precedence"]
    r = await c.put("/admin/api/deployment", headers=h, json={"model_path": "tiny-qwen3", "context_length": 16384,
                                                             "schedule_policy": "lpm", "disable_radix_cache": True})
    assert r.status_code == 202
    r2 = await c.put("/admin/api/deployment", headers=h, json={"model_path": "tiny-llama"})
    assert r2.status_code == 409 and r2.json()["error"]["code"] == "apply_in_progress"
    await demo.ctx.runtime.deploy.wait()
    d = (await c.get("/admin/api/deployment")).json()
    assert d["last_result"]["ok"] and d["supervisor"]["state"] == "ready"
    assert d["current"]["model_path"].endswith("tiny-qwen3") and d["current"]["schedule_policy"] == "lpm"
    assert d["effective_source"]["source"] == "saved" and d["effective_source"]["applied_by"] == "admin"
    assert any("engine ready" in line for line in d["supervisor"]["progress"])
    models = (await c.get("/v1/models")).json()
    assert models["data"][0]["id"] == "tiny-qwen3"
    # At the next start the saved fields override flags/env; other flags are untouched.
    flags = {"model_path": d["flags"]["model_path"], "tp_size": 1, "port": 31000, "context_length": None}
    start = resolve_startup_args(flags, demo.ctx.data_dir)
    assert start.source == "saved" and start.args["model_path"].endswith("tiny-qwen3")
    assert start.args["context_length"] == 16384 and start.args["port"] == 31000
    actions = [e["action"] for e in (await c.get("/admin/api/audit")).json()["entries"]]
    assert "deployment_apply" in actions and "deployment_ready" in actions
    # Reset to flags: forgets the profile and restarts with the flag values.
    r = await c.delete("/admin/api/deployment", headers=h)
    assert r.status_code == 202
    await demo.ctx.runtime.deploy.wait()
    d = (await c.get("/admin/api/deployment")).json()
    assert d["effective_source"]["source"] == "flags" and d["current"]["model_path"].endswith("tiny-llama")
    assert resolve_startup_args(flags, demo.ctx.data_dir).source == "flags"


async def test_apply_failure_restores_and_shows_error(console, app) -> None:
    c, h = console
    rt = app.state.demo.ctx.runtime
    r = await c.put("/admin/api/deployment", headers=h, json={"model_path": "broken-model"})
    assert r.status_code == 202
    await rt.deploy.wait()
    d = (await c.get("/admin/api/deployment")).json()
    assert d["last_result"]["ok"] is False and "cannot load weights" in d["last_result"]["error"]
    assert d["current"]["model_path"].endswith("tiny-llama") and d["supervisor"]["state"] == "ready"
    assert d["effective_source"]["source"] == "flags"
    assert (await c.get("/v1/models")).json()["data"][0]["id"] == "tiny-llama"
    status = await c.get("/admin/deployment/status?polling=1")
    assert "failed to start" in status.text and "cannot load weights" in status.text
    assert status.headers["hx-trigger"] == "deployment-done"
    r = await c.put("/admin/api/deployment", headers=h, json={"tp_size": 8})
    assert r.status_code == 400 and "tp_size" in r.json()["error"]["fields"]


async def test_deployment_page_and_htmx_form(console, app) -> None:
    c, h = console
    hx = {**h, "HX-Request": "true"}
    page = await c.get("/admin/deployment")
    assert page.status_code == 200
    for text in ("tiny-qwen3", "Qwen3ForCausalLM", "flags / environment", "override the matching flags"):
        assert text in page.text
    r = await c.post("/admin/deployment", headers=hx, data={"model_path": app.state.demo.supervisor.current_args()[
        "model_path"], "tp_size": "1", "context_length": "999999", "mem_fraction_static": "0.8",
        "chunked_prefill_size": "4096", "schedule_policy": "fcfs", "radix_cache": "on"})
    assert "Not applied" in r.text and "Context length" in r.text
    models_dir = Path(app.state.demo.ctx.models_dir)
    r = await c.post("/admin/deployment", headers=hx, data={"model_path": str(models_dir / "tiny-qwen3"),
                                                            "tp_size": "1", "mem_fraction_static": "0.8",
                                                            "chunked_prefill_size": "4096", "schedule_policy": "fcfs"})
    assert 'hx-trigger="every 1s"' in r.text and "Applying deployment" in r.text
    await app.state.demo.ctx.runtime.deploy.wait()
    assert app.state.demo.supervisor.current_args()["disable_radix_cache"] is True  # checkbox left unticked
    page = await c.get("/admin/deployment/current")
    assert "saved in console" in page.text
