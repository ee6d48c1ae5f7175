"""A real redis-server for tests: on a free loopback port, no persistence, stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Start redis-server on 127.0.0.1:<free port> and yield its URL; fail (not skip) when it is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed, and these tests need a real one: `make test` installs it, "
            "or run `apt-get install redis-server`",
            pytrace=False,
        )
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [
            *(binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--dir", str(workdir), "--logfile", str(log), "--daemonize", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while not ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                pytest.fail(f"redis-server did not start on port {port}:\n{text}", pytrace=False)
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
