"""A local OpenAI-compatible server for tests: records each request and answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

API_KEY = "sk-test-0123456789abcdef"


@dataclass
class FakeOpenAI:
    """What the server got, and what it answers next."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: str | None = None  # None: "AI: <last user message>"
    status: int = 200
    delay: float = 0.0

    @property
    def base_url(self) -> str:
        """Return the base_url to give the openai SDK."""
        return self.url + "/v1"


def _app(state: FakeOpenAI) -> Flask:
    app = Flask("fake_openai")

    @app.post("/v1/chat/completions")
    def completions() -> Any:
        body = request.get_json()
        state.requests.append(
            {"body": body, "authorization": request.headers.get("Authorization", "")}
        )
        if state.delay:
            time.sleep(state.delay)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return jsonify({"error": {**error, "code": "invalid_api_key"}}), 401
        if state.status != 200:
            return jsonify({"error": {"message": "boom", "type": "server_error"}}), state.status
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        text = state.answer if state.answer is not None else f"AI: {users[-1] if users else ''}"
        return jsonify(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    return app


@contextmanager
def running() -> Iterator[FakeOpenAI]:
    """Run the fake server on a free 127.0.0.1 port."""
    state = FakeOpenAI()
    server = make_server("127.0.0.1", 0, _app(state), threaded=True)
    state.url = f"http://127.0.0.1:{server.port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
