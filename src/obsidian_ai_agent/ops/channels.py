"""The alert channels: where the monitor sends a notification (`monitor.channels`).

`log` appends JSON lines to a rotated file, `slack` posts to a Slack incoming webhook, `webhook` posts
plain JSON, `email` sends one message over SMTP to every recipient. `send` makes one synchronous attempt
bounded by the channel's timeout and raises `ChannelError` on failure; retrying is the monitor's job.

Webhook URLs carry their token and SMTP settings a password: neither ever appears in an error, a log
line or a repr. Errors name the channel, its type and the host only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import smtplib
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from .. import __version__
from ..monitoring_config import SEVERITY_RANK, ChannelSettings
from . import channel_messages as fmt

DEFAULT_LOG = Path("logs") / "alerts.jsonl"
USER_AGENT = f"obsidian-ai-agent/{__version__} (alerts)"


@dataclass(frozen=True)
class Notification:
    """One message about one alert, the same for every channel."""

    event: Literal["firing", "resolved", "repeat", "test"]
    alert_id: int | None
    rule: str
    severity: str  # "info" | "warning" | "critical"
    summary: str  # one line, filled in; the operator's text, sent verbatim
    value: float | None
    threshold: float | None
    started_at: float  # Unix time
    resolved_at: float | None
    rollback: bool  # a rollback criterion: messages say "rollback recommended"
    service: str  # e.g. "obsidian-ai-agent 0.1.0 on host:8000"
    dashboard_url: str | None = None
    acknowledged_by: str | None = None


class ChannelError(Exception):
    """A channel could not deliver: what failed and what to do, naming the host, never a secret."""


class Channel(Protocol):
    name: str
    min_severity: str

    def wants(self, n: Notification) -> bool: ...

    def send(self, n: Notification) -> None: ...


class _Base:
    type: str = ""

    def __init__(self, settings: ChannelSettings) -> None:
        self.name = settings.name
        self.min_severity: str = settings.min_severity
        self.timeout = settings.timeout
        self._secrets: list[str] = []

    def wants(self, n: Notification) -> bool:
        """Test notifications always; others when at least as severe as `min_severity`."""
        if n.event == "test":
            return True
        return SEVERITY_RANK.get(n.severity, max(SEVERITY_RANK.values())) >= SEVERITY_RANK[self.min_severity]

    def _scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _error(self, where: str, what: str) -> ChannelError:
        return ChannelError(self._scrub(f"{self.type} channel {self.name!r} ({where}): {what}"))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# --- log ---------------------------------------------------------------------------------------------


class _PrivateRotatingFile(RotatingFileHandler):
    """A rotated file created 0600, whose write errors reach the caller instead of stderr."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # called from the handler's except block: the write error goes to send()


_file_loggers: dict[str, logging.Logger] = {}
_file_loggers_lock = threading.Lock()


def _make_private_dirs(folder: Path) -> None:
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)


