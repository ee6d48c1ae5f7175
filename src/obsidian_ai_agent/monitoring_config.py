"""Settings of the monitor (`monitor.*`): sampling, alert rules and alert channels, declared as data.

Rules are keyed by name and merged over the defaults, so a config file changes one field of one rule
(`monitor.rules.cpu_warning.threshold: 80`) or drops a rule (`enabled: false`) without restating the rest.
The defaults are the deployment checklist's thresholds; the rollback criteria are critical rules with
`rollback: true` ("rollback recommended" in their message).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

# What a rule may watch: the figures of one sample (see ops/sampling.py), and `component.<name>` for each
# component check of /api/health/detailed (0 ok, 1 degraded, 2 down).
METRICS: dict[str, str] = {
    "cpu_percent": "CPU use of the host, percent",
    "memory_percent": "memory use of the host, percent",
    "disk_percent": "disk use of the file system holding the data directory, percent",
    "request_rate": "requests per second over the last interval, every worker",
    "error_rate": "share of requests answered 5xx over the last interval (0-1)",
    "latency_p50_s": "median request time over the last interval, seconds",
    "latency_p95_s": "95th percentile request time over the last interval, seconds",
    "latency_p99_s": "99th percentile request time over the last interval, seconds",
    "error_log_lines_per_min": "ERROR lines written to the service's own log per minute",
    "jobs_failed": "jobs that failed during the last interval",
    "jobs_stuck": "running jobs whose lease expired (their worker is gone)",
    "jobs_queued": "jobs waiting to run",
    "rss_growth_mb_per_hour": "growth of the service's memory over the last hour when it grew steadily",
    "component_worst": "the worst component state: 0 ok, 1 degraded, 2 down",
}
COMPONENTS = ("database", "data_dir", "vector_search", "embedder", "llm", "disk")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def seconds(value: Any) -> Any:
    """`30`, `"30s"`, `"5m"`, `"4h"`, `"1d"` as seconds; anything else is left for pydantic to refuse."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 4h or a number of seconds")
        return float(m.group(1)) * _UNIT[m.group(2)]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


class RuleSettings(_Section):
    """One alert rule: fires when `metric op threshold` has held for `for` seconds."""

    enabled: bool = True
    metric: str
    """A figure of a sample (see `METRICS`) or `component.<name>` (0 ok, 1 degraded, 2 down)."""
    op: Literal[">", ">=", "<", "<=", "=="] = ">"
    threshold: float
    severity: Literal["warning", "critical"] = "warning"
    for_: float = Field(default=0.0, ge=0, alias="for")
    """Seconds the condition must hold before the alert fires (`5m` works too)."""
    keep_firing_for: float = Field(default=0.0, ge=0)
    """Seconds a firing alert stays open after its condition stops holding (as Prometheus'
    `keep_firing_for`): a figure that dips for one sample does not resolve and re-open it."""
    summary: str = ""
    """One line for people; `{value}` and `{threshold}` are filled in."""
    rollback: bool = False
    """A rollback criterion: the alert says "rollback recommended"."""
    mute_in_maintenance: bool = True
    """No notification while maintenance mode is on (the alert is still recorded)."""

    _for = field_validator("for_", "keep_firing_for", mode="before")(classmethod(lambda cls, v: seconds(v)))

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v in METRICS:
            return v
        if v.startswith("component.") and v.split(".", 1)[1] in COMPONENTS:
            return v
        known = ", ".join([*METRICS, *(f"component.{c}" for c in COMPONENTS)])
        raise ValueError(f"unknown metric {v!r}; one of: {known}")


def _rule(metric: str, threshold: float, severity: str, for_: float, summary: str, **extra: Any) -> dict:
    return {
        "metric": metric,
        "threshold": threshold,
        "severity": severity,
        "for": for_,
        "summary": summary,
        **extra,
    }


ROLLBACK = "rollback recommended"
# The deployment checklist's thresholds (section 5) and rollback criteria (section 6).
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "cpu_warning": _rule("cpu_percent", 85, "warning", 300, "CPU at {value}% (over {threshold}%)"),
    "cpu_critical": _rule("cpu_percent", 95, "critical", 300, "CPU at {value}% (over {threshold}%)"),
    "memory_warning": _rule("memory_percent", 90, "warning", 300, "memory at {value}% (over {threshold}%)"),
    "memory_critical": _rule("memory_percent", 95, "critical", 120, "memory at {value}% (over {threshold}%)"),
    "disk_warning": _rule("disk_percent", 90, "warning", 0, "disk at {value}% (over {threshold}%)"),
    "disk_critical": _rule("disk_percent", 95, "critical", 0, "disk at {value}% (over {threshold}%)"),
    "error_rate_warning": _rule(
        "error_rate", 0.05, "warning", 120, "{value_pct} of requests failing (over {threshold_pct})"
    ),
    "error_rate_critical": _rule(
        "error_rate",
        0.10,
        "critical",
        300,
        "{value_pct} of requests failing for 5 minutes (over {threshold_pct}): " + ROLLBACK,
        rollback=True,
    ),
    "latency_warning": _rule(
        "latency_p95_s", 5, "warning", 120, "p95 response time {value} s (over {threshold} s)"
    ),
    "latency_critical": _rule(
        "latency_p95_s",
        10,
        "critical",
        300,
        "p95 response time {value} s, over {threshold} s sustained: " + ROLLBACK,
        rollback=True,
    ),
    "database_failing": _rule(
        "component.database",
        2,
        "critical",
        60,
        "the database checks fail: " + ROLLBACK,
        op=">=",
        rollback=True,
    ),
    "component_down": _rule("component_worst", 2, "warning", 60, "a component is down", op=">="),
    "memory_leak": _rule(
        "rss_growth_mb_per_hour",
        100,
        "critical",
        0,
        "service memory growing steadily ({value} MB/hour over the last hour, a leak): " + ROLLBACK,
        rollback=True,
    ),
    "error_log_burst": _rule(
        "error_log_lines_per_min", 10, "warning", 0, "{value} ERROR lines per minute in the service log"
    ),
    "jobs_stuck": _rule("jobs_stuck", 0, "warning", 120, "{value} jobs stuck past their lease"),
    "jobs_failing": _rule("jobs_failed", 5, "warning", 0, "{value} jobs failed in the last interval"),
}


