"""What the admin console needs from the serving layer.

The API process implements these (the engine supervisor and the metrics collector); tests and the
demo server use the fakes in `app.admin.fakes`. The console never talks to the engine directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from app.admin.gpu import GpuSampler

SUPERVISOR_STATES = ("starting", "ready", "restarting", "draining", "failed")

# The ServerArgs fields the deployment page edits; everything else stays as flags/env set it.
DEPLOYMENT_FIELDS = (
    "model_path",
    "tp_size",
    "context_length",
    "mem_fraction_static",
    "max_running_requests",
    "chunked_prefill_size",
    "schedule_policy",
    "disable_radix_cache",
)


@runtime_checkable
class SupervisorProtocol(Protocol):
    """Owns the engine processes of the running deployment."""

    def current_args(self) -> dict[str, Any]:
        """`ServerArgs.to_dict()` of the running (or starting) deployment."""
        ...

    async def apply(self, new_args: dict[str, Any]) -> None:
        """Drain, stop, start with `new_args` (a full ServerArgs dict).

        Returns once the new engine is ready. On failure it restores the previous deployment and
        then raises; the exception text is shown to the operator.
        """
        ...

    def status(self) -> dict[str, Any]:
        """`state` (one of SUPERVISOR_STATES), `progress` (log lines of the current/last restart),
        `error` (str | None) and `model_name`."""
        ...

    def gpu_count(self) -> int:
        """GPUs visible to the engine (0 on CPU)."""
        ...

    def engine_info(self) -> dict[str, Any]:
        """What the running engine resolved from its settings: `max_context_length` and
        `max_running_requests` at least (empty while no engine runs)."""
        ...


@runtime_checkable
class MetricsSourceProtocol(Protocol):
    def snapshot(self) -> dict[str, Any]:
        """`num_running_reqs`, `num_queued_reqs`, `token_usage` (KV usage 0..1), `kv_used_tokens`,
        `kv_total_tokens`, `cache_hit_rate` (0..1), `gen_throughput` (tok/s), `ttft_median_s`
        (None before the first request) and `model_name`."""
        ...


class ConsoleInputs(Protocol):
    """What the console's runtime is built from (`AdminContext` is the implementation). A protocol, so
    `runtime` does not import `context`: the context owns its runtime, never the other way round."""

    data_dir: str
    database_url: str | None
    models_dir: str | None
    supervisor: SupervisorProtocol
    metrics: MetricsSourceProtocol
    static_api_key: str | None
    flag_args: dict[str, Any] | None
    usage_flush_interval_s: float
    password_hasher: PasswordHasher | None
    gpu_sampler: GpuSampler | None
    history_interval_s: float
    history_window_s: float
