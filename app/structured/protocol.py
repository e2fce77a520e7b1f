"""Pydantic models of the OpenAI tool-calling pieces of a chat request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionDef(_Strict):
    # OpenAI's own limit; it also keeps names safe to splice into grammar literals.
    name: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class _FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: _FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class _Echo(BaseModel):
    """Pieces of our own responses a client sends back: the SDK adds its parse results
    (`parsed_arguments`), which mean nothing here."""

    model_config = ConfigDict(extra="ignore")


class ToolCallFunction(_Echo):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Echo):
    """A call in an assistant message a client sends back (the history of a tool-using chat)."""

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction
