"""Per-replica Prometheus series (`replica` label) for `--dp-size N`, read from the replica summaries
so a scrape never waits on an engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.metrics import PREFIX

_SERIES = (
    ("healthy", "replica_healthy", "1 when the replica takes requests"),
    ("num_running_reqs", "replica_num_running_reqs", "Requests running in the replica's engine"),
    ("num_queued_reqs", "replica_num_queue_reqs", "Requests waiting in the replica's engine queue"),
    ("token_usage", "replica_token_usage", "Fraction of the replica's KV cache in use (0..1)"),
    ("cache_hit_rate", "replica_cache_hit_rate", "The replica's prefix cache hit rate (0..1)"),
    ("gen_throughput", "replica_gen_throughput", "The replica's generation throughput (tokens/s)"),
    ("outstanding_tokens", "replica_outstanding_tokens", "Prompt + remaining max tokens dispatched, not done"),
    ("dispatched", "replica_dispatched_requests", "Sequences dispatched to the replica since start"),
    ("restarts", "replica_restarts", "Engine restarts of the replica"),
)


class ReplicaGauges(Collector):
    def __init__(self, replica_set: Any, model_name: Callable[[], str]) -> None:
        self._set = replica_set
        self._model_name = model_name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self._set.replica_summaries()
        name = self._model_name()
        for key, metric, help_text in _SERIES:
            family = GaugeMetricFamily(f"{PREFIX}_{metric}", help_text, labels=["model_name", "replica"])
            for row in rows:
                if key == "healthy":
                    value = 1.0 if row["health"] == "healthy" else 0.0
                else:
                    value = row.get(key)
                if isinstance(value, (int, float)):
                    family.add_metric([name, str(row["replica"])], float(value))
            yield family

    def describe(self) -> list:
        return []
