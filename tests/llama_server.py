"""llama-cpp-python's own OpenAI-compatible server, run on a loopback port with the packaged SmolLM2 GGUF."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from obsidian_ai_agent.llm import packaged_gguf

from .openai_server import free_port

MODEL_ALIAS = "smollm2"


@contextmanager
def llama_server(n_ctx: int = 2048) -> Iterator[str]:
    """Start `python -m llama_cpp.server`; yields its base URL (ending in /v1) once it lists its model."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(packaged_gguf()),
        "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", "1",
    ]  # fmt: skip
    # A file, not a pipe: the server logs every request and a full pipe would stall it.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama_cpp.server exited {proc.returncode}: {log.read()[-2000:]}")
            try:
                if httpx.get(base + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("llama_cpp.server did not start within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
