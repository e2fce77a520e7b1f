"""GPU utilisation and memory per GPU through NVML, exported at scrape time; silent without a GPU."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class NvmlCollector(Collector):
    def __init__(self, prefix: str, model_name: Callable[[], str]) -> None:
        self._prefix = prefix
        self._model_name = model_name
        self._nvml: Any = None
        self._tried = False

    def _init(self) -> Any:
        if not self._tried:
            self._tried = True
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception as exc:  # no library or no driver: a CPU box, no GPU series
                logger.debug("NVML unavailable: %s", exc)
        return self._nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nv = self._init()
        if nv is None:
            return
        labels = ["model_name", "gpu"]
        util = GaugeMetricFamily(f"{self._prefix}_gpu_utilization", "GPU utilisation (0..1)", labels=labels)
        used = GaugeMetricFamily(f"{self._prefix}_gpu_memory_used_bytes", "GPU memory in use", labels=labels)
        total = GaugeMetricFamily(f"{self._prefix}_gpu_memory_total_bytes", "GPU memory size", labels=labels)
        name = self._model_name()
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
                rates = nv.nvmlDeviceGetUtilizationRates(handle)
                util.add_metric([name, str(i)], rates.gpu / 100.0)
                used.add_metric([name, str(i)], float(mem.used))
                total.add_metric([name, str(i)], float(mem.total))
        except Exception as exc:  # a GPU falling off the bus must not break the scrape
            logger.warning("NVML read failed: %s", exc)
        yield from (util, used, total)

    def describe(self) -> list:
        return []
