"""Deployment settings: validation against the hardware and the model, and which source wins.

Precedence (shown on the deployment page): a deployment applied from the console is saved and, from
then on, its fields (`DEPLOYMENT_FIELDS`) override the matching flags/env (`--model-path`/`MODEL_PATH`,
`--tp-size`, ...) at every start, until the operator resets to flags. Every other flag always comes
from the command line / environment. The serving layer applies this at start through
`resolve_startup_args`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from app.admin.contracts import DEPLOYMENT_FIELDS
from app.admin.model_catalog import DTYPE_BYTES, ModelInfo, human_bytes, inspect_model
from app.db.clock import iso
from app.db.database import Database
from app.db.models import DeploymentProfile

logger = logging.getLogger(__name__)

SCHEDULE_POLICIES = ("fcfs", "lpm")
MEM_FRACTION_RANGE = (0.1, 0.95)
GIB = 1024**3


class DeploymentInvalid(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _int_or_none(value: Any, field: str, errors: dict[str, str]) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        errors[field] = "must be a whole number"
        return None


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


def find_model(models: list[ModelInfo], model_path: str) -> ModelInfo | None:
    norm = os.path.normpath(model_path)
    for m in models:
        if os.path.normpath(m.path) == norm or m.name == model_path:
            return m
    return None


def selected_model(models: list[ModelInfo], model_path: str, known_paths: list[str]) -> ModelInfo | None:
    """The catalog entry of the model a form names: one listed under --models-dir, else the running or the
    flags' model read from its own directory (it may sit anywhere, or no --models-dir may be set)."""
    model = find_model(models, model_path)
    if model is not None:
        return model
    norm = os.path.normpath(model_path)
    if any(p and os.path.normpath(p) == norm for p in known_paths) and (Path(model_path) / "config.json").is_file():
        return inspect_model(Path(model_path))
    return None


def _keep(form: dict[str, Any], current: dict[str, Any], field: str, default: Any = None) -> Any:
    """An omitted field keeps its running value; an explicit null/empty means the automatic default."""
    return form[field] if field in form else current.get(field, default)


def validate_deployment(
    form: dict[str, Any],
    *,
    models: list[ModelInfo],
    current_args: dict[str, Any],
    gpu_count: int,
    gpu_mem_total_mib: list[float],
    flag_model_path: str | None = None,
) -> dict[str, Any]:
    """Checks the page's fields against the hardware and the model they select; returns the normalised
    fields or raises DeploymentInvalid (per field). Nothing is saved before this passes."""
    errors: dict[str, str] = {}
    unknown = sorted(set(form) - set(DEPLOYMENT_FIELDS))
    if unknown:
        errors["_"] = f"unknown field(s): {', '.join(unknown)}"
    current_path = str(current_args.get("model_path") or "")
    model_path = str(form.get("model_path") or current_path)
    model = selected_model(models, model_path, [current_path, flag_model_path or ""])
    if model is not None:
        model_path = model.path
        if model.error and model.architecture is None:
            errors["model_path"] = f"{model.name}: {model.error}"
        elif not model.has_weights and current_args.get("load_format") != "dummy":
            errors["model_path"] = (f"{model.name} has no weight files (config only); it can only run with "
                                    "--load-format dummy")
    elif os.path.normpath(model_path) not in {os.path.normpath(p) for p in (current_path, flag_model_path) if p}:
        errors["model_path"] = "pick one of the models listed under the models directory"

    tp = _int_or_none(_keep(form, current_args, "tp_size", 1), "tp_size", errors)
    tp = 1 if tp is None else tp  # empty: 1 GPU; 0 is an error below, not 1
    max_tp = max(gpu_count, 1)
    if not 1 <= tp <= max_tp:
        errors["tp_size"] = f"must be between 1 and {max_tp} ({gpu_count} GPU(s) present)"
    elif model is not None and model.num_attention_heads and (
            model.num_attention_heads % tp or (model.num_key_value_heads or model.num_attention_heads) % tp):
        errors["tp_size"] = (f"must divide the model's attention heads ({model.num_attention_heads} query, "
                             f"{model.num_key_value_heads or model.num_attention_heads} key/value)")

    ctx_len = _int_or_none(_keep(form, current_args, "context_length"), "context_length", errors)
    if ctx_len is not None:
        limit = model.max_context if model is not None else None
        if ctx_len < 2:
            errors["context_length"] = "must be at least 2"
        elif limit is not None and ctx_len > limit:
            kept = "" if "context_length" in form else f" (the running value {ctx_len:,} is kept when omitted)"
            errors["context_length"] = f"must be at most the model's maximum, {limit:,}{kept}"

    try:
        mem = float(_keep(form, current_args, "mem_fraction_static", 0.85))
    except (TypeError, ValueError):
        mem = 0.0
        errors["mem_fraction_static"] = "must be a number"
    lo, hi = MEM_FRACTION_RANGE
    if "mem_fraction_static" not in errors and not lo <= mem <= hi:
        errors["mem_fraction_static"] = f"must be between {lo} and {hi}"

    max_running = _int_or_none(_keep(form, current_args, "max_running_requests"), "max_running_requests", errors)
    if max_running is not None and not 1 <= max_running <= 100_000:
        errors["max_running_requests"] = "must be between 1 and 100000 (empty: automatic)"

    chunk = _int_or_none(_keep(form, current_args, "chunked_prefill_size"), "chunked_prefill_size", errors)
    if chunk is not None and chunk != -1 and not 1 <= chunk <= 1 << 20:
        errors["chunked_prefill_size"] = "must be between 1 and 1048576, or -1 to turn chunking off (empty: automatic)"

    policy = str(_keep(form, current_args, "schedule_policy", "fcfs"))
    if policy not in SCHEDULE_POLICIES:
        errors["schedule_policy"] = f"must be one of {', '.join(SCHEDULE_POLICIES)}"

    if model is not None and gpu_mem_total_mib and "tp_size" not in errors and "mem_fraction_static" not in errors:
        problem = _memory_problem(model, current_args.get("dtype", "auto"), tp, mem, gpu_mem_total_mib)
        if problem:
            errors["mem_fraction_static"] = problem
    if errors:
        raise DeploymentInvalid(errors)
    return {
        "model_path": model_path,
        "tp_size": tp,
        "context_length": ctx_len,
        "mem_fraction_static": mem,
        "max_running_requests": max_running,
        "chunked_prefill_size": chunk,
        "schedule_policy": policy,
        "disable_radix_cache": _bool(_keep(form, current_args, "disable_radix_cache", False)),
    }


