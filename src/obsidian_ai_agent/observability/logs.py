"""JSON log lines with secrets redacted, to stderr and to a rotated file shared by every worker."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from ..config import Settings

try:
    import fcntl
except ImportError:  # Windows: one process per log file, so no lock is needed
    fcntl = None  # type: ignore[assignment]

REDACTED = "[REDACTED]"

# The attributes every LogRecord has; anything else on a record came in through `extra=`.
# (uvicorn's `color_message` is its message again, with terminal colours.)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # userinfo in any URL: redis://:pw@host, https://user:pw@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@'\"<>]+@"), rf"\1{REDACTED}@"),
    # header values, as text (`Authorization: Bearer x`), a dict or JSON, or ASGI's (b'name', b'value')
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|x-api-key|cookie|set-cookie)"
            r"(['\"]?\s*[:=,]\s*(?:b(?=['\"]))?['\"]?)((?:bearer|basic|digest|token)\s+)?(?!\[REDACTED\])[^\s'\",;}\]]+"
        ),
        rf"\1\2\3{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=\-]{8,}"), rf"\1 {REDACTED}"),
    # password=..., token: ..., "api_key": "...", llm.api_key=...
    (
        re.compile(
            r"(?i)\b([\w.\-]*?(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key))"
            r"(['\"]?\s*[:=]\s*(?:b(?=['\"]))?['\"]?)(?!\[REDACTED\])[^\s'\",;&}\]]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # this service's own API keys, wherever they appear
    (re.compile(r"oaa_[A-Za-z0-9_\-]{8,}"), REDACTED),
]


class Redactor:
    """Replaces the configured secrets' values and anything shaped like a credential with `[REDACTED]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole; very short values would
        # blank out ordinary words (a URL's password is caught by the userinfo rule anyway).
        values = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """`value` with every string in it redacted (dicts, lists and tuples are walked)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, bytes):
            return self(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self(str(value))


def secret_values(settings: BaseModel) -> list[str]:
    """The value of every SecretStr in the settings (and the password of a secret URL on its own)."""
    found: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, SecretStr):
            value = obj.get_secret_value()
            if value:
                found.append(value)
                if "://" in value:
                    try:
                        parts = urlsplit(value)
                        found.extend(unquote(p) for p in (parts.password, parts.username) if p)
                    except ValueError:
                        pass
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name, None))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v)

    walk(settings)
    return found


_redactor = Redactor()


def redact(text: str) -> str:
    """`text` with the configured secrets and anything shaped like a credential replaced."""
    return _redactor(text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message (with its args rendered in), its `extra` fields and its traceback."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted_by", None) is self.redactor:
            return True
        try:
            self._redact(record)
        except Exception:  # a line that cannot be redacted is not written (logging must not raise)
            return False
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string still gets logged, as its parts
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.redactor(message), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, self.redactor.value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        record._redacted_by = self.redactor


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For `logging.json_format: false`: a readable line, extra fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{text} {extras}" if extras else text


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class SharedRotatingFileHandler(RotatingFileHandler):
    """A RotatingFileHandler that several processes (server workers) can share: each write holds an
    exclusive lock on `<file>.lock`, and a process reopens the file when another one has rotated it, so
    the size check sees the real file and exactly one process rotates it."""

    def __init__(self, filename: Path, max_bytes: int, backups: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        fd = os.open(f"{filename}.lock", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock_file = os.fdopen(fd, "a")  # held for the handler's life

    def _open(self) -> Any:
        # Log lines name notes and questions: readable by this user only, whatever the umask.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _reopen_if_rotated(self) -> None:
        if self.stream is None:
            return
        try:
            on_disk = os.stat(self.baseFilename)
            mine = os.fstat(self.stream.fileno())
            same = (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)
        except FileNotFoundError:
            same = False
        if not same:
            self.stream.close()
            self.stream = self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self._exclusive():
                self._reopen_if_rotated()
                super().emit(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        super().close()
        self._lock_file.close()


def log_path(settings: Settings) -> Path | None:
    """The log file (relative paths are under the data dir), or None when logging to stderr only."""
    file = settings.logging.file
    if file is None:
        return None
    file = file.expanduser()
    return file if file.is_absolute() else settings.data_dir / file


class WorkerDeath(logging.Filter):
    """uvicorn's supervisor says only "Child process [pid] died", at INFO: a server worker killed (out of
    memory, a crash) is an error an operator must see, so it is raised to ERROR and says what happened."""

    _DIED = re.compile(r"^Child process \[(\d+)\] died")

    def filter(self, record: logging.LogRecord) -> bool:
        m = self._DIED.match(record.getMessage())
        if m and record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.ERROR, "ERROR"
            record.msg = (
                f"server worker process {m.group(1)} died (killed, or out of memory); "
                "uvicorn starts a new one in its place"
            )
            record.args = ()
            record.worker_pid = int(m.group(1))
            return True
        return record.levelno >= logging.getLogger().getEffectiveLevel()


def adopt_uvicorn_loggers() -> None:
    """Send uvicorn's own lines through our handlers (and formatter and redaction); its access line is
    left out because the request middleware logs one richer line per request."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        if name == "uvicorn.error":
            # INFO reaches the filter, which keeps a worker's death (as an error) and holds the rest to
            # `log_level`: at WARNING the death of a worker was dropped with the other INFO lines.
            logger.setLevel(logging.INFO)
            if not any(isinstance(f, WorkerDeath) for f in logger.filters):
                logger.addFilter(WorkerDeath())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def setup_logging(settings: Settings) -> None:
    """JSON lines (or text) to stderr and `logging.file`, secrets redacted, level `log_level`.

    Idempotent: the handlers it added before are replaced, so building the app again (tests) or with
    other settings leaves one set."""
    global _redactor
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_obsidian_ai_agent", False):
            root.removeHandler(handler)
            handler.close()
    _redactor = Redactor(secret_values(settings))
    formatter: logging.Formatter = JsonFormatter() if settings.logging.json_format else TextFormatter()
    handlers: list[logging.Handler] = [_Stderr()]
    path = log_path(settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handlers.append(SharedRotatingFileHandler(path, settings.logging.max_bytes, settings.logging.backups))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter(_redactor))
        handler._obsidian_ai_agent = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    adopt_uvicorn_loggers()
