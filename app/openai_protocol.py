"""Pydantic models of the OpenAI request bodies Tessera accepts.

Every model forbids extra keys, so an unknown parameter is a 400 that names it instead of being
silently ignored. OpenAI parameters we do not implement are accepted only as `null` (some clients
send every key); SGLang's extra keys (`sglang-router` forwards its whole schema) follow
app.sglang_compat: accepted at their off value, a 400 naming them otherwise.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator, model_validator

from app.sglang_compat import OPENAI_IGNORED, OPENAI_OFF_ONLY, strip_sglang_keys
from app.structured.protocol import Tool, ToolCall, ToolChoice

# OpenAI parameters not implemented: fine when null, a 400 naming them otherwise.
_NULL_OK = frozenset({
    "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "audio", "modalities",
    "prediction", "service_tier", "store", "metadata", "web_search_options", "suffix",
    "best_of", "logit_bias", "user", "stream_options", "response_format", "seed", "stop",
})
# Message keys of SGLang's message models (tool calls, reasoning), fine when null.
_MESSAGE_NULL_OK = frozenset({"tool_call_id", "phase", "reasoning_content", "tool_calls", "tools", "prefix"})

TokenId = Annotated[StrictInt, Field(ge=0)]


def _drop_nulls(data: Any, fields: dict[str, Any]) -> Any:
    """Nulls that ask for nothing: unimplemented OpenAI parameters (`_NULL_OK`) and OpenAI's nullable parameters
    with a non-null default (`n`, `stream`, `logprobs`, `echo`, ...: null is the default)."""
    if not isinstance(data, dict):
        return data
    data = strip_sglang_keys(data, OPENAI_IGNORED, OPENAI_OFF_ONLY)
    if not data.get("tools"):
        # Without tools, "auto" / "none" and the parallel-calls switch ask for nothing (SGLang's defaults).
        if data.get("tool_choice") in ("auto", "none"):
            data.pop("tool_choice")
        if isinstance(data.get("parallel_tool_calls"), bool):
            data.pop("parallel_tool_calls")
    return {k: v for k, v in data.items() if not (v is None and (k in _NULL_OK or (
        k in fields and not fields[k].is_required() and fields[k].default is not None)))}


class _Strict(BaseModel):
    # strict: a JSON value of the wrong type is a 400 naming the field, as OpenAI answers it (`"max_tokens": true`,
    # `"stream": "yes"`, `"temperature": "0.5"`), not coerced; an integer still counts as a number.
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool | None = False
    # SGLang's: usage on every chunk. Accepted when off.
    continuous_usage_stats: Literal[False] | None = False


class JsonSchemaSpec(_Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None
    # SGLang's documents send `{"type": "json_object", "schema": {...}}`: honoured, not ignored.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _check(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object ({name, schema, strict})")
        return self


class ChatMessage(_Strict):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns of a tool-using chat
    tool_call_id: str | None = None  # role "tool": which call this result answers
    reasoning_content: str | None = None  # echoed back by some clients; not rendered

    @model_validator(mode="before")
    @classmethod
    def _echoed(cls, data: Any) -> Any:
        # `messages.append(response.choices[0].message)` sends back the SDK's view of our answer.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("refusal", "annotations", "parsed")
                    and not (k in ("audio", "function_call") and v is None)}
        return data

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in _MESSAGE_NULL_OK)}
        return data

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role == "function":
            raise ValueError("role 'function' (the deprecated functions API) is not supported; use 'tool'")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ValueError(f"unknown role '{role}'; use system, developer, user, assistant or tool")
        return role

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        # OpenAI's rule: only an assistant turn may leave out its content (one that carries tool_calls, or a
        # prefix to continue); every other role says something.
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs its content")
        return self

    @field_validator("content")
    @classmethod
    def _content(cls, content: Any) -> Any:
        if isinstance(content, list):
            for part in content:
                kind = part.get("type")
                if kind != "text":
                    raise ValueError(f"content part type {kind!r} is not supported; only 'text' parts are")
                if not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
                    raise ValueError("a text content part is {'type': 'text', 'text': <string>}")
        return content

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part["text"] for part in self.content)


class _SamplingFields(_Strict):
    """Fields shared by chat and completions, including SGLang's extra sampling fields."""

    model: str
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # SGLang / vLLM extras.
    top_k: StrictInt | None = None
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    ignore_eos: bool = False
    stop_token_ids: list[TokenId] | None = None
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    min_tokens: int = Field(default=0, ge=0)
    regex: str | None = None
    ebnf: str | None = None
    json_schema: str | dict[str, Any] | None = None
    skip_special_tokens: bool = True
    no_stop_trim: bool = False
    rid: str | None = None
    # Extra field: --schedule-policy priority admits higher values first.
    priority: StrictInt | None = None
    # SGLang: false leaves the reasoning inside `content` (chat with --reasoning-parser; no effect elsewhere).
    separate_reasoning: bool = True
    # SGLang: add `sglext.cached_tokens_details` to the response (bench_serving's --cache-report sends it).
    return_cached_tokens_details: bool = False

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _drop_nulls(data, cls.model_fields)

    @field_validator("stop")
    @classmethod
    def _stop(cls, stop: Any) -> Any:
        if isinstance(stop, list) and len(stop) > 16:
            raise ValueError("at most 16 stop sequences are allowed")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
            if not -100.0 <= value <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {value}")
        return bias

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    continue_final_message: bool = False
    # Extra variables for the chat template (SGLang's; e.g. `enable_thinking` for Qwen3's template).
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True

    # field validators, not the model's, so the error's `param` names the field (logprobs / messages come first)
    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v and not info.data.get("logprobs"):
            raise ValueError("requires logprobs: true")
        return v

    @field_validator("continue_final_message")
    @classmethod
    def _continue_needs_assistant(cls, v: bool, info: ValidationInfo) -> bool:
        messages = info.data.get("messages")
        if v and messages and messages[-1].role != "assistant":
            raise ValueError("needs a final assistant message")
        return v

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


PromptType = str | list[str] | list[TokenId] | list[list[TokenId]]


class CompletionRequest(_SamplingFields):
    prompt: PromptType
    max_tokens: int | None = Field(default=16, ge=0)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    response_format: ResponseFormat | None = None  # as SGLang's and vLLM's completions accept it
    best_of: int | None = None
    suffix: str | None = None

    # field validators, not the model's, so the error's `param` names the field
    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v != info.data.get("n"):
            raise ValueError("not supported (it may only equal n)")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("not supported")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: PromptType) -> PromptType:
        if isinstance(v, list) and not v:
            raise ValueError("must not be empty")
        return v

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class TokenizeRequest(_Strict):
    model: str | None = None
    prompt: str | list[str]
    add_special_tokens: bool = True


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[TokenId] | list[list[TokenId]]
    skip_special_tokens: bool = False
