"""Role markers derived from chat templates (published in /get_model_info for `lang`)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from app.role_markers import compute_role_markers
from tests.app.server_proc import REPO

QWEN25 = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
NO_SYSTEM = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(REPO / "models" / "demo"))


def test_demo_template_without_bos(tok) -> None:
    # The template writes BOS, the tokenizer adds it to every text prompt: the markers leave it out.
    roles = compute_role_markers(tok, None)
    assert roles["system"] == ["<|system|>\n", "<|end|>\n"]
    assert roles["user"] == ["<|user|>\n", "<|end|>\n"]
    assert roles["assistant"] == ["<|assistant|>\n", "<|end|>\n"]
    assert roles["generation_prompt"] == "<|assistant|>\n" and roles["default_system_prompt"] is None


def test_default_system_prompt(tok) -> None:
    roles = compute_role_markers(tok, QWEN25)
    assert roles["user"] == ["<|im_start|>user\n", "<|im_end|>\n"]
    assert roles["default_system_prompt"] == "You are Qwen, a helpful assistant."


def test_template_without_system_role(tok) -> None:
    roles = compute_role_markers(tok, NO_SYSTEM)
    assert roles["system"] is None
    assert roles["user"] == ["[INST] ", " [/INST]"]
    assert roles["assistant"] == ["", "<|end|>"]


def test_no_template() -> None:
    assert compute_role_markers(None, None) is None