class ChannelSettings(_Section):
    """Where alerts are sent. `log`: JSON lines in a rotated file; `slack`: a Slack incoming webhook;
    `webhook`: a plain JSON POST; `email`: SMTP (STARTTLS or TLS, login, several recipients)."""

    name: str = Field(min_length=1, max_length=64)
    type: Literal["log", "slack", "webhook", "email"]
    min_severity: Severity = "warning"
    """Alerts below this severity are not sent here (test alerts always are)."""
    timeout: float = Field(default=10.0, gt=0, le=300)
    # log
    path: Path | None = None
    """`log`: the file (relative paths are under the data dir; default `logs/alerts.jsonl`)."""
    max_bytes: int = Field(default=10 * 1_048_576, ge=1024)
    backups: int = Field(default=5, ge=0, le=1000)
    # slack / webhook
    url: SecretStr | None = None
    """`slack` / `webhook`: where to POST (a secret: webhook URLs carry their token)."""
    # email
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str | None = None
    recipients: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> ChannelSettings:
        need: list[str] = []
        if self.type in ("slack", "webhook") and not (self.url and self.url.get_secret_value()):
            need.append("url")
        if self.type == "email":
            need += [f for f in ("smtp_host", "sender") if not getattr(self, f)]
            if not self.recipients:
                need.append("recipients")
            if self.password is not None and not self.username:
                need.append("username")
        if need:
            raise ValueError(f"channel {self.name!r} of type {self.type} needs {', '.join(need)}")
        return self


class MonitorSettings(_Section):
    enabled: bool = True
    """Run the monitor in the service (one per data directory, whatever the number of workers)."""
    interval_s: float = Field(default=30.0, ge=0.2, le=3600)
    """Seconds between samples (the checklist's health check every 30 seconds)."""
    lease_s: float | None = Field(default=None, gt=0)
    """Seconds the monitor's lease lasts unrenewed before another process takes over (default: 3
    intervals, at least 10 s)."""
    checks: bool = True
    """Run the component checks of /api/health/detailed with each sample."""
    retention_days: int = Field(default=30, ge=1, le=3650)
    """Samples are kept this long: at full resolution for a day, then as 5-minute means; beyond it only
    hourly means are kept, for a year."""
    repeat_interval_s: float = Field(default=4 * 3600.0, ge=1)
    """A firing alert is sent again this often until it resolves or is acknowledged (`4h` works too)."""
    log_retention_days: int = Field(default=30, ge=1, le=3650)
    """Rotated service and alert log files older than this are deleted."""
    retry_max: int = Field(default=8, ge=0, le=100)
    """Attempts per notification before a channel's delivery is given up (the alert stays stored)."""
    retry_backoff_s: float = Field(default=5.0, gt=0)
    """First wait before a failed delivery is retried; it doubles each time, up to an hour."""
    no_data_s: float = Field(default=300.0, ge=0)
    """A rule whose figure is missing from the newest samples (request figures when no request came in)
    keeps its state this long, then resolves: sparse traffic does not flap an alert (`5m` works too)."""
    leak_window_s: float = Field(default=3600.0, ge=10)
    """Memory that rose steadily over this window counts as a leak (`rss_growth_mb_per_hour`)."""
    public_url: str | None = None
    """The service's address as people reach it (e.g. `https://notes.example.com`), for the dashboard
    link in alert messages."""
    rules: dict[str, RuleSettings] = Field(default_factory=dict)
    """Alert rules by name, merged over the defaults (see DEFAULT_RULES)."""
    channels: list[ChannelSettings] = Field(
        default_factory=lambda: [ChannelSettings(name="log", type="log", min_severity="info")]
    )
    """Alert channels; default: the log file `<data dir>/logs/alerts.jsonl`."""

    _durations = field_validator(
        "interval_s",
        "lease_s",
        "repeat_interval_s",
        "retry_backoff_s",
        "leak_window_s",
        "no_data_s",
        mode="before",
    )(classmethod(lambda cls, v: seconds(v)))

    @field_validator("rules", mode="before")
    @classmethod
    def _merge_rules(cls, v: Any) -> Any:
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise ValueError("monitor.rules is a mapping of rule name to its fields")
        merged: dict[str, Any] = {name: dict(fields) for name, fields in DEFAULT_RULES.items()}
        for name, fields in v.items():
            if isinstance(fields, RuleSettings):
                fields = fields.model_dump(by_alias=True)
            if not isinstance(fields, dict):
                raise ValueError(f"monitor.rules.{name} must be a mapping of fields, not {fields!r}")
            merged[name] = {**merged.get(name, {}), **fields}
        return merged

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, v: list[ChannelSettings]) -> list[ChannelSettings]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique; repeated: {', '.join(dupes)}")
        return v

    @property
    def lease_seconds(self) -> float:
        return self.lease_s if self.lease_s is not None else max(10.0, 3 * self.interval_s)

    def active_rules(self) -> dict[str, RuleSettings]:
        return {name: r for name, r in self.rules.items() if r.enabled}