def _file_logger(path: Path, max_bytes: int, backups: int) -> logging.Logger:
    """One private logger per file (shared by channels writing it, so lines are never doubled)."""
    key = str(path)
    with _file_loggers_lock:
        logger = _file_loggers.get(key)
        if logger is not None:
            handler = logger.handlers[0]
            assert isinstance(handler, RotatingFileHandler)
            if handler.maxBytes == max_bytes and handler.backupCount == backups:
                return logger
            logger.removeHandler(handler)
            handler.close()
        _make_private_dirs(path.parent)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        logger = logging.getLogger(f"{__name__}.file.{digest}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        for old in list(logger.handlers):
            logger.removeHandler(old)
            old.close()
        handler = _PrivateRotatingFile(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        _file_loggers[key] = logger
        return logger


class LogChannel(_Base):
    type = "log"

    def __init__(self, settings: ChannelSettings, data_dir: Path) -> None:
        super().__init__(settings)
        path = (settings.path or DEFAULT_LOG).expanduser()
        self.path = path if path.is_absolute() else Path(data_dir) / path
        self.max_bytes = settings.max_bytes
        self.backups = settings.backups

    def send(self, n: Notification) -> None:
        line = json.dumps(fmt.log_record(n, time.time()), ensure_ascii=False)
        try:
            _file_logger(self.path, self.max_bytes, self.backups).info(line)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise self._error(
                str(self.path),
                f"cannot write the alert log ({reason}); check the folder's permissions and free space",
            ) from None


# --- HTTP: slack, webhook ----------------------------------------------------------------------------


class _RedactUrls(logging.Filter):
    """httpx logs every request's URL at INFO: webhook URLs are secrets, so they are redacted there."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: frozenset[str] = frozenset()  # replaced whole, never changed: safe across threads
        self._lock = threading.Lock()

    def add(self, secrets: list[str]) -> None:
        with self._lock:
            self.secrets = self.secrets | set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets:
            text = record.getMessage()
            hits = [s for s in secrets if s in text]
            if hits:
                for s in sorted(hits, key=len, reverse=True):
                    text = text.replace(s, "***")
                record.msg, record.args = text, None
        return True


_httpx_redaction = _RedactUrls()
logging.getLogger("httpx").addFilter(_httpx_redaction)


def _url_secrets(url: str) -> tuple[str, list[str]]:
    """The host to name in messages, and the strings to hide (the URL in its forms, its path and query)."""
    secrets = [url]
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "an invalid URL", secrets
    secrets.append(str(parsed))
    path = parsed.raw_path.decode("ascii", "replace")
    bare = path.split("?", 1)[0]
    for part in (path, bare, parsed.path, parsed.query.decode("ascii", "replace"), parsed.userinfo.decode()):
        if len(part) >= 4:  # "/" or "/a" hide nothing and would mangle every message
            secrets.append(part)
    host = parsed.host or "no host"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}", secrets


class _HttpChannel(_Base):
    def __init__(self, settings: ChannelSettings) -> None:
        super().__init__(settings)
        assert settings.url is not None  # ChannelSettings requires it for slack and webhook
        self._url = settings.url.get_secret_value()
        self.host, secrets = _url_secrets(self._url)
        self._secrets += secrets
        _httpx_redaction.add(secrets)

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
                return client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise self._error(
                self.host, f"no answer within {self.timeout:g} s; check that the host is reachable from here"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
            raise self._error(
                self.host,
                f"could not post ({type(exc).__name__}: {exc}); check the URL, the network and any proxy",
            ) from None

    def _refused(self, r: httpx.Response, hint: str) -> ChannelError:
        reply = " ".join(r.text.split())[:200] if r.content else ""
        said = f"answered {r.status_code} {r.reason_phrase}" + (f" ({reply!r})" if reply else "")
        if 300 <= r.status_code < 400:
            hint = "redirects are not followed; set the final URL"
        elif r.status_code == 429:
            hint = "rate limited; the delivery will be retried later"
        elif r.status_code >= 500:
            hint = "the server failed; the delivery will be retried later"
        return self._error(self.host, f"{said}; {hint}")


class SlackChannel(_HttpChannel):
    type = "slack"

    def send(self, n: Notification) -> None:
        r = self._post(fmt.slack_payload(n))
        if not r.is_success:
            reason = r.text.strip()
            hint = fmt.SLACK_HINTS.get(reason, "check the webhook URL in monitor.channels")
            raise self._refused(r, hint)


class WebhookChannel(_HttpChannel):
    type = "webhook"

    def send(self, n: Notification) -> None:
        r = self._post(fmt.webhook_payload(n))
        if not r.is_success:
            raise self._refused(r, "check the URL in monitor.channels and the receiving service")


# --- email -------------------------------------------------------------------------------------------


class EmailChannel(_Base):
    type = "email"

    def __init__(self, settings: ChannelSettings) -> None:
        super().__init__(settings)
        assert settings.smtp_host and settings.sender  # ChannelSettings requires them for email
        self.smtp_host = settings.smtp_host
        self.smtp_port = settings.smtp_port
        self.security = settings.security
        self.username = settings.username
        self._password = settings.password.get_secret_value() if settings.password else ""
        if self._password:
            self._secrets.append(self._password)
        self.sender = settings.sender
        self.recipients = list(settings.recipients)
        self.host = f"{self.smtp_host}:{self.smtp_port}"

    def message(self, n: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = fmt.email_subject(n)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "obsidian-ai-agent.invalid"
        msg["Message-ID"] = make_msgid("alert", domain=domain)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to alerts
        msg.set_content(fmt.email_body(n))
        return msg

    def send(self, n: Notification) -> None:
        try:
            msg = self.message(n)
        except (ValueError, TypeError) as exc:
            raise self._error(
                self.host, f"cannot build the message ({exc}); check sender and recipients"
            ) from None
        stage = "connecting"
        try:
            smtp: smtplib.SMTP
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    self.smtp_host, self.smtp_port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    stage = "starting TLS (STARTTLS)"
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    stage = f"logging in as {self.username!r}"
                    smtp.login(self.username, self._password)
                stage = "sending"
                refused = smtp.send_message(
                    msg, from_addr=parseaddr(self.sender)[1], to_addrs=self.recipients
                )
        except smtplib.SMTPAuthenticationError as exc:
            raise self._error(
                self.host,
                f"the server refused the login of {self.username!r} ({exc.smtp_code}); "
                "check monitor.channels username and password",
            ) from None
        except smtplib.SMTPNotSupportedError:
            what = "STARTTLS" if stage.startswith("starting") else "login (AUTH)"
            raise self._error(
                self.host,
                f"the server does not offer {what}; check smtp_port and security (starttls, tls, none)",
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._error(
                self.host, f"every recipient was refused ({', '.join(exc.recipients)}); check the addresses"
            ) from None
        except smtplib.SMTPResponseException as exc:
            reply = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else exc.smtp_error
            )
            raise self._error(
                self.host,
                f"the server answered {exc.smtp_code} {' '.join(str(reply).split())[:200]!r} while {stage}",
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._error(
                self.host,
                f"the server's certificate is not trusted ({exc.verify_message}); "
                "check smtp_host (it must match the certificate) or trust its CA (SSL_CERT_FILE)",
            ) from None
        except (ssl.SSLError, smtplib.SMTPException) as exc:
            raise self._error(self.host, f"failed while {stage} ({type(exc).__name__}: {exc})") from None
        except TimeoutError:
            raise self._error(self.host, f"no answer within {self.timeout:g} s while {stage}") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise self._error(
                self.host, f"could not connect ({reason}); check smtp_host, smtp_port and the network"
            ) from None
        if refused:
            raise self._error(
                self.host, f"these recipients were refused: {', '.join(sorted(refused))}; the others got it"
            )


# --- building and testing ----------------------------------------------------------------------------


def make_channel(settings: ChannelSettings, data_dir: Path) -> Channel:
    if settings.type == "log":
        return LogChannel(settings, data_dir)
    if settings.type == "slack":
        return SlackChannel(settings)
    if settings.type == "webhook":
        return WebhookChannel(settings)
    return EmailChannel(settings)


def make_channels(settings_list: list[ChannelSettings], data_dir: Path) -> list[Channel]:
    return [make_channel(s, data_dir) for s in settings_list]


def test_notification(service: str, dashboard_url: str | None = None) -> Notification:
    """What `send_test` sends: an info notification every channel accepts."""
    now = time.time()
    return Notification(
        event="test",
        alert_id=None,
        rule="test",
        severity="info",
        summary="a test notification from the monitor of obsidian-ai-agent",
        value=None,
        threshold=None,
        started_at=now,
        resolved_at=None,
        rollback=False,
        service=service,
        dashboard_url=dashboard_url,
    )


test_notification.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _try(channel: Channel, n: Notification) -> dict[str, Any]:
    start = time.perf_counter()
    error: str | None = None
    try:
        channel.send(n)
    except ChannelError as exc:
        error = str(exc)
    except Exception as exc:  # a foreign Channel's bug must not stop the others
        error = f"{getattr(channel, 'type', '?')} channel {channel.name!r}: unexpected {type(exc).__name__}"
    return {
        "channel": channel.name,
        "type": getattr(channel, "type", type(channel).__name__),
        "ok": error is None,
        "error": error,
        "seconds": round(time.perf_counter() - start, 3),
    }


def send_test(channels: list[Channel], n: Notification) -> list[dict]:
    """Send `n` to every channel at once; one outcome per channel, in order."""
    if not channels:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(channels)), thread_name_prefix="alert-test") as pool:
        return list(pool.map(lambda c: _try(c, n), channels))