def _memory_problem(model: ModelInfo, dtype: str, tp: int, mem: float, totals_mib: list[float]) -> str | None:
    """The weights of one TP shard must fit in the static memory budget of the smallest GPU used."""
    if model.num_params is None:
        return None
    name = model.dtype if dtype in (None, "auto") else dtype
    bytes_per = DTYPE_BYTES.get(str(name), 2) if name not in ("float", "fp32") else 4
    weights_per_gpu = model.num_params * bytes_per / tp
    budget = min(totals_mib[:tp] or totals_mib) * 1024 * 1024 * mem
    # Leave at least a tenth of the budget for the KV cache: a deployment with no KV room cannot serve.
    if weights_per_gpu > budget * 0.9:
        return (f"the weights need {human_bytes(int(weights_per_gpu))} per GPU at TP {tp}, but {mem:.2f} of the GPU "
                f"memory is {human_bytes(int(budget))}: raise the fraction or the TP size")
    return None


# ---- saved profiles ----------------------------------------------------------------------------
def active_profile(db: Database) -> DeploymentProfile | None:
    with db.session() as s:
        return s.scalars(
            select(DeploymentProfile).where(DeploymentProfile.is_active.is_(True)).order_by(DeploymentProfile.id.desc())
        ).first()


def effective_source(db: Database) -> dict[str, Any]:
    prof = active_profile(db)
    if prof is None:
        return {"source": "flags", "profile_id": None, "applied_at": None, "applied_by": None}
    return {"source": "saved", "profile_id": prof.id, "applied_at": iso(prof.applied_at), "applied_by": prof.created_by}


def deactivate_profiles(db: Database) -> None:
    with db.session() as s:
        s.execute(update(DeploymentProfile).values(is_active=False))


@dataclass(frozen=True)
class StartupDeployment:
    args: dict[str, Any]
    source: str  # flags | saved
    profile_id: int | None


def resolve_startup_args(flag_args: dict[str, Any], data_dir: str, database_url: str | None = None) -> StartupDeployment:
    """What the serving layer calls before starting the engine: the flags/env args with the saved
    deployment's fields laid over them (when one was applied from the console)."""
    db = Database.open(data_dir, database_url)
    try:
        prof = active_profile(db)
    finally:
        db.close()
    if prof is None:
        return StartupDeployment(dict(flag_args), "flags", None)
    saved = {k: v for k, v in prof.args.items() if k in DEPLOYMENT_FIELDS}
    if not os.path.exists(str(saved.get("model_path", ""))) and flag_args.get("load_format") != "dummy":
        logger.warning("saved deployment #%d names a missing model %r; starting from flags/env instead",
                       prof.id, saved.get("model_path"))
        return StartupDeployment(dict(flag_args), "flags", None)
    logger.info("using the deployment saved in the console (#%d) over flags/env for: %s",
                prof.id, ", ".join(sorted(saved)))
    return StartupDeployment({**flag_args, **saved}, "saved", prof.id)
