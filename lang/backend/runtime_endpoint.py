"""RuntimeEndpoint: Tessera's (and SGLang's) native API — /generate, /get_model_info, /flush_cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lang.backend.base import BaseBackend
from lang.chat_template import ChatTemplate, MissingChatTemplate
from lang.choices import ChoicesDecision, ChoicesMethod
from lang.errors import LangError
from lang.ir import SamplingParams
from lang.transport import HttpClient

_SRT_KEYS = ("max_new_tokens", "min_new_tokens", "n", "stop", "stop_token_ids", "stop_regex", "temperature",
             "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "ignore_eos", "regex", "json_schema")
_TOP_KEYS = ("return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs")


def _normalized(entries: list[list[Any]]) -> float:
    # As SGLang's frontend: the mean over entries with a (non-zero, non-null) logprob.
    values = [e[0] for e in entries if e[0]]
    return sum(values) / len(values) if values else 0.0


class RuntimeEndpoint(BaseBackend):
    """`RuntimeEndpoint(url, api_key=None, chat_template=None)`; the role markers come from the
    server's `/get_model_info` (`chat_template_roles`) unless `chat_template` is given."""

    def __init__(self, base_url: str, api_key: str | None = None, verify: Any = None,
                 chat_template: ChatTemplate | None = None, chat_template_name: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.http = HttpClient(self.base_url, api_key)
        self.model_info: dict[str, Any] = self.http.get("/get_model_info")
        roles = self.model_info.get("chat_template_roles")
        if chat_template is not None:
            self.chat_template = chat_template
        elif isinstance(roles, dict):
            self.chat_template = ChatTemplate.from_server(roles, self.get_model_name())
        else:
            self.chat_template = MissingChatTemplate(
                f"the server at {self.base_url} publishes no role markers ('chat_template_roles' in /get_model_info)")

    # ---- info ---------------------------------------------------------------------------------
    def get_model_name(self) -> str:
        return str(self.model_info.get("model_path", ""))

    def get_server_info(self) -> dict[str, Any]:
        return self.http.get("/server_info")

    def flush_cache(self) -> Any:
        return self.http.post("/flush_cache", {})

    def cache_prefix(self, prefix: str) -> None:
        self.http.post("/generate", {"text": prefix, "sampling_params": {"max_new_tokens": 0}})

    def shutdown(self) -> None:
        self.http.close()

    # ---- generation ---------------------------------------------------------------------------
    def _payload(self, s: Any, params: SamplingParams) -> dict[str, Any]:
        sampling = {"skip_special_tokens": True, "spaces_between_special_tokens": True}
        for key in _SRT_KEYS:
            value = getattr(params, key)
            if value is not None:
                sampling[key] = list(value) if isinstance(value, tuple) else value
        data: dict[str, Any] = {"text": s.text_, "sampling_params": sampling}
        for key in _TOP_KEYS:
            value = getattr(params, key)
            if value is not None:
                data[key] = value
        return data

    def generate(self, s: Any, params: SamplingParams) -> tuple[Any, dict[str, Any]]:
        data = self._payload(s, params)
        obj = self.http.post("/generate", data)
        if isinstance(obj, list):  # n > 1: one result per sample
            s.note_prompt(data["text"], obj[0]["meta_info"].get("prompt_tokens"))
            return [o["text"] for o in obj], obj[0]["meta_info"]
        s.note_prompt(data["text"], obj["meta_info"].get("prompt_tokens"))
        return obj["text"], obj["meta_info"]

    def generate_stream(self, s: Any, params: SamplingParams) -> Iterator[tuple[str, dict[str, Any]]]:
        data = {**self._payload(s, params), "stream": True}
        pos = 0
        for event in self.http.stream_sse("/generate", data):
            text = event.get("text", "")
            meta = event.get("meta_info", {})
            piece, pos = text[pos:], len(text)  # chunks carry the cumulative text
            if meta.get("prompt_tokens") is not None:
                s.note_prompt(data["text"], meta["prompt_tokens"])
            yield piece, meta

    def select(self, s: Any, choices: list[str], temperature: float, method: ChoicesMethod) -> ChoicesDecision:
        """One /generate call scores every choice: the context alone (its token count) and context +
        choice for each, prefill only, logprobs from just before the choices."""
        text = s.text_
        start = s.token_lower_bound()
        items = ([text] if text else []) + [text + c for c in choices]
        data = {"text": items, "sampling_params": {"max_new_tokens": 0, "temperature": 0},
                "return_logprob": ([False] if text else []) + [True] * len(choices),
                "logprob_start_len": start, "return_text_in_logprobs": True}
        obj = self.http.post("/generate", data)
        if not isinstance(obj, list) or len(obj) != len(items):
            raise LangError(f"select(): the server answered {len(obj) if isinstance(obj, list) else 'one'} results "
                            f"for {len(items)} prompts")
        prompt_len = obj[0]["meta_info"]["prompt_tokens"] if text else 0
        if text:
            s.note_prompt(text, prompt_len)
        results = obj[1:] if text else obj
        # Score from one token before the context's last one: a boundary the choice may re-tokenize
        # ("token healing"); SGLang's frontend does the same, so both pick the same choice.
        skip = max(max(prompt_len - 2, 0) - start, 0)
        input_lps = [r["meta_info"]["input_token_logprobs"][skip:] for r in results]
        output_lps = [r["meta_info"].get("output_token_logprobs", []) for r in results]
        normalized = [_normalized(e) for e in input_lps]
        for i, entries in enumerate(input_lps):
            healed = entries[0][2] if entries and len(entries[0]) > 2 else None
            if healed is not None and len(entries) > 1 and text.endswith(healed):
                first = entries[0][0] or 0.0
                normalized[i] = (normalized[i] * len(entries) - first) / (len(entries) - 1)
                input_lps[i] = entries[1:]
        unconditional = None
        if method.requires_unconditional_logprobs:
            ids = [[e[1] for e in entries] for entries in input_lps]
            # Position 0 has no context at all: its logprob is null and counts as 0.
            res = self.http.post("/generate", {"input_ids": ids, "sampling_params": {"max_new_tokens": 0},
                                               "return_logprob": True, "logprob_start_len": 0})
            unconditional = [r["meta_info"]["input_token_logprobs"] for r in res]
        return method(choices=choices, normalized_prompt_logprobs=normalized, input_token_logprobs=input_lps,
                      output_token_logprobs=output_lps, unconditional_token_logprobs=unconditional)
