"""OpenAI-shaped errors for every failure the API process can answer with.

Every non-2xx body is `{"error": {"message", "type", "param", "code"}}`, including FastAPI's own
validation errors, unknown routes and unexpected exceptions (which never leak a traceback).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error answered to the client as an OpenAI error object with `status`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 error_type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or _TYPE_BY_STATUS.get(status, "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, error_type: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unavailable(message: str) -> APIError:
    return APIError(503, message, code="service_unavailable", headers={"Retry-After": "1"})


def as_api_error(exc: BaseException) -> APIError | None:
    """Turns errors raised by pluggable parts (the admin KeyGate's GateError) into APIError.

    Duck-typed on purpose: the gate lives in another package and must not be imported here.
    """
    if isinstance(exc, APIError):
        return exc
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None)
    if isinstance(status, int) and isinstance(message, str):
        return APIError(status, message, code=getattr(exc, "code", None),
                        error_type=getattr(exc, "error_type", None), headers=getattr(exc, "headers", None))
    return None


def _loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic appends the union member's type name ("str", "list[int]", or a model class such as
    # "NamedToolChoice") to the path; drop it.
    parts = [p for p in parts if not any(ch in p for ch in "[]()") and p not in {"str", "int", "float", "bool",
                                                                                "list", "dict", "function-after"}
             and p not in _model_class_names()]
    return ".".join(parts) or None


@functools.cache
def _model_class_names() -> frozenset[str]:
    """Names of the request models a union member's tag can be (the app's pydantic models, loaded by now)."""
    from pydantic import BaseModel

    names, todo = set(), list(BaseModel.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("app."):
            names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable line (plus the first offending parameter) from pydantic's error list."""
    if not errors:
        return "invalid request", None
    # An unsupported parameter is the most useful thing to name, whatever else is wrong.
    errors = sorted(errors, key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0]
    param = _loc_to_param(first.get("loc", ()))
    if first.get("type") == "extra_forbidden":
        extras = sorted({_loc_to_param(e.get("loc", ())) or "?" for e in errors if e.get("type") == "extra_forbidden"})
        return f"unsupported parameter(s): {', '.join(extras)}", extras[0]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") in ("model_attributes_type", "dict_type"):
        return "the request body must be a JSON object (send it with Content-Type: application/json)", None
    if first.get("type") == "missing" and param is None:
        return "request body is required", None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"{param}: {msg}" if param else msg), param


_CODE_BY_STATUS = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}

_REASON_BY_STATUS = {400: "invalid_request", 401: "unauthorized", 403: "unauthorized", 404: "not_found",
                     405: "invalid_request", 413: "too_large", 422: "invalid_request", 429: "rate_limited",
                     503: "unavailable"}


def rejection_reason(status: int, code: Any = None) -> str | None:
    """The `reason` label of tessera_rejected_requests_total for an error answer (None: not a rejection)."""
    if code == "context_length_exceeded":
        return "context_length"
    return _REASON_BY_STATUS.get(status)


def _count_rejected(request: Request, status: int, code: Any = None) -> None:
    metrics = getattr(getattr(request.app.state, "ctx", None), "metrics", None)
    reason = rejection_reason(status, code)
    if metrics is not None and reason is not None and hasattr(metrics, "record_rejected"):
        metrics.record_rejected(reason)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        _count_rejected(request, exc.status, exc.code)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        _count_rejected(request, 400)
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        _count_rejected(request, status)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if status == 404:
            message = "Not found: no such route."
        elif status == 400 and message == "There was an error parsing the body":
            # Starlette's own parse failure (e.g. JSON nested past the parser's recursion limit)
            message = "request body is not valid JSON (or nests too deeply to parse)"
        # OpenAI's `code` is a string or null, never the HTTP status
        return JSONResponse(error_body(message, _TYPE_BY_STATUS.get(status, "invalid_request_error"), None,
                                       _CODE_BY_STATUS.get(status)),
                            status_code=status, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        mapped = as_api_error(exc)
        if mapped is not None:
            _count_rejected(request, mapped.status, mapped.code)
            return mapped.response()
        # Logged with its traceback for the operator; the client only learns that it failed.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal server error", "internal_error", None, "internal_error"),
                            status_code=500)
