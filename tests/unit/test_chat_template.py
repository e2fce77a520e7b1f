"""The rendered chat prompt equals HF `apply_chat_template` for every bundled and tiny tokenizer's template."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from app.chat_template import render_chat

REPO = Path(__file__).resolve().parents[2]
CONVERSATIONS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a list?"},
     {"role": "assistant", "content": "A sequence."}, {"role": "user", "content": "And a tuple? ünïcødé"}],
]


@pytest.fixture(scope="module", params=["demo", "tiny-llama", "tiny-qwen3"])
def tokenizer(request, tiny_model_factory):
    path = {"demo": str(REPO / "models" / "demo"), "tiny-llama": tiny_model_factory("llama"),
            "tiny-qwen3": tiny_model_factory("qwen3")}[request.param]
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert tok.chat_template, f"{request.param} ships no chat template"
    return tok


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_render_equals_apply_chat_template(tokenizer, messages) -> None:
    want = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert render_chat(tokenizer, None, messages) == list(want)
    # Continuing the assistant's last message: no new generation prompt, the message left open.
    partial = [*messages, {"role": "assistant", "content": "Well,"}]
    want = tokenizer.apply_chat_template(partial, tokenize=True, continue_final_message=True)
    want = want["input_ids"] if hasattr(want, "keys") else want
    assert render_chat(tokenizer, None, partial, continue_final_message=True) == list(want)


def test_override_template_and_template_kwargs(tokenizer) -> None:
    template = "{% for m in messages %}[{{ m['role'] }}|{{ greeting }}]{{ m['content'] }}{% endfor %}"
    messages = CONVERSATIONS[1]
    want = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True,
                                         add_generation_prompt=True, greeting="hi")
    want = want["input_ids"] if hasattr(want, "keys") else want
    assert render_chat(tokenizer, template, messages, template_kwargs={"greeting": "hi"}) == list(want)
