"""Per-GPU utilisation, memory, temperature and power through NVML (`nvidia-ml-py`).

On a machine without an NVIDIA driver `sample()` reports `available: False` with the reason, which the
dashboard shows as a clear "no GPU" state instead of empty charts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class GpuSampler:
    """Samples NVML at most every `min_interval_s` (several browsers polling share one sample)."""

    def __init__(self, min_interval_s: float = 0.5) -> None:
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._init_error: str | None = None
        self._initialised = False
        self._last: dict[str, Any] | None = None
        self._last_at = 0.0

    def _init(self) -> None:
        self._initialised = True
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:  # library missing, no driver, no device: all mean "no GPU" here
            self._init_error = f"NVML unavailable: {exc}" if str(exc) else "NVML unavailable"
            logger.info("GPU metrics off: %s", self._init_error)

    def sample(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last_at < self._min_interval_s:
                return self._last
            if not self._initialised:
                self._init()
            self._last = self._read()
            self._last_at = now
            return self._last

    def _read(self) -> dict[str, Any]:
        if self._nvml is None:
            return {"available": False, "reason": self._init_error or "no NVIDIA GPU", "gpus": []}
        nv = self._nvml
        gpus = []
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception as exc:
            return {"available": False, "reason": f"NVML error: {exc}", "gpus": []}
        for i in range(count):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            gpus.append({
                "index": i,
                "name": _safe(lambda h=h: _text(nv.nvmlDeviceGetName(h))),
                "util_pct": _safe(lambda h=h: nv.nvmlDeviceGetUtilizationRates(h).gpu),
                "mem_used_mib": _safe(lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).used / MIB),
                "mem_total_mib": _safe(lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).total / MIB),
                "temp_c": _safe(lambda h=h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                "power_w": _safe(lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                "power_limit_w": _safe(lambda h=h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
            })
        if not gpus:
            return {"available": False, "reason": "NVML found no GPUs", "gpus": []}
        return {"available": True, "reason": None, "gpus": gpus}

    def memory_total_mib(self) -> list[float]:
        """Total memory per GPU (for validating a deployment); empty without GPUs."""
        return [g["mem_total_mib"] or 0.0 for g in self.sample()["gpus"]]

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    pass
                self._nvml = None
                self._initialised = False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _safe(read: Any) -> Any:
    """One unsupported field (e.g. power on some boards) must not hide the others."""
    try:
        value = read()
    except Exception:
        return None
    return round(value, 1) if isinstance(value, float) else value
