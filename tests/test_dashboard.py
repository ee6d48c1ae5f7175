"""The operator's dashboard driven in headless Chromium (Debian's `chromium`, through Playwright) against
the real service under uvicorn: sign in with the admin key, health and graphs with data, acknowledge an
alert that a real measured figure set off, open a job's stage profile and a route's slow requests.
Screenshots go to the test's tmp dir and are checked to be far from blank."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from obsidian_ai_agent.store import Store
from tests.conftest import DOCS_VAULT, copy_tree, wait_for
from tests.openai_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
UVICORN = [sys.executable, "-m", "uvicorn", "obsidian_ai_agent.backend:app", "--host", "127.0.0.1"]
WRONG_KEY = "oaa_000000000000_" + "x" * 43
ACK_BY = "Dana Operator"
ACK_NOTE = "disk checked: the test data directory, nothing to free"
NOTE = """# Dashboard check

The operator opens the dashboard, signs in with the admin key and looks at the graphs.
Alerts are acknowledged with a name and a note; jobs show their stage profile.
"""
QUERIES = ("how do I add a due date to a task", "recurring tasks", "filter by tag", "custom statuses")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"
)


class Service:
    """The service on a loopback port: one uvicorn process, the monitor sampling every half second and
    the disk rule set to fire on the data directory's real disk use."""

    def __init__(self, data: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "OAA_DATA_DIR": str(data),
            "OAA_MONITOR__ENABLED": "true",  # the tests' environment turns it off
            "OAA_MONITOR__INTERVAL_S": "0.5",
            "OAA_MONITOR__RULES__DISK_WARNING__THRESHOLD": "1",
            "OAA_SERVER__RATE_LIMITS__ENABLED": "false",
            "OAA_SERVER__SLOW_REQUEST_MS": "0",
            "OAA_LOGGING__SLOW_REQUESTS": "10000",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [*UVICORN, "--port", str(self.port)], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> None:
        # One client for the polling: building one per poll cost ~0.1-0.2 s of CPU each time, taken
        # from the starting service.
        with httpx.Client(timeout=5) as client:

            def up() -> bool:
                assert self.proc.poll() is None, "uvicorn exited (see service.log in the test's tmp dir)"
                try:
                    return client.get(self.url + "/health").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(up, "the service starting", 120)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()


def png_colours(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours) of an 8-bit RGB or RGBA PNG, decoded with zlib and numpy."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, "an 8-bit RGB(A) PNG"
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    rows = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8).reshape(height, stride + 1)
    image = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):  # undo each row's filter (uint8 arithmetic wraps, as PNG's does)
        kind, line = int(rows[y, 0]), rows[y, 1:].copy()
        if kind == 1:
            line = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:
            line = line + prev
        elif kind in (3, 4):
            cur, up = line.tolist(), prev.tolist()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                if kind == 3:
                    cur[i] = (cur[i] + ((a + up[i]) >> 1)) & 0xFF
                    continue
                b, c = up[i], up[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            line = np.array(cur, dtype=np.uint8)
        image[y] = prev = line
    rgb = image.reshape(height, width, bpp)[..., :3].astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return width, height, len(np.unique(packed))


def not_blank(path: Path) -> None:
    width, height, colours = png_colours(path)
    assert width >= 300 and height >= 200, (path.name, width, height)
    # Text, charts and panels antialiased: hundreds of colours; a blank or one-colour page has a few.
    assert colours >= 200, f"{path.name} looks blank: {colours} distinct colours"


def test_an_operator_signs_in_sees_health_and_graphs_acknowledges_an_alert_and_opens_a_job_profile(
    tmp_path: Path, docs_index: Path
) -> None:
    from playwright.sync_api import Request, expect, sync_playwright

    # The indexed docs vault, copied with its vault and one new note: the reindex has real work to do.
    data = copy_tree(docs_index, tmp_path / "data")
    vault = copy_tree(DOCS_VAULT, tmp_path / "vault")
    vault.chmod(0o755)
    (vault / "Operations").mkdir()
    (vault / "Operations" / "Dashboard check.md").write_text(NOTE, encoding="utf-8")
    with Store(data / "index.sqlite") as store:
        store.set_meta("vault_root", str(vault.resolve()))
    service = Service(data, tmp_path / "service.log")
    api = httpx.Client(base_url=service.url, timeout=60)
    try:
        service.wait_ready()
        secret = (data / "admin.key").read_text(encoding="utf-8").strip()
        api.headers["X-API-Key"] = secret

        # The page carries one policy of its own, and its shell needs no key.
        page_resp = httpx.get(service.url + "/dashboard")
        assert page_resp.status_code == 200 and secret not in page_resp.text
        policies = page_resp.headers.get_list("content-security-policy")
        # A second policy would be enforced as well (a default-src 'none' one stops every script).
        assert len(policies) == 1 and "script-src 'self'" in policies[0], policies

        # A real job, with a stage profile, and some searches for the request graph.
        job_id = api.post("/api/reindex").json()["job_id"]
        for q in QUERIES:
            assert api.post("/api/search", json={"query": q, "k": 3}).status_code == 200
        wait_for(
            lambda: api.get(f"/api/jobs/{job_id}").json()["status"] in ("succeeded", "failed"),
            "the reindex finishing",
        )
        job = api.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["result"]["indexed"] == 1, job
        stages = {s["stage"] for s in job["stages"]}
        assert {"scan", "embed"} <= stages, stages
        wait_for(
            lambda: any(
                (s.get("request_rate") or 0) > 0
                for s in api.get("/api/monitor/samples?window=1h").json()["samples"]
            ),
            "a sample counting the searches",
        )

        def disk_alert() -> dict[str, Any] | None:
            alerts = api.get("/api/health/alerts").json()["open"]
            return next((a for a in alerts if a["rule"] == "disk_warning"), None)

        alert = wait_for(disk_alert, "the disk alert firing")
        assert alert["acked_by"] is None
        wrong = httpx.get(service.url + "/api/jobs", headers={"X-API-Key": WRONG_KEY})
        assert wrong.status_code == 401
        refusal = wrong.json()["error"]["message"]

        requests: list[Request] = []
        problems: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless=new"]
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("request", lambda r: requests.append(r))
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on(
                    "console",
                    # The browser logs a refused call (the wrong key below) as an error: that one is meant.
                    lambda m: (
                        problems.append(f"console: {m.text}")
                        if m.type == "error" and " 401 " not in m.text
                        else None
                    ),
                )
                page.set_default_timeout(20_000)

                page.goto(service.url + "/")
                assert urlsplit(page.url).path == "/dashboard"

                # A wrong key: the sign-in stays, with the server's own message.
                page.fill("#signin-key", WRONG_KEY)
                page.click("#signin-submit")
                expect(page.locator("#signin-error")).to_have_text(refusal)
                assert page.locator("#app").is_hidden()

                page.fill("#signin-key", secret)
                page.click("#signin-submit")
                expect(page.locator("#app")).to_be_visible()
                expect(page.locator("#components [data-component]")).to_have_count(6)
                expect(page.locator("#overall")).to_have_text(re.compile(r"^(ok|degraded|down)$"))
                expect(page.locator("#chart-requests canvas").first).to_be_visible()
                page.wait_for_function(
                    "() => Number(document.querySelector('#chart-requests').dataset.points || 0) > 0"
                )
                page.wait_for_function(
                    "() => Number(document.querySelector('#chart-system').dataset.points || 0) > 0"
                )
                expect(page.locator("#monitor-line")).to_contain_text("sampling every 0.5 s")
                expect(page.locator("#updated")).to_have_text(re.compile(r"^updated \d\d:\d\d:\d\d$"))
                page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
                page.locator("#chart-requests").screenshot(path=tmp_path / "requests-graph.png")

                # Acknowledge the disk alert through the form.
                row = page.locator(f"#alerts-open tr[data-alert-id='{alert['id']}']")
                row.locator("button.ack").click()
                expect(page.locator("#ack-dialog")).to_be_visible()
                page.fill("#ack-by", ACK_BY)
                page.fill("#ack-note", ACK_NOTE)
                page.click("#ack-submit")
                expect(page.locator("#ack-dialog")).to_be_hidden()
                expect(row.locator(".ack-info")).to_contain_text(f"by {ACK_BY}")
                expect(row.locator(".ack-info")).to_contain_text(ACK_NOTE)

                # A job's stage profile.
                page.click(f"#jobs-table tr[data-job-id='{job_id}']")
                profile = page.locator("#job-profile")
                expect(profile).to_have_attribute("data-job-id", str(job_id))
                expect(profile.locator("table.stages tbody tr").first).to_be_visible()
                profile.scroll_into_view_if_needed()
                page.screenshot(path=tmp_path / "job-profile.png")

                # A route's percentiles and its slow requests (every request is "slow" at 0 ms).
                page.click("#routes-table tr[data-route='/api/search'][data-method='POST']")
                detail = page.locator("#route-detail")
                expect(detail.locator(".percentiles")).to_contain_text("p99")
                expect(detail.locator("table.slow tbody tr")).to_have_count(len(QUERIES))
                expect(detail.locator("table.slow")).to_contain_text("first_byte_ms")
                detail.scroll_into_view_if_needed()
                page.screenshot(path=tmp_path / "route-detail.png")

                # Signing out forgets the key.
                page.click("#signout")
                expect(page.locator("#signin")).to_be_visible()
                stored = page.evaluate("() => JSON.stringify([{...sessionStorage}, {...localStorage}])")
                assert secret not in stored and page.locator("#signin-key").input_value() == ""
                assert page.locator("#app").is_hidden()
            finally:
                browser.close()

        acked = next(a for a in api.get("/api/health/alerts").json()["open"] if a["id"] == alert["id"])
        assert (acked["acked_by"], acked["ack_note"]) == (ACK_BY, ACK_NOTE)
    finally:
        api.close()
        service.stop()

    assert not problems, problems
    origin = urlsplit(service.url).netloc
    assert requests and all(urlsplit(r.url).netloc == origin for r in requests), [r.url for r in requests]
    assert not [r.url for r in requests if secret in r.url]
    calls = [r for r in requests if urlsplit(r.url).path.startswith("/api/")]
    # Every call to the API sent a key in its header (the wrong one first, then the admin key).
    assert calls and all(r.headers.get("x-api-key") for r in calls)
    assert any(r.headers.get("x-api-key") == secret for r in calls)
    for name in ("dashboard.png", "requests-graph.png", "job-profile.png", "route-detail.png"):
        not_blank(tmp_path / name)
