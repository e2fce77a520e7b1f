"""What the executor needs from a backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from lang.chat_template import ChatTemplate
from lang.choices import ChoicesDecision, ChoicesMethod
from lang.ir import SamplingParams


class BaseBackend(ABC):
    chat_template: ChatTemplate

    def get_chat_template(self) -> ChatTemplate:
        return self.chat_template

    @abstractmethod
    def get_model_name(self) -> str:
        """Implemented by every backend."""

    def cache_prefix(self, prefix: str) -> None:
        """Prefill `prefix` so later requests find it in the prefix cache (no-op where unsupported)."""

    @abstractmethod
    def generate(self, s: Any, params: SamplingParams) -> tuple[Any, dict[str, Any]]:
        """Implemented by every backend."""

    @abstractmethod
    def generate_stream(self, s: Any, params: SamplingParams) -> Iterator[tuple[str, dict[str, Any]]]:
        """Implemented by every backend."""

    @abstractmethod
    def select(self, s: Any, choices: list[str], temperature: float, method: ChoicesMethod) -> ChoicesDecision:
        """Implemented by every backend."""

    def flush_cache(self) -> Any:
        return None

    def get_server_info(self) -> Any:
        return None

    def shutdown(self) -> None:
        """Closes the connection pool."""
