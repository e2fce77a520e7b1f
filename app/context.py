"""AppContext: everything the routes share, hung on `app.state.ctx` (no module-level state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from app.gate import RequestGate
from app.metrics import Metrics
from app.supervisor import Supervisor
from engine.args import ServerArgs


@dataclass
class AppContext:
    supervisor: Supervisor
    metrics: Metrics
    gate: RequestGate
    chat_template: str | None = None
    # Client-visible rid → the engine rids it expanded into (lists, n > 1), for /abort_request.
    rid_groups: dict[str, set[str]] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def args(self) -> ServerArgs:
        return self.supervisor.args

    @property
    def model_name(self) -> str:
        return self.supervisor.model_name

    def accepts_model(self, model: str | None) -> bool:
        """OpenAI requests must name the served model (its path, with or without a trailing slash, is an alias)."""
        if model is None:
            return True
        args = self.args
        return model in (args.resolved_served_model_name, args.model_path, args.model_path.rstrip("/")) or (
            model.rstrip("/") == args.model_path.rstrip("/"))

    def context_length(self) -> int:
        """The running engine's context length (0 while unknown)."""
        info = getattr(self.supervisor.client, "model_info", None) or {}
        return int(info.get("max_context_length") or self.args.context_length or 0)
