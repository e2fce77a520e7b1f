"""Role markers: how `system/user/assistant` turns are written into the prompt text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lang.errors import LangError


@dataclass
class ChatTemplate:
    """`role_prefix_and_suffix[role] = (prefix, suffix)`; a turn is `prefix + content + suffix`."""

    name: str
    role_prefix_and_suffix: dict[str, tuple[str, str]]
    default_system_prompt: str | None = None
    stop_str: list[str] = field(default_factory=list)

    def get_prefix_and_suffix(self, role: str, history: list[dict[str, Any]]) -> tuple[str, str]:
        if role not in self.role_prefix_and_suffix:
            raise LangError(f"the chat template {self.name!r} has no {role!r} role "
                            f"(it has: {', '.join(self.role_prefix_and_suffix) or 'none'})")
        return self.role_prefix_and_suffix[role]

    @classmethod
    def from_server(cls, roles: dict[str, Any], name: str) -> ChatTemplate:
        """From `/get_model_info`'s `chat_template_roles` (Tessera renders them from its template)."""
        markers = {r: (str(v[0]), str(v[1])) for r in ("system", "user", "assistant")
                   if isinstance(v := roles.get(r), (list, tuple)) and len(v) == 2}
        return cls(name, markers, roles.get("default_system_prompt") or None)


class MissingChatTemplate(ChatTemplate):
    """The server publishes no role markers: using a role says so instead of guessing."""

    def __init__(self, reason: str) -> None:
        super().__init__("missing", {})
        self.reason = reason

    def get_prefix_and_suffix(self, role: str, history: list[dict[str, Any]]) -> tuple[str, str]:
        raise LangError(f"cannot write a {role!r} turn: {self.reason}; pass chat_template=lang.ChatTemplate(...) "
                        "to the backend")


# The plain markers SGLang's frontend uses when it knows nothing about the model; the OpenAI backend
# shows them in text() (the server applies its own template to messages()).
PLAIN = ChatTemplate("default", {"system": ("SYSTEM:", "\n"), "user": ("USER:", "\n"),
                                 "assistant": ("ASSISTANT:", "\n")})
