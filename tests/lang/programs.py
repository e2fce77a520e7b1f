"""The same programs, written once against a frontend module (`sglang` or `lang`).

`build(sgl)` returns them decorated by that module's `@function`, so the parity test runs identical
source through both frontends.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

SYSTEM = "You answer questions about Python's standard library in one short sentence."
MODULES = [" os", " sys", " json", " os.path"]  # greedy_select's choices


def build(sgl: Any) -> SimpleNamespace:
    @sgl.function
    def qa(s, question):
        s += "Q: " + question + "\nA:"
        s += sgl.gen("answer", max_tokens=8, temperature=0, stop="\n")
        s += "\nIs that right? " + sgl.select("verdict", choices=["yes", "no", "maybe"])

    @sgl.function
    def greedy_select(s, topic):
        s += "The module for " + topic + " is"
        s += sgl.select("module", choices=MODULES,
                        choices_method=sgl.greedy_token_selection)

    @sgl.function
    def brainstorm(s, topic):
        s += "Ideas about " + topic + ":\n"
        forks = s.fork(3)
        for i, f in enumerate(forks):
            f += f"{i + 1}." + sgl.gen("idea", max_tokens=5, temperature=0, stop="\n")
        s["ideas"] = [f["idea"] for f in forks]
        s += "Best: " + sgl.gen("best", max_tokens=5, temperature=0)

    @sgl.function
    def chat(s, question):
        s += sgl.system(SYSTEM)
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=8, temperature=0))
        s += sgl.user_begin() + "And in one word?" + sgl.user_end()
        s += sgl.assistant_begin() + sgl.gen("word", max_tokens=3, temperature=0) + sgl.assistant_end()

    @sgl.function
    def stream_gen(s, prompt):
        s += prompt
        s += sgl.gen("out", max_tokens=10, temperature=0)

    @sgl.function
    def logprobs(s, prompt):
        s += prompt
        s += sgl.gen("out", max_tokens=4, temperature=0, return_logprob=True, top_logprobs_num=2)

    return SimpleNamespace(qa=qa, greedy_select=greedy_select, brainstorm=brainstorm, chat=chat,
                           stream_gen=stream_gen, logprobs=logprobs)
