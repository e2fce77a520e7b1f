"""Tessera's inference engine. Public API: `Engine` (offline), `ServerArgs`, `EngineClient` (async,
used by the API server), the message types in `engine.messages`, and `SamplingParams`."""

from __future__ import annotations

from engine.args import ArgsError, ServerArgs

__all__ = ["ArgsError", "Engine", "EngineClient", "SamplingParams", "ServerArgs"]


def __getattr__(name: str):
    # Heavy imports (torch, zmq) only when asked for, so `tessera --help` stays fast.
    if name == "Engine":
        from engine.engine import Engine

        return Engine
    if name == "EngineClient":
        from engine.client import EngineClient

        return EngineClient
    if name == "SamplingParams":
        from engine.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(name)
