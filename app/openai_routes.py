"""OpenAI-compatible routes under /v1."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.context import AppContext
from app.errors import bad_request
from app.openai_chat import CHAT
from app.openai_completions import COMPLETION
from app.openai_protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from app.openai_request import serve
from app.request_scope import authorize, model_not_found

router = APIRouter(prefix="/v1")


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await serve(CHAT, body, request)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await serve(COMPLETION, body, request)


def _model_card(ctx: AppContext) -> dict[str, Any]:
    return {"id": ctx.model_name, "object": "model", "created": int(ctx.started_at), "owned_by": "tessera",
            "root": ctx.args.model_path, "max_model_len": ctx.context_length() or None}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    ctx: AppContext = request.app.state.ctx
    await authorize(ctx, request)
    return {"object": "list", "data": [_model_card(ctx)]}


@router.get("/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    ctx: AppContext = request.app.state.ctx
    await authorize(ctx, request)
    if not ctx.accepts_model(model):
        raise model_not_found(model, ctx.model_name)
    return _model_card(ctx)


def _tokenizer(client: Any) -> Any:
    tokenizer = client.tokenizer
    if tokenizer is None:
        raise bad_request("This server runs with --skip-tokenizer-init and cannot tokenize.")
    return tokenizer


async def _authorized_for(request: Request, model: str | None) -> AppContext:
    """Checks the caller's key and, when the body names a model, that it is the one served."""
    ctx: AppContext = request.app.state.ctx
    await authorize(ctx, request)
    if model is not None and not ctx.accepts_model(model):
        raise model_not_found(model, ctx.model_name)
    return ctx


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    ctx = await _authorized_for(request, body.model)
    async with ctx.supervisor.lease() as client:
        tok = _tokenizer(client)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt

        def run() -> list[list[int]]:
            return [list(tok(p, add_special_tokens=body.add_special_tokens)["input_ids"]) for p in prompts]

        ids = await asyncio.to_thread(run)
    max_len = ctx.context_length() or None
    if isinstance(body.prompt, str):
        return {"tokens": ids[0], "count": len(ids[0]), "max_model_len": max_len}
    return {"tokens": ids, "count": [len(i) for i in ids], "max_model_len": max_len}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    ctx = await _authorized_for(request, body.model)
    async with ctx.supervisor.lease() as client:
        tok = _tokenizer(client)
        vocab = client.model_info.get("vocab_size") or len(tok)
        single = not body.tokens or isinstance(body.tokens[0], int)
        seqs: list[list[int]] = [body.tokens] if single else body.tokens  # type: ignore[list-item]
        if any(t >= vocab for s in seqs for t in s):
            raise bad_request(f"token ids must be below the vocabulary size {vocab}", "tokens")

        def run() -> list[str]:
            return [tok.decode(s, skip_special_tokens=body.skip_special_tokens) for s in seqs]

        texts = await asyncio.to_thread(run)
    return {"text": texts[0] if single else texts}
