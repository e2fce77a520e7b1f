"""What a user does against a running container, for tests/image/acceptance.sh (host side, real clients).

  client.py URL first STATE    wait for the first answer (prints its epoch time), static API key works,
                               anonymous is refused, console login + password change, issue an API key
  client.py URL inflight KEY MARKER   one long streamed generation; touches MARKER once tokens flow,
                               prints its finish reason and token count (the container is stopped
                               while it runs: a draining server finishes it)
  client.py URL after STATE    after a restart on the same volume: the issued key and new password work
STATE is a JSON file: the static key and admin password in, the issued key and new password added.
"""

from __future__ import annotations

import json
import sys
import time

import httpx
from openai import APIConnectionError, APIStatusError, AuthenticationError, OpenAI

PROMPT = [{"role": "user", "content": "Tell me about lists"}]
INFLIGHT_TOKENS = 900


def check(cond: bool, what: str) -> None:
    if not cond:
        sys.exit(f"FAIL: {what}")


def chat(url: str, key: str, max_tokens: int = 8, **extra):
    client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    return client.chat.completions.create(model=model, messages=PROMPT, max_tokens=max_tokens, temperature=0,
                                          **extra)


def wait_first_answer(url: str, key: str, timeout: float = 300) -> float:
    """Until the engine serves (refused connections: the server starts; 503: the engine loads); returns
    the wall-clock time of the first answer."""
    t0 = time.monotonic()
    while True:
        try:
            r = chat(url, key)
            check(bool(r.choices[0].message.content) and r.usage.completion_tokens > 0, "empty completion")
            return time.time()
        except (APIStatusError, APIConnectionError, httpx.HTTPError) as exc:
            if isinstance(exc, APIStatusError) and exc.status_code != 503:
                raise
            check(time.monotonic() - t0 < timeout, f"no answer within {timeout}s: {exc}")
            time.sleep(0.5)


def login(http: httpx.Client, password: str) -> dict:
    r = http.post("/admin/api/login", json={"username": "admin", "password": password})
    check(r.status_code == 200, f"console login: {r.status_code} {r.text}")
    return r.json()


def first(url: str, state: dict) -> None:
    answered_at = wait_first_answer(url, state["static_key"])
    try:
        chat(url, "sk-wrong")
        check(False, "a wrong key was accepted")
    except AuthenticationError:
        pass
    with httpx.Client(base_url=url, timeout=60) as http:
        check(http.get("/admin/login").status_code == 200, "console login page")
        session = login(http, state["admin_password"])
        check(session["must_change_password"] is True, "first login must ask for a new password")
        new_password = state["admin_password"] + "-changed"
        headers = {"X-CSRF-Token": session["csrf_token"]}
        r = http.post("/admin/api/password", headers=headers,
                      json={"old_password": state["admin_password"], "new_password": new_password})
        check(r.status_code == 200, f"password change: {r.status_code} {r.text}")
        r = http.post("/admin/api/keys", headers=headers, json={"name": "image-test"})
        check(r.status_code == 201, f"issue key: {r.status_code} {r.text}")
        state.update(issued_key=r.json()["key"], admin_password=new_password)
    check(bool(chat(url, state["issued_key"]).choices[0].message.content), "issued key")
    print(f"{answered_at:.3f}")


def inflight(url: str, key: str, marker: str) -> None:
    """Streams one long generation; touches `marker` once tokens flow (the cue to stop the container)."""
    client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    # 900 tokens (the demo model holds 1024): several seconds of decoding, so the stop that the first token
    # cues lands while it runs (100 tokens could finish before `podman stop` reached the server: no drain).
    stream = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=INFLIGHT_TOKENS, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    finish, tokens = None, None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            open(marker, "a").close()
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    print(finish, tokens)


def after(url: str, state: dict) -> None:
    wait_first_answer(url, state["issued_key"])
    with httpx.Client(base_url=url, timeout=60) as http:
        check(login(http, state["admin_password"])["must_change_password"] is False, "password kept")
    print("ok")


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    if mode == "inflight":
        inflight(url, sys.argv[3], sys.argv[4])
        return
    path = sys.argv[3]
    with open(path) as f:
        state = json.load(f)
    first(url, state) if mode == "first" else after(url, state)
    with open(path, "w") as f:
        json.dump(state, f)


if __name__ == "__main__":
    main()
