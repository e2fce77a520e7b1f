"""Role markers of the served chat template, for frontends that build prompts turn by turn.

SGLang's frontend (and `lang`) writes `system/user/assistant` turns as `prefix + content + suffix`.
SGLang guesses those markers from the model path; Tessera derives them from the template it really
applies (`--chat-template` or the tokenizer's), by rendering conversations with sentinel contents and
diffing them, and publishes them in `/get_model_info` as `chat_template_roles`.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_SYS, _USER, _ASSIST, _USER2 = "TesseraSys7q", "TesseraUser7q", "TesseraAssist7q", "TesseraUserTwo7q"


def _split(text: str, start: int, sentinel: str) -> tuple[str, str]:
    """(text between `start` and the sentinel, text after the sentinel)."""
    at = text.index(sentinel, start)
    return text[start:at], text[at + len(sentinel):]


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    try:
        return bos is not None and list(tokenizer("a")["input_ids"])[:1] == [bos]
    except Exception:
        return False


def compute_role_markers(tokenizer: Any, override: str | None) -> dict[str, Any] | None:
    """{"system": [prefix, suffix] | None, "user": [...], "assistant": [...], "default_system_prompt",
    "generation_prompt"}; None when there is no template or it cannot be rendered this way."""
    template = override or getattr(tokenizer, "chat_template", None)
    if tokenizer is None or not template:
        return None

    def render(messages: list[dict[str, str]], gen: bool = False) -> str:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=gen)

    sys_m, user_m = {"role": "system", "content": _SYS}, {"role": "user", "content": _USER}
    assist_m, user2_m = {"role": "assistant", "content": _ASSIST}, {"role": "user", "content": _USER2}
    try:
        try:
            t1 = render([sys_m])
            system: list[str] | None = list(_split(t1, 0, _SYS))
            base = [sys_m]
        except Exception:  # templates that refuse a system turn (Gemma, Mistral)
            t1, system, base = "", None, []
        t2 = render([*base, user_m])
        t3 = render([*base, user_m, assist_m])
        t4 = render([*base, user_m, assist_m, user2_m])
        # Turns after the first are diffs, so whatever the template writes only once (BOS, a date line)
        # stays with the first turn.
        assistant = list(_split(t3, len(t2), _ASSIST)) if t3.startswith(t2) else None
        user = list(_split(t4, len(t3), _USER2)) if t4.startswith(t3) else list(_split(t2, len(t1), _USER))
        generation_prompt = render([*base, user_m], gen=True)[len(t2):]
        alone = render([user_m])
    except Exception as exc:
        logger.warning("chat template role markers unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return None
    bos = getattr(tokenizer, "bos_token", None)
    strip_bos = bool(bos) and _adds_bos(tokenizer)

    def lead(text: str) -> str:
        # The server's tokenizer adds BOS to every text prompt already.
        return text[len(bos):] if strip_bos and text.startswith(bos) else text

    if system is not None:
        system[0] = lead(system[0])
    default_system = None
    head = lead(alone[:alone.index(_USER)])
    if system is not None and user is not None and head != user[0] and head.startswith(system[0]):
        # A template that writes a system turn when none is given (Qwen2.5): report its text.
        inner = head[len(system[0]):]
        if system[1] and system[1] in inner:
            default_system = inner[:inner.index(system[1])]
    return {"system": system, "user": user, "assistant": assistant, "default_system_prompt": default_system,
            "generation_prompt": generation_prompt}
