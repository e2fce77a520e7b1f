"""One pooled HTTP client per backend: every program, fork and run_batch worker shares its connections."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from lang.errors import ServerError, ServerUnreachable

# Generation can take minutes; only connecting is expected to be quick. Waiting for a free pooled
# connection never times out: run_batch bounds its own concurrency.
_TIMEOUT = httpx.Timeout(connect=10.0, read=900.0, write=60.0, pool=None)
MAX_CONNECTIONS = 512


def error_message(response: httpx.Response) -> str:
    """The server's own error text (OpenAI shape, SGLang shape, or plain text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
    return json.dumps(body)[:500]


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


class HttpClient:
    """A thread-safe pooled client bound to a base URL and an optional bearer key."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=64)
        self._client = httpx.Client(headers=headers, timeout=_TIMEOUT, limits=limits)

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        url = self.url(path)
        try:
            response = self._client.request(method, url, json=payload)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(url, _reason(exc)) from None
        if response.status_code != 200:
            raise ServerError(response.status_code, error_message(response), url)
        try:
            return response.json()
        except ValueError:
            raise ServerError(response.status_code, f"not JSON: {response.text[:200]!r}", url) from None

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        return self.request("POST", path, payload)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def stream_sse(self, path: str, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Yields the JSON objects of an SSE stream until `data: [DONE]`; an error event raises."""
        url = self.url(path)
        try:
            with self._client.stream("POST", url, json=payload) as response:
                if response.status_code != 200:
                    response.read()
                    raise ServerError(response.status_code, error_message(response), url)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if isinstance(event, dict) and "error" in event and "text" not in event and "choices" not in event:
                        err = event["error"]
                        raise ServerError(200, err.get("message", str(err)) if isinstance(err, dict) else str(err), url)
                    yield event
        except httpx.HTTPError as exc:
            raise ServerUnreachable(url, _reason(exc)) from None

    def close(self) -> None:
        self._client.close()
