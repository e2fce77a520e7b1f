"""Typed messages between the client side (Engine / API process) and engine rank 0.

Every message is a dataclass; `encode`/`decode` turn them into msgpack bytes with a type tag, so
both ends agree on the schema by construction. Token ids only: text never crosses this boundary
except stop strings (checked on the engine side against the decoded tail).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

# ---- client -> engine ---------------------------------------------------------------------------


@dataclass
class GenerateReqMsg:
    rid: str
    input_ids: list[int]
    sampling: dict[str, Any]  # SamplingParams.to_dict()
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    stream: bool = False
    priority: int = 0  # --schedule-policy priority: higher is admitted first


@dataclass
class AbortReqMsg:
    rid: str


@dataclass
class FlushCacheReqMsg:
    pass


@dataclass
class GetInfoReqMsg:
    pass


@dataclass
class ShutdownReqMsg:
    pass


# ---- engine -> client ---------------------------------------------------------------------------


@dataclass
class ReqOutput:
    """New tokens of one request since its last output (a decode step may produce one per request)."""

    rid: str
    new_token_ids: list[int]
    finished: bool = False
    # {"type": "stop", "matched": int | str} | {"type": "length", "length": int} | {"type": "abort", "message": str}
    finish_reason: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # Speculative decoding totals so far (SGLang's meta_info names); 0 when the request never speculated.
    spec_verify_ct: int = 0
    spec_num_proposed_drafts: int = 0
    spec_num_correct_drafts: int = 0
    # [logprob, token_id] pairs for new_token_ids; top lists as [[logprob, token_id], ...] per token.
    output_logprobs: list[list[Any]] | None = None
    output_top_logprobs: list[list[list[Any]]] | None = None
    # Sent once, with the first output: prompt positions from logprob_start_len on.
    input_logprobs: list[list[Any]] | None = None
    input_top_logprobs: list[list[list[Any]] | None] | None = None


@dataclass
class BatchOutMsg:
    outputs: list[ReqOutput] = field(default_factory=list)


@dataclass
class ReadyMsg:
    """Rank 0 reports that all ranks loaded and the engine is serving."""

    info: dict[str, Any]


@dataclass
class FlushCacheOutMsg:
    success: bool
    message: str = ""


@dataclass
class InfoOutMsg:
    info: dict[str, Any]


@dataclass
class EngineErrorMsg:
    """A fatal start-up or runtime error, one line for the operator."""

    message: str


_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        GenerateReqMsg, AbortReqMsg, FlushCacheReqMsg, GetInfoReqMsg, ShutdownReqMsg,
        BatchOutMsg, ReadyMsg, FlushCacheOutMsg, InfoOutMsg, EngineErrorMsg,
    )
}


def encode(msg: Any) -> bytes:
    return msgpack.packb({"t": type(msg).__name__, "d": asdict(msg)}, use_bin_type=True)


def decode(data: bytes) -> Any:
    raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    cls = _TYPES[raw["t"]]
    body = raw["d"]
    if cls is BatchOutMsg:
        return BatchOutMsg(outputs=[ReqOutput(**o) for o in body["outputs"]])
    return cls(**body)
