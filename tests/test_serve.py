"""`obsidian-ai-agent serve` as a process: TLS from --ssl-certfile/--ssl-keyfile, HSTS only over TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from obsidian_ai_agent import config
from obsidian_ai_agent.config import default_workers

ROOT = Path(__file__).resolve().parents[1]


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_speaks_tls_with_the_given_certificate_and_sends_hsts(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OAA_")}, "HF_HUB_OFFLINE": "1"}
    env["OAA_ANSWER__PREPARE_UNIT_VECTORS"] = "false"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "obsidian_ai_agent.cli",
            "--data-dir",
            str(data),
            "serve",
            "--no-index",
            "--port",
            str(port),
            "--ssl-certfile",
            str(cert),
            "--ssl-keyfile",
            str(key),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                r = httpx.get(url + "/health", verify=str(cert), timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert "max-age=" in r.headers["strict-transport-security"]
        # The key the first start made is in the data dir and works over TLS.
        admin = (data / "admin.key").read_text().strip()
        status = httpx.get(url + "/status", verify=str(cert), headers={"X-API-Key": admin}, timeout=30)
        assert status.status_code == 200 and status.json()["index"]["sources"] == 0
        # Plain HTTP on the TLS port is not served.
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            assert plain.status_code != 200
        except httpx.HTTPError:
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Without server.workers, serve starts one worker per core (at most 4): here both speak TLS.
    assert f"https://127.0.0.1:{port} with {default_workers()} worker(s)" in log.read_text()


def test_serve_refuses_a_missing_certificate_with_a_clear_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "obsidian_ai_agent.cli",
            "--data-dir",
            str(tmp_path),
            "serve",
            "--no-index",
            "--ssl-certfile",
            str(tmp_path / "nope.pem"),
            "--ssl-keyfile",
            str(tmp_path / "nope.key"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("OAA_")}, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2 and "nope.pem does not exist" in run.stderr


def test_the_default_worker_count_is_one_per_usable_core_and_at_most_four(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for cores, workers in ((1, 1), (2, 2), (4, 4), (32, 4)):
        monkeypatch.setattr(config, "usable_cores", lambda cores=cores: cores)
        assert default_workers() == workers
    # Unset unless the operator names a number; `serve` then fills in the default.
    monkeypatch.delenv("OAA_SERVER__WORKERS", raising=False)
    assert config.load_settings(None, tmp_path).server.workers is None
    assert config.load_settings(None, tmp_path, server={"workers": 3}).server.workers == 3
