"""A small OpenAI-compatible embeddings server on loopback, built from the public `/v1/embeddings` API.

It serves the real local model, and can be told to fail: `fail_next` requests answer 500, `slow` seconds of
delay, and models other than `known_models` answer 404 as Ollama does for a model not pulled.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from obsidian_ai_agent.embeddings import LocalEmbedder


@dataclass
class Behaviour:
    known_models: set[str] = field(default_factory=lambda: {"minilm"})
    fail_next: int = 0
    slow: float = 0.0
    requests: int = 0


def build_app(embedder: LocalEmbedder, behaviour: Behaviour) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/embeddings", response_model=None)
    def embeddings(body: dict[str, Any]) -> Any:
        behaviour.requests += 1
        if behaviour.slow:
            time.sleep(behaviour.slow)
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if body.get("model") not in behaviour.known_models:
            return JSONResponse(
                {"error": f'model "{body.get("model")}" not found, try pulling it first'}, 404
            )
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vecs = embedder.embed(texts)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)
            ],
            "model": body["model"],
        }

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
