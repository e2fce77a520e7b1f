"""The native `/generate` body (SGLang's GenerateReqInput, the parts Tessera implements).

SGLang's clients and `sglang-router` send the whole schema on every call; keys for features we do not
have (images, LoRA, hidden states, ...) are accepted while "off" and named in a 400 otherwise
(app.sglang_compat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from app.errors import bad_request
from app.sglang_compat import NATIVE_IGNORED, NATIVE_OFF_ONLY, strip_sglang_keys


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | list[str] | None = None
    input_ids: list[StrictInt] | list[list[StrictInt]] | None = None
    sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None
    rid: str | list[str] | None = None
    return_logprob: bool | list[bool] = False
    logprob_start_len: int | list[int] = -1
    top_logprobs_num: int | list[int] = Field(default=0)
    return_text_in_logprobs: bool = False
    stream: bool = False
    # SGLang's documents also put `regex` at the top level: an alias of sampling_params.regex.
    regex: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _strip_off_keys(cls, data: Any) -> Any:
        data = strip_sglang_keys(data, NATIVE_IGNORED, NATIVE_OFF_ONLY)
        # SGLang's defaults for the logprob switches are null ("not set"): ours then apply.
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


@dataclass
class NativeItem:
    """One prompt of a (possibly batched) /generate call, before `n` expansion."""

    text: str | None
    input_ids: list[int] | None
    sampling: dict[str, Any]
    rid: str | None
    return_logprob: bool
    logprob_start_len: int
    top_logprobs_num: int


def _pick(value: Any, i: int, count: int, name: str) -> Any:
    if isinstance(value, list):
        if len(value) != count:
            raise bad_request(f"'{name}' has {len(value)} entries but there are {count} prompts", name)
        return value[i]
    return value


def _with_regex(sampling: dict[str, Any], regex: str | None) -> dict[str, Any]:
    if regex is None:
        return sampling
    if sampling.get("regex") not in (None, "", regex):
        raise bad_request("'regex' is given both at the top level and in sampling_params with different "
                          "values", "regex")
    return {**sampling, "regex": regex}


def split_items(req: GenerateRequest) -> tuple[list[NativeItem], bool]:
    """Returns the prompts and whether the call was batched (a list in gives a list out)."""
    if (req.text is None) == (req.input_ids is None):
        raise bad_request("Give exactly one of 'text' and 'input_ids'.", "text")
    if req.text is not None:
        batched = isinstance(req.text, list)
        texts: list[str | None] = list(req.text) if batched else [req.text]  # type: ignore[arg-type]
        ids: list[list[int] | None] = [None] * len(texts)
    else:
        raw = req.input_ids or []
        batched = bool(raw) and isinstance(raw[0], list)
        ids = [list(x) for x in raw] if batched else [list(raw)]  # type: ignore[arg-type]
        texts = [None] * len(ids)
    count = len(texts)
    if count == 0:
        raise bad_request("The batch is empty.", "text" if req.text is not None else "input_ids")
    if not batched:
        for name in ("sampling_params", "rid", "return_logprob", "logprob_start_len", "top_logprobs_num"):
            if isinstance(getattr(req, name), list) and name != "sampling_params":
                raise bad_request(f"'{name}' is a list but the prompt is not", name)
        if isinstance(req.sampling_params, list):
            if len(req.sampling_params) != 1:
                raise bad_request("'sampling_params' is a list but the prompt is not", "sampling_params")
    items = []
    for i in range(count):
        sampling = _pick(req.sampling_params, i, count, "sampling_params") if batched else (
            req.sampling_params[0] if isinstance(req.sampling_params, list) else req.sampling_params)
        rid = _pick(req.rid, i, count, "rid")
        if batched and isinstance(rid, str):
            rid = f"{rid}-{i}"
        items.append(NativeItem(
            text=texts[i], input_ids=ids[i], sampling=_with_regex(dict(sampling or {}), req.regex), rid=rid,
            return_logprob=bool(_pick(req.return_logprob, i, count, "return_logprob")),
            logprob_start_len=int(_pick(req.logprob_start_len, i, count, "logprob_start_len")),
            top_logprobs_num=int(_pick(req.top_logprobs_num, i, count, "top_logprobs_num")),
        ))
    return items, batched
