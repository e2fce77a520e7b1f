"""Checks `tessera serve` runs before it writes anything (data dir, database) or starts the engine, so
an unusable setting is one line and exit code 2, not a half-started server.

Deliberately light: config.json is read as JSON (no torch / transformers import), and ports are
probed with a plain bind.
"""

from __future__ import annotations

import errno
import json
import os
import socket

from engine.args import ArgsError, ServerArgs


def check_model_layout(args: ServerArgs) -> None:
    """TP must divide the model's attention heads (the engine would refuse it only after start-up)."""
    path = os.path.join(args.model_path, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return  # a missing or unreadable config is reported by the engine's own preflight, with its reason
    cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}
    heads = cfg.get("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads") or heads
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads > 0:
        if heads % args.tp_size or kv_heads % args.tp_size:
            raise ArgsError(f"--tp-size {args.tp_size} must divide the model's attention heads "
                            f"({heads} q, {kv_heads} kv)")


def check_quantization(args: ServerArgs) -> None:
    """`--quantization` against the checkpoint's `quantization_config`, and the scheme's shape checks (AWQ
    groups per TP rank). Imports the quantization code (and torch) only when either is present."""
    try:
        with open(os.path.join(args.model_path, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return
    if not isinstance(cfg, dict) or (args.quantization is None and not cfg.get("quantization_config")):
        return
    from types import SimpleNamespace

    from engine.quant.config import resolve_quant_config

    text = cfg.get("text_config", cfg)
    hf_config = SimpleNamespace(**{**text, "quantization_config": cfg.get("quantization_config")})
    quant_config = resolve_quant_config(hf_config, args.quantization, is_dummy_load=args.load_format == "dummy")
    if quant_config is not None and all(hasattr(hf_config, a) for a in ("hidden_size", "intermediate_size",
                                                                         "num_attention_heads", "num_hidden_layers")):
        quant_config.check_model(hf_config, args.tp_size)


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # uvicorn sets SO_REUSEADDR too, so a port only in TIME_WAIT is not "busy".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise ArgsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return False


def check_ports_free(args: ServerArgs) -> None:
    for flag, port in (("--port", args.port), ("--admin-port", args.admin_port)):
        if port is not None and _port_in_use(args.host, port):
            raise ArgsError(f"{flag} {port}: {args.host}:{port} is already in use by another process")


def check_startup(args: ServerArgs) -> None:
    check_model_layout(args)
    check_quantization(args)
    check_ports_free(args)
