"""A local OpenAI-compatible chat server for tests and benchmarks (127.0.0.1, a free port).

    with FakeOpenAI(latency=0.3) as server:
        server.script(Reply(status=429, headers={"retry-after-ms": "50"}), Reply(content=answer_json("anger")))
        ... OpenAIAgent(EndpointConfig(base_url=server.base_url, ...)) ...
        assert len(server.requests) == 2

POST /v1/chat/completions answers from the scripted queue (first in, first out), then
from `responder(request_body)` (default: a neutral JSON answer). A `Reply` can inject
latency, an HTTP error with headers (429 + retry-after, 500), a delay longer than the
client's timeout, malformed or truncated content (finish_reason "length"), a refusal,
an oversized answer or a raw non-JSON body. Every request body and its headers are
recorded in `requests`; usage numbers are set per reply (default: ~4 characters a token)
so tests can compute exact costs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


@dataclass
class Reply:
    content: str | None = None  # None: the responder's default answer
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float | None = None  # seconds before answering; None: the server's latency
    finish_reason: str = "stop"
    refusal: str | None = None
    prompt_tokens: int | None = None  # None: ~4 characters of the request a token
    completion_tokens: int | None = None  # None: ~4 characters of the content a token
    body: str | None = None  # sent verbatim instead of a chat completion


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    time: float

    def images(self) -> list[str]:
        """The image_url URLs of every message of the request."""
        return [part["image_url"]["url"] for m in self.body.get("messages", []) if isinstance(m.get("content"), list)
                for part in m["content"] if part.get("type") == "image_url"]

    def last_user_text(self) -> str:
        content = [m for m in self.body.get("messages", []) if m.get("role") == "user"][-1]["content"]
        if isinstance(content, list):
            return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        return content


def answer_json(label: str, probability: float = 0.9, labels: list[str] | None = None,
                steps: list[str] | None = None, evidence: list[dict] | None = None, **extra: Any) -> str:
    """A well-formed JSON answer, as a model following the prompt would give."""
    answer = {
        "label": label,
        "labels": labels or [label],
        "label_probabilities": {label: probability, "neutral" if label != "neutral" else "sadness": 1 - probability},
        "intensity": 0.7, "valence": -0.5, "arousal": 0.6,
        "steps": steps or ["The words carry the emotion.", f"The label is {label}."],
        "evidence": evidence if evidence is not None else [
            {"modality": "text", "start": 0.0, "end": 1.0, "claim": "a telling word", "feature": "word",
             "value": None}],
    }
    answer.update(extra)
    return json.dumps(answer)


Responder = Callable[[dict[str, Any]], Reply]


class FakeOpenAI:
    def __init__(self, responder: Responder | None = None, latency: float = 0.0):
        self.responder = responder or (lambda body: Reply(content=answer_json("neutral")))
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0  # most requests the server held at once

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget requests and scripted replies, after the requests still held (timeouts) end (<= 5 s)."""
        deadline = time.monotonic() + 5
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.max_in_flight = 0

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.responder(body)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid_request_error"}}, 400)
            with self._lock:
                self.requests.append(RecordedRequest(body, dict(request.headers), time.monotonic()))
            reply = self._next_reply(body)
            content = reply.content if reply.content is not None else self.responder(body).content
            self.in_flight += 1  # the server's event loop runs one handler at a time: no lock needed
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.latency if reply.delay is None else reply.delay)
            finally:
                self.in_flight -= 1
            if reply.body is not None:
                return Response(reply.body, reply.status, reply.headers, media_type="application/json")
            if reply.status != 200:
                error = {"error": {"message": f"scripted error {reply.status}", "type": "server_error", "code": None}}
                return JSONResponse(error, reply.status, reply.headers)
            prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else len(raw) // 4
            completion_tokens = (reply.completion_tokens if reply.completion_tokens is not None
                                 else len(content or "") // 4 + 1)
            completion = {
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                             "message": {"role": "assistant", "content": None if reply.refusal else content,
                                         "refusal": reply.refusal}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            }
            return JSONResponse(completion, 200, reply.headers)

        return app

    def start(self) -> "FakeOpenAI":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, timeout_graceful_shutdown=1,
                                backlog=512)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
