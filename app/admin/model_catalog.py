"""Model directories under `--models-dir`: what the deployment page lists.

Everything is read from `config.json` and the safetensors headers (a few KiB per shard), never the
weights, so listing a directory of 70B checkpoints stays instant. Config-only directories (bench
shapes for `--load-format dummy`) get a parameter estimate from the config.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1,
               "F8_E5M2": 1, "I8": 1, "U8": 1, "I32": 4, "I64": 8, "F64": 8, "BOOL": 1}
MAX_SCAN_DEPTH = 2  # /models/<name> and /models/<org>/<name>


@dataclass(frozen=True)
class ModelInfo:
    name: str  # path relative to models_dir
    path: str
    architecture: str | None
    num_params: int | None
    params_estimated: bool
    dtype: str | None
    max_context: int | None
    size_bytes: int
    num_attention_heads: int | None
    num_key_value_heads: int | None
    has_weights: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params_human"] = human_count(self.num_params)
        d["size_human"] = human_bytes(self.size_bytes)
        return d


def human_count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _safetensors_params(path: Path) -> int:
    """Element count from a safetensors header: 8-byte little-endian length, then JSON."""
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > 100 * 1024 * 1024:
            raise ValueError(f"{path.name}: implausible header length")
        header = json.loads(f.read(header_len))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _estimate_params(cfg: dict[str, Any]) -> int | None:
    """Decoder-only transformer estimate (Llama/Qwen shapes): embeddings, attention, gated MLP, norms."""
    try:
        h = int(cfg["hidden_size"])
        n_layers = int(cfg["num_hidden_layers"])
        inter = int(cfg["intermediate_size"])
        vocab = int(cfg["vocab_size"])
        n_heads = int(cfg["num_attention_heads"])
        n_kv = int(cfg.get("num_key_value_heads") or n_heads)
        head_dim = int(cfg.get("head_dim") or h // n_heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    attn = h * n_heads * head_dim * 2 + h * n_kv * head_dim * 2
    mlp = 3 * h * inter
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return n_layers * (attn + mlp + 2 * h) + embed + h


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def inspect_model(path: Path, name: str | None = None) -> ModelInfo:
    name = name or path.name
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return ModelInfo(name, str(path), None, None, False, None, None, _dir_size(path), None, None, False,
                         error=f"unreadable config.json: {exc}")
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    shards = sorted(path.glob("*.safetensors"))
    num_params: int | None = None
    estimated = False
    error = None
    if shards:
        try:
            num_params = sum(_safetensors_params(p) for p in shards)
        except (OSError, ValueError, KeyError, struct.error) as exc:
            error = f"unreadable safetensors header: {exc}"
    if num_params is None:
        num_params = _estimate_params(text_cfg)
        estimated = num_params is not None
    archs = cfg.get("architectures") or []
    return ModelInfo(
        name=name,
        path=str(path),
        architecture=archs[0] if archs else cfg.get("model_type"),
        num_params=num_params,
        params_estimated=estimated,
        dtype=cfg.get("torch_dtype") or cfg.get("dtype") or text_cfg.get("torch_dtype"),
        max_context=text_cfg.get("max_position_embeddings"),
        size_bytes=_dir_size(path),
        num_attention_heads=text_cfg.get("num_attention_heads"),
        num_key_value_heads=text_cfg.get("num_key_value_heads") or text_cfg.get("num_attention_heads"),
        has_weights=bool(shards) or any(path.glob("*.bin")),
        error=error,
    )


def list_models(models_dir: str | None) -> list[ModelInfo]:
    """Every directory with a config.json under models_dir (two levels deep), sorted by name."""
    if not models_dir:
        return []
    root = Path(models_dir)
    if not root.is_dir():
        return []
    found: list[ModelInfo] = []

    def walk(d: Path, depth: int) -> None:
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if (child / "config.json").is_file():
                found.append(inspect_model(child, str(child.relative_to(root))))
            elif depth < MAX_SCAN_DEPTH:
                walk(child, depth + 1)

    walk(root, 1)
    return found
