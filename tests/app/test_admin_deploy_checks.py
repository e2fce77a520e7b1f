"""Deployment validation against the model actually selected (inside or outside --models-dir), nothing
saved on a refusal, and the deployment page's resolved values, live badge and CPU wording."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.admin.deployment import DeploymentInvalid, validate_deployment
from app.admin.fakes import FAKE_CHUNK, FAKE_MAX_RUNNING, write_fake_model
from app.admin.model_catalog import list_models
from app.db.models import AuditLog, DeploymentProfile

pytestmark = pytest.mark.asyncio


def _args(model_path: Path, **over: object) -> dict:
    return {"model_path": str(model_path), "tp_size": 1, "context_length": None, "mem_fraction_static": 0.85,
            "max_running_requests": None, "chunked_prefill_size": 8192, "schedule_policy": "fcfs",
            "disable_radix_cache": False, "dtype": "auto", **over}


async def test_model_outside_models_dir_is_checked(tmp_path: Path) -> None:
    listed = tmp_path / "models"
    write_fake_model(listed / "small", max_context=2048)
    outside = write_fake_model(tmp_path / "elsewhere" / "big", num_heads=6, max_context=8192)
    models = list_models(str(listed))

    def check(form: dict, current: dict, gpus: int = 0, flag_model: str | None = None) -> dict:
        return validate_deployment(form, models=models, current_args=current, gpu_count=gpus,
                                   gpu_mem_total_mib=[80000.0] * gpus, flag_model_path=flag_model)

    running_outside = _args(outside)
    assert check({"context_length": 8192}, running_outside)["context_length"] == 8192
    for form, current, gpus, field, text in [
        # The running model sits outside --models-dir: its own config.json still bounds the context.
        ({"context_length": 8193}, running_outside, 0, "context_length", "8,192"),
        ({"tp_size": 4}, running_outside, 4, "tp_size", "6 query"),
        # Switching to a smaller model keeps the running context when it is omitted: refused, and said why.
        ({"model_path": "small"}, _args(outside, context_length=4096), 0, "context_length", "kept when omitted"),
        # The flags' model (outside --models-dir) may be chosen again, and is checked too.
        ({"model_path": str(outside), "context_length": 9000}, _args(listed / "small"), 0, "context_length", "8,192"),
    ]:
        with pytest.raises(DeploymentInvalid) as err:
            check(form, current, gpus, flag_model=str(outside))
        assert text in err.value.errors[field], (form, err.value.errors)
    # Explicit null: the new model's own default, accepted.
    assert check({"model_path": "small", "context_length": None}, _args(outside, context_length=4096))[
        "context_length"] is None
    # A config-only directory (bench shapes) runs only with dummy weights.
    shape_only = listed / "shape-only"
    shape_only.mkdir()
    (shape_only / "config.json").write_text((listed / "small" / "config.json").read_text())
    models[:] = list_models(str(listed))
    with pytest.raises(DeploymentInvalid) as err:
        check({"model_path": "shape-only"}, running_outside)
    assert "--load-format dummy" in err.value.errors["model_path"]
    assert check({"model_path": "shape-only"}, _args(outside, load_format="dummy"))["model_path"] == str(shape_only)
    # A path that is neither listed, running nor the flags' model is refused.
    with pytest.raises(DeploymentInvalid) as err:
        check({"model_path": str(outside)}, _args(listed / "small"))
    assert "model_path" in err.value.errors


async def test_out_of_range_put_is_never_saved(console, app) -> None:
    c, h = console
    rt = app.state.demo.ctx.runtime

    def counts() -> tuple[int, int]:
        with rt.db.session() as s:
            return (s.scalar(select(func.count()).select_from(DeploymentProfile)),
                    s.scalar(select(func.count()).select_from(AuditLog)))

    before = counts()
    for body, field in [({"model_path": "tiny-llama", "context_length": 4097}, "context_length"),
                        ({"model_path": "tiny-qwen3", "tp_size": 4}, "tp_size"),
                        ({"max_running_requests": 0}, "max_running_requests")]:
        r = await c.put("/admin/api/deployment", headers=h, json=body)
        assert r.status_code == 400 and field in r.json()["error"]["fields"], r.text
    hx = {**h, "HX-Request": "true"}
    r = await c.post("/admin/deployment", headers=hx, data={"model_path": "tiny-llama", "context_length": "5000"})
    assert "Not applied" in r.text and "4,096" in r.text
    assert counts() == before and app.state.demo.supervisor.num_applies == 0


async def test_running_column_shows_resolved_values(console, app) -> None:
    c, _ = console
    d = (await c.get("/admin/api/deployment")).json()
    assert d["current"]["context_length"] is None and d["current"]["max_running_requests"] is None
    assert d["running"]["context_length"] == 4096 and d["running"]["max_running_requests"] == FAKE_MAX_RUNNING
    page = (await c.get("/admin/deployment/current")).text
    assert 'data-field="context_length">4,096 <span class="muted">(auto)</span>' in page
    assert f'data-field="max_running_requests">{FAKE_MAX_RUNNING} <span class="muted">(auto)</span>' in page
    # The prefill chunk is automatic too (16384 on GPUs of >= 120 GiB): the form leaves it empty, not "None".
    assert d["current"]["chunked_prefill_size"] is None and d["running"]["chunked_prefill_size"] == FAKE_CHUNK
    assert f'data-field="chunked_prefill_size">{FAKE_CHUNK:,} <span class="muted">(auto)</span>' in page
    form = (await c.get("/admin/deployment")).text
    assert 'name="chunked_prefill_size" type="number" min="-1" value="" placeholder="automatic"' in form


async def test_badge_follows_restart_and_no_stale_error(console, app) -> None:
    c, h = console
    rt = app.state.demo.ctx.runtime
    hx = {**h, "HX-Request": "true"}
    app.state.demo.supervisor.restart_delay_s = 1.0  # long enough to poll while it restarts
    r = await c.put("/admin/api/deployment", headers=h, json={"model_path": "broken-model"})
    assert r.status_code == 202
    poll = await c.get("/admin/deployment/status?polling=1", headers=hx)
    assert re.search(r'id="engine-badge" hx-swap-oob="true">(draining|restarting)<', poll.text), poll.text
    await rt.deploy.wait()
    assert "failed to start" in (await c.get("/admin/deployment/status?polling=1", headers=hx)).text
    r = await c.put("/admin/api/deployment", headers=h, json={"model_path": "tiny-qwen3"})
    assert r.status_code == 202
    await rt.deploy.wait()
    done = await c.get("/admin/deployment/status?polling=1", headers=hx)
    assert 'hx-swap-oob="true">ready<' in done.text and "is running" in done.text
    page = (await c.get("/admin/deployment")).text
    for stale in ("failed to start", "cannot load weights", "flash error"):
        assert stale not in done.text and stale not in page, stale


async def test_cpu_wording(console, app) -> None:
    c, _ = console
    page = (await c.get("/admin/deployment")).text
    assert "Fraction of memory for weights" in page and "GPU memory" not in page
    assert "1 … 1" not in page and "CPU only" in page
