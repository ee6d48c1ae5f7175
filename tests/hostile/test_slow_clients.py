"""Slow and idle clients over a real socket against uvicorn on loopback (issue 9, hole 5): half-sent
headers, a declared body that never comes, too many connections, bytes that are not HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obsidian_ai_agent.api import protocol

from .service import key_for, make_app, serve, service_settings

HALF_HEADER = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Any]]:
    """The service under uvicorn with the protocol `serve` uses, its bounds read from settings as each
    worker reads them: headers within 1 s, bodies that stall 1 s, at most 40 connections."""
    s = service_settings(
        tmp_path,
        monkeypatch,
        OAA_SERVER__HEADER_TIMEOUT="1",
        OAA_SERVER__BODY_TIMEOUT="1",
        OAA_SERVER__MAX_CONNECTIONS="40",
    )
    monkeypatch.setattr(protocol, "_bounds", None)  # read afresh from these settings
    with serve(make_app(s), http="obsidian_ai_agent.api.protocol:ServerProtocol") as port:
        yield port, s


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    return sock


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    t0 = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s; received {data[:200]!r}") from None
    except ConnectionResetError:
        pass
    return data, time.monotonic() - t0


def parse(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body)


def test_connections_that_send_half_a_header_or_nothing_are_closed_within_the_header_timeout(
    server: tuple[int, Any],
) -> None:
    port, _ = server
    socks = [connect(port) for _ in range(30)]
    try:
        for sock in socks[:25]:
            sock.sendall(HALF_HEADER)  # the other 5 send nothing at all
        for sock in socks:
            # Before: every one was still open after 60 s. Generous bound: timeout 1 s.
            raw, _ = read_until_closed(sock, 10)
            status, headers, body = parse(raw)
            assert status == 408 and body["error"]["code"] == "request_timeout"
            assert "server.header_timeout" in body["error"]["message"]
            assert headers["connection"] == "close"
    finally:
        for sock in socks:
            sock.close()


def test_a_request_that_declares_a_body_and_never_sends_it_gets_408_and_is_closed(
    server: tuple[int, Any],
) -> None:
    port, s = server
    key = key_for(s, ["write"])
    sock = connect(port)
    try:
        sock.sendall(
            b"PUT /api/notes/Stalled.md HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/markdown\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 1000\r\n\r\n# only the start"
        )
        raw, _ = read_until_closed(sock, 15)
    finally:
        sock.close()
    status, headers, body = parse(raw)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert "server.body_timeout" in body["error"]["message"]
    assert headers["connection"] == "close"
    assert not (s.vault / "Stalled.md").exists()


def test_a_request_answered_before_its_body_arrived_does_not_keep_the_connection_open(
    server: tuple[int, Any],
) -> None:
    port, _ = server
    sock = connect(port)
    try:
        # No key: refused at once, before the body is read; the rest of the body never comes.
        sock.sendall(
            b"PUT /api/notes/A.md HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/markdown\r\n"
            b"Content-Length: 100000\r\n\r\n# the first bytes"
        )
        # Before: open until uvicorn's idle timer (5 s here), reset by every byte the client trickles.
        raw, _ = read_until_closed(sock, 3)
    finally:
        sock.close()
    status, _, body = parse(raw)
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_past_max_connections_a_new_connection_is_answered_503_in_the_error_shape_and_closed(
    server: tuple[int, Any],
) -> None:
    port, _ = server
    held = [connect(port) for _ in range(40)]
    try:
        time.sleep(0.2)  # let the server take them all
        extra = connect(port)
        try:
            raw, _ = read_until_closed(extra, 5)
        finally:
            extra.close()
        status, _, body = parse(raw)
        assert status == 503 and "server.max_connections" in body["error"]["message"]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_bytes_that_are_not_http_get_a_400_in_the_json_error_shape(server: tuple[int, Any]) -> None:
    port, _ = server
    sock = connect(port)
    try:
        sock.sendall(b"\x16\x03\x01\x00\xa5 this is a TLS hello, not HTTP\r\n\r\n")
        raw, _ = read_until_closed(sock, 5)
    finally:
        sock.close()
    status, headers, body = parse(raw)
    assert status == 400 and headers["content-type"] == "application/json"
    assert body["error"]["code"] == "bad_request"


def test_a_well_behaved_client_keeps_its_connection_across_requests(server: tuple[int, Any]) -> None:
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/health")
            r = conn.getresponse()
            assert r.status == 200
            r.read()
            time.sleep(0.4)  # idle between requests, under the header timeout each time
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
