"""Chat prompts: the tokenizer's own template, or a `--chat-template` file that overrides it."""

from __future__ import annotations

import json
import os
from typing import Any

from app.errors import bad_request


class ChatTemplateError(ValueError):
    """The `--chat-template` file cannot be used; one line for the operator."""


def load_chat_template(path: str | None) -> str | None:
    """Reads a Jinja template file (or a JSON file with a `chat_template` key, as HF ships them)."""
    if not path:
        return None
    if not os.path.isfile(path):
        raise ChatTemplateError(f"--chat-template {path!r} is not a file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            text = json.loads(text)["chat_template"]
        except (ValueError, KeyError, TypeError):
            raise ChatTemplateError(f"--chat-template {path!r} has no 'chat_template' string") from None
        if not isinstance(text, str):
            raise ChatTemplateError(f"--chat-template {path!r} has no 'chat_template' string")
    if not text.strip():
        raise ChatTemplateError(f"--chat-template {path!r} is empty")
    return text


# apply_chat_template's own arguments: a template variable may not override them.
_RESERVED = frozenset({"conversation", "chat_template", "tokenize", "add_generation_prompt",
                       "continue_final_message", "return_dict", "return_tensors", "tools", "documents"})


def render_chat_text(tokenizer: Any, override: str | None, messages: list[dict[str, Any]],
                     continue_final_message: bool = False, tools: list[dict[str, Any]] | None = None,
                     template_kwargs: dict[str, Any] | None = None) -> str:
    """Renders a conversation (tool definitions, tool calls and tool results included) to prompt text.

    `template_kwargs` are extra template variables (SGLang's `chat_template_kwargs`)."""
    clash = sorted(set(template_kwargs or {}) & _RESERVED)
    if clash:
        raise bad_request(f"chat_template_kwargs may not set {clash[0]!r}", "chat_template_kwargs")
    template = override or getattr(tokenizer, "chat_template", None)
    if not template:
        raise bad_request("This model has no chat template; start the server with --chat-template FILE "
                          "or use /v1/completions.", "messages")
    # Few templates know the newer 'developer' role; it means what 'system' means to them.
    msgs = [{**m, "role": "system" if m["role"] == "developer" else m["role"]} for m in messages]
    try:
        return tokenizer.apply_chat_template(
            msgs, chat_template=template, tokenize=False, tools=tools,
            add_generation_prompt=not continue_final_message, continue_final_message=continue_final_message,
            **(template_kwargs or {}))
    except Exception as exc:  # jinja's raise_exception ("roles must alternate ...") and template bugs
        raise bad_request(f"cannot apply the chat template: {exc}".splitlines()[0], "messages") from None


def tokenize_prompt(tokenizer: Any, text: str, max_tokens: int | None = None) -> list[int]:
    # The template already wrote BOS and friends where the model wants them.
    from app.request_limits import tokenize_bounded

    return tokenize_bounded(lambda t: list(tokenizer(t, add_special_tokens=False)["input_ids"]), text, max_tokens,
                            "messages")


def render_chat(tokenizer: Any, override: str | None, messages: list[dict[str, Any]],
                continue_final_message: bool = False, max_tokens: int | None = None,
                template_kwargs: dict[str, Any] | None = None,
                tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Renders and tokenizes a conversation. Blocking: call it through `asyncio.to_thread`."""
    return tokenize_prompt(tokenizer, render_chat_text(tokenizer, override, messages, continue_final_message,
                                                       tools, template_kwargs), max_tokens)
