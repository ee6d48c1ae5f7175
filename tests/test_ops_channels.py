"""The alert channels against real servers: an SMTP server (aiosmtpd, STARTTLS or TLS, AUTH), a loopback
HTTP server standing in for Slack and for a webhook receiver, and the log file on disk."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import re
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from obsidian_ai_agent.monitoring_config import ChannelSettings
from obsidian_ai_agent.ops import channel_messages
from obsidian_ai_agent.ops import channels as ch

from .test_serve import self_signed  # a certificate for 127.0.0.1 and its key

USER, PASSWORD = "alerts", "s3cret-Pa55word"
TOKEN_PATH = "/services/T000/B000/SECRETTOKEN"
SERVICE = "obsidian-ai-agent 0.1.0 on test-host:8000"
STARTED = 1_700_000_000.0


def notification(**changes: Any) -> ch.Notification:
    base = ch.Notification(
        event="firing",
        alert_id=7,
        rule="cpu_critical",
        severity="critical",
        summary="CPU at 97% (over 95%)",
        value=97.0,
        threshold=95.0,
        started_at=STARTED,
        resolved_at=None,
        rollback=False,
        service=SERVICE,
    )
    return replace(base, **changes)


def resolved(n: ch.Notification, after: float = 312) -> ch.Notification:
    return replace(n, event="resolved", resolved_at=n.started_at + after)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a real SMTP server ------------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int
    messages: list[tuple[list[str], email.message.EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


def check_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return self_signed(tmp_path_factory.mktemp("tls"))[0]


def _server_context(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, cert.with_name("key.pem"))
    return ctx


@pytest.fixture
def trust(certificate: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client trusts the self-signed certificate the way an operator would: SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))


def _serve_smtp(certificate: Path, implicit_tls: bool) -> Iterator[Mailbox]:
    box = Mailbox(port=free_port())
    tls = _server_context(certificate)
    extra: dict[str, Any] = {"tls_context": tls, "require_starttls": True, "auth_required": True}
    if implicit_tls:
        # aiosmtpd only counts STARTTLS as TLS: over implicit TLS it offers AUTH when not told to wait for it.
        extra = {"ssl_context": tls, "auth_require_tls": False}
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        authenticator=check_login,
        server_hostname="127.0.0.1",
        **extra,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def smtp(certificate: Path, trust: None) -> Iterator[Mailbox]:
    yield from _serve_smtp(certificate, implicit_tls=False)


@pytest.fixture
def smtps(certificate: Path, trust: None) -> Iterator[Mailbox]:
    yield from _serve_smtp(certificate, implicit_tls=True)


def email_settings(port: int, **changes: Any) -> ChannelSettings:
    fields: dict[str, Any] = {
        "name": "ops-mail",
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "security": "starttls",
        "username": USER,
        "password": PASSWORD,
        "sender": "Obsidian AI Agent <alerts@example.org>",
        "recipients": ["alice@example.org", "bob@example.net"],
        "timeout": 5,
        **changes,
    }
    return ChannelSettings(**fields)


# --- a loopback HTTP server --------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    status: int = 200
    answer: bytes = b"ok"
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            box.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(box.status)
            if box.status in (301, 302):
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", str(len(box.answer)))
            self.end_headers()
            self.wfile.write(box.answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    box.url = f"http://127.0.0.1:{server.server_address[1]}{TOKEN_PATH}"
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def http_channel(kind: str, url: str, **changes: Any) -> ch.Channel:
    fields = {"name": f"ops-{kind}", "type": kind, "url": url, "timeout": 5, **changes}
    return ch.make_channel(ChannelSettings.model_validate(fields), Path())


# --- the Slack incoming-webhook format (https://api.slack.com/messaging/webhooks, Block Kit) ----------


def check_text_object(obj: dict[str, Any], limit: int = 3000) -> None:
    assert obj["type"] in ("mrkdwn", "plain_text"), obj
    assert isinstance(obj["text"], str) and 0 < len(obj["text"]) <= limit, obj


def check_blocks(blocks: list[dict[str, Any]]) -> None:
    assert isinstance(blocks, list) and 0 < len(blocks) <= 50
    for block in blocks:
        assert block["type"] in ("section", "context", "header", "divider", "actions"), block
        if block["type"] == "section":
            assert "text" in block or "fields" in block, block
            if "text" in block:
                check_text_object(block["text"])
            for f in block.get("fields", []):
                check_text_object(f, 2000)
            assert len(block.get("fields", [])) <= 10
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                check_text_object(element)
        elif block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            check_text_object(block["text"], 150)


def check_slack_payload(payload: dict[str, Any]) -> str:
    """Asserts the payload is a valid incoming-webhook message; returns every text in it, joined."""
    assert isinstance(payload["text"], str) and payload["text"]
    check_blocks(payload["blocks"])
    for attachment in payload.get("attachments", []):
        assert re.fullmatch(r"#[0-9a-fA-F]{6}", attachment["color"]), attachment
        check_blocks(attachment["blocks"])
    return json.dumps(payload, ensure_ascii=False)


def all_mrkdwn(payload: dict[str, Any]) -> list[str]:
    texts = [payload["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                texts.append(node["text"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(payload["blocks"])
    walk(payload.get("attachments", []))
    return texts


# --- email -------------------------------------------------------------------------------------------


def test_a_firing_and_a_resolved_email_reach_every_recipient_over_starttls(smtp: Mailbox) -> None:
    channel = ch.make_channel(email_settings(smtp.port), Path())
    firing = notification(
        rollback=True, summary="p95 response time 12 s, over 10 s", dashboard_url="https://d/x"
    )
    channel.send(firing)
    channel.send(resolved(firing))

    assert len(smtp.messages) == 2
    (to1, fired), (to2, done) = smtp.messages
    assert to1 == to2 == ["alice@example.org", "bob@example.net"]
    assert fired["Subject"] == "[CRITICAL] FIRING: p95 response time 12 s, over 10 s"
    assert done["Subject"] == "[RESOLVED] p95 response time 12 s, over 10 s"
    for msg in (fired, done):
        assert msg["From"] == "Obsidian AI Agent <alerts@example.org>"
        assert "alice@example.org" in msg["To"] and "bob@example.net" in msg["To"]
        assert msg["Date"] and msg["Message-ID"].endswith("@example.org>")
        assert msg.get_content_type() == "text/plain"
    body = fired.get_content()
    assert "Rollback recommended" in body and "cpu_critical" in body and "https://d/x" in body
    assert "97 (threshold 95)" in body and SERVICE in body
    after = done.get_content()
    assert "RESOLVED" in after and "lasted 5 min 12 s" in after and "Rollback" not in after


def test_an_email_over_implicit_tls_arrives(smtps: Mailbox) -> None:
    ch.make_channel(email_settings(smtps.port, security="tls"), Path()).send(notification())
    assert [m["Subject"] for _, m in smtps.messages] == ["[CRITICAL] FIRING: CPU at 97% (over 95%)"]


def test_a_wrong_smtp_password_raises_a_channel_error_that_does_not_contain_the_password(
    smtp: Mailbox,
) -> None:
    wrong = "wrong-" + PASSWORD
    channel = ch.make_channel(email_settings(smtp.port, password=wrong), Path())
    with pytest.raises(ch.ChannelError) as caught:
        channel.send(notification())
    text = str(caught.value)
    assert "ops-mail" in text and "127.0.0.1:" in text and "login" in text
    assert wrong not in text and PASSWORD not in text and caught.value.__cause__ is None
    assert smtp.messages == []


def test_an_untrusted_smtp_certificate_is_refused_with_a_hint(certificate: Path) -> None:
    # No SSL_CERT_FILE pointing at it: the self-signed certificate is not trusted.
    for box in _serve_smtp(certificate, implicit_tls=False):
        with pytest.raises(ch.ChannelError, match="certificate is not trusted") as caught:
            ch.make_channel(email_settings(box.port), Path()).send(notification())
        assert PASSWORD not in str(caught.value)
        assert box.messages == []


# --- Slack and the plain webhook ---------------------------------------------------------------------


def test_slack_gets_a_valid_incoming_webhook_payload_that_tells_firing_from_resolved(
    receiver: Receiver,
) -> None:
    channel = http_channel("slack", receiver.url)
    firing = notification(dashboard_url="http://dash:8000/ops?x=1&y=2", acknowledged_by="alice")
    channel.send(firing)
    channel.send(resolved(firing, after=3 * 3600 + 300))

    fired, done = (json.loads(r["body"]) for r in receiver.requests)
    assert all(r["path"] == TOKEN_PATH for r in receiver.requests)
    assert all(r["headers"]["Content-Type"] == "application/json" for r in receiver.requests)
    check_slack_payload(fired)
    check_slack_payload(done)
    assert fired["text"].startswith("FIRING [critical] cpu_critical: CPU at 97% (over 95%)")
    assert done["text"].startswith("RESOLVED [critical] cpu_critical")
    assert "*FIRING*" in fired["blocks"][0]["text"]["text"]
    assert "*RESOLVED*" in done["blocks"][0]["text"]["text"]
    assert fired["attachments"][0]["color"] != done["attachments"][0]["color"]
    assert "3 h 5 min" in json.dumps(done) and "Lasted" not in json.dumps(fired)
    assert "<http://dash:8000/ops?x=1&amp;y=2|Open the dashboard>" in json.dumps(fired)


def test_a_rollback_alert_says_rollback_recommended_everywhere(receiver: Receiver, tmp_path: Path) -> None:
    n = notification(rollback=True, summary="p95 response time 12 s")
    http_channel("slack", receiver.url).send(n)
    http_channel("webhook", receiver.url).send(n)
    slack, hook = (json.loads(r["body"]) for r in receiver.requests)
    assert "Rollback recommended" in slack["blocks"][0]["text"]["text"]
    assert "rollback recommended" in hook["message"] and hook["alert"]["rollback"] is True
    # A summary that says it already is not repeated.
    said = channel_messages.message(replace(n, summary="errors: rollback recommended"))
    assert said.count("rollback recommended") == 1


def test_the_webhook_gets_plain_json_with_every_notification_field(receiver: Receiver) -> None:
    n = notification(dashboard_url="http://dash/", acknowledged_by=None)
    channel = http_channel("webhook", receiver.url)
    channel.send(n)
    channel.send(resolved(n))
    fired, done = (json.loads(r["body"]) for r in receiver.requests)
    assert receiver.requests[0]["headers"]["Content-Type"] == "application/json"
    assert set(fired) == {"version", "event", "alert", "message"}
    assert fired["version"] == 1 and fired["event"] == "firing" and fired["alert"] == asdict(n)
    assert done["event"] == "resolved" and done["alert"]["resolved_at"] == STARTED + 312
    assert fired["message"].startswith("FIRING") and done["message"].startswith("RESOLVED")


@pytest.mark.parametrize("kind", ["slack", "webhook"])
@pytest.mark.parametrize(
    ("status", "hint"), [(500, "retried"), (302, "redirects are not followed"), (404, "")]
)
def test_a_refusing_server_raises_a_channel_error_without_the_token(
    receiver: Receiver, kind: str, status: int, hint: str
) -> None:
    receiver.status, receiver.answer = status, b"no_service" if status == 404 else b"oops"
    with pytest.raises(ch.ChannelError) as caught:
        http_channel(kind, receiver.url).send(notification())
    text = str(caught.value)
    assert f"ops-{kind}" in text and str(status) in text and hint in text
    assert "127.0.0.1" in text and "SECRETTOKEN" not in text and "/services/" not in text
    if kind == "slack" and status == 404:
        assert "create a new incoming webhook" in text
    assert len(receiver.requests) == 1  # one attempt, the redirect not followed


@pytest.mark.parametrize("kind", ["slack", "webhook"])
def test_a_closed_port_raises_a_channel_error_without_the_token(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}{TOKEN_PATH}?token=SECRETQUERY"
    with pytest.raises(ch.ChannelError) as caught:
        http_channel(kind, url).send(notification())
    text = str(caught.value)
    assert "could not post" in text and f"ops-{kind}" in text and "127.0.0.1" in text
    assert "SECRETTOKEN" not in text and "SECRETQUERY" not in text and "/services/" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_http_client_log_lines_never_show_the_webhook_token(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    channel = http_channel("slack", receiver.url)
    with caplog.at_level(logging.DEBUG):
        channel.send(notification())
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)
    assert "SECRETTOKEN" not in caplog.text and "SECRETTOKEN" not in repr(channel)


# --- the log file ------------------------------------------------------------------------------------


def test_the_log_channel_writes_json_lines_in_private_files_and_rotates_by_size(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = ChannelSettings(name="log", type="log", min_severity="info", max_bytes=1024, backups=2)
    channel = ch.make_channel(settings, data)
    sent = [notification(alert_id=i, summary=f"alert number {i}") for i in range(12)]
    for n in sent:
        channel.send(n)

    log = data / "logs" / "alerts.jsonl"
    files = [log, log.with_name("alerts.jsonl.1"), log.with_name("alerts.jsonl.2")]
    assert all(f.exists() for f in files) and not log.with_name("alerts.jsonl.3").exists()
    assert stat.S_IMODE((data / "logs").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    lines = [json.loads(line) for f in reversed(files) for line in f.read_text().splitlines()]
    assert all(f.stat().st_size <= 1024 for f in files)
    ids = [r["alert_id"] for r in lines]
    assert ids == sorted(ids) and ids[-1] == 11  # the oldest ones rotated out, the newest kept
    last = lines[-1]
    assert {k: last[k] for k in asdict(sent[-1])} == asdict(sent[-1])
    assert last["message"].startswith("FIRING [critical] cpu_critical: alert number 11")
    assert dt.datetime.fromisoformat(last["at"]).tzinfo is not None


def test_a_relative_log_path_is_under_the_data_dir_and_an_unwritable_one_is_a_channel_error(
    tmp_path: Path,
) -> None:
    channel = ch.make_channel(ChannelSettings(name="l", type="log", path=Path("alerts/a.jsonl")), tmp_path)
    channel.send(notification())
    assert json.loads((tmp_path / "alerts" / "a.jsonl").read_text())["rule"] == "cpu_critical"
    (tmp_path / "blocker").write_text("a file, not a folder")
    broken = ch.make_channel(
        ChannelSettings(name="b", type="log", path=tmp_path / "blocker" / "a.jsonl"), tmp_path
    )
    with pytest.raises(ch.ChannelError, match="cannot write the alert log"):
        broken.send(notification())


# --- across channels ---------------------------------------------------------------------------------


def test_send_test_reports_each_channel_and_one_failure_does_not_stop_the_others(
    smtp: Mailbox, tmp_path: Path
) -> None:
    settings = [
        ChannelSettings(name="file", type="log", min_severity="critical"),
        ChannelSettings(
            name="hook", type="webhook", url=SecretStr(f"http://127.0.0.1:{free_port()}{TOKEN_PATH}")
        ),
        email_settings(smtp.port, min_severity="critical"),
    ]
    channels = ch.make_channels(settings, tmp_path)
    n = ch.test_notification(SERVICE, dashboard_url="http://dash/")
    assert n.event == "test" and n.severity == "info" and all(c.wants(n) for c in channels)
    report = ch.send_test(channels, n)

    assert [(r["channel"], r["type"], r["ok"]) for r in report] == [
        ("file", "log", True),
        ("hook", "webhook", False),
        ("ops-mail", "email", True),
    ]
    assert report[0]["error"] is None and report[2]["error"] is None
    assert "hook" in report[1]["error"] and "SECRETTOKEN" not in report[1]["error"]
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in report)
    assert json.loads((tmp_path / "logs" / "alerts.jsonl").read_text())["event"] == "test"
    [(_, mail)] = smtp.messages
    assert mail["Subject"].startswith("[TEST] ") and "http://dash/" in mail.get_content()


def test_channels_want_alerts_at_or_above_their_minimum_severity_and_every_test(tmp_path: Path) -> None:
    channel = ch.make_channel(ChannelSettings(name="l", type="log", min_severity="warning"), tmp_path)
    assert channel.wants(notification(severity="critical"))
    assert channel.wants(notification(severity="warning"))
    assert not channel.wants(notification(severity="info"))
    assert channel.wants(ch.test_notification(SERVICE))


def test_user_text_arrives_verbatim_in_email_and_json_and_escaped_in_slack(
    smtp: Mailbox, receiver: Receiver, tmp_path: Path
) -> None:
    summary = "disk <b>&amp; full</b> & [[link]] > 90%"
    n = notification(summary=summary)
    ch.make_channel(email_settings(smtp.port), tmp_path).send(n)
    http_channel("webhook", receiver.url).send(n)
    http_channel("slack", receiver.url).send(n)
    ch.make_channel(ChannelSettings(name="l", type="log"), tmp_path).send(n)

    [(_, mail)] = smtp.messages
    assert mail["Subject"] == f"[CRITICAL] FIRING: {summary}"
    assert summary in mail.get_content()
    hook, slack = (json.loads(r["body"]) for r in receiver.requests)
    assert hook["alert"]["summary"] == summary and summary in hook["message"]
    assert json.loads((tmp_path / "logs" / "alerts.jsonl").read_text())["summary"] == summary
    check_slack_payload(slack)
    escaped = "disk &lt;b&gt;&amp;amp; full&lt;/b&gt; &amp; [[link]] &gt; 90%"
    texts = all_mrkdwn(slack)
    assert escaped in slack["text"] and escaped in slack["blocks"][0]["text"]["text"]
    # Outside Slack's own <link|label> and <!date…> syntax, no bare <, > or & reaches Slack.
    for text in texts:
        bare = re.sub(r"<(?:!date\^[^>]*|https?://[^>|]*\|[^>]*)>", "", text)
        assert "<" not in bare and ">" not in bare, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", bare), text
