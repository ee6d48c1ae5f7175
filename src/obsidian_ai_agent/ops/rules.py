"""Alert rules over stored samples: a rule holds when its condition is true in the newest sample and has
been true, sample after sample, for its `for` duration. Reading the samples from the store (rather than
keeping state in memory) lets a monitor that takes over from a dead one carry on where it stopped."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..monitoring_config import RuleSettings

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Verdict:
    rule: str
    settings: RuleSettings
    holds: bool
    value: float | None
    summary: str


def value_of(figures: dict[str, Any], metric: str) -> float | None:
    """A rule's figure in one sample (None when the sample has none, e.g. no requests in the interval)."""
    if metric.startswith("component."):
        v = (figures.get("components") or {}).get(metric.split(".", 1)[1])
    else:
        v = figures.get(metric)
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return float(v)


def _true(rule: RuleSettings, figures: dict[str, Any]) -> bool:
    v = value_of(figures, rule.metric)
    return v is not None and OPS[rule.op](v, rule.threshold)


def evaluate(
    name: str,
    rule: RuleSettings,
    samples: list[dict[str, Any]],
    now: float | None = None,
    no_data_s: float = math.inf,
) -> Verdict:
    """`samples` oldest first, each with `at`. Samples without the rule's figure (no request came in
    during an interval, say) are passed over: they neither break a run nor end one, so sparse traffic
    does not flap an alert. The rule holds when the newest sample with the figure is at most
    `no_data_s` old, meets the condition, and so does every sample with the figure back to one at least
    `for` seconds older."""
    valued = [s for s in samples if value_of(s, rule.metric) is not None]
    if not valued:
        return Verdict(name, rule, False, None, "")
    newest = valued[-1]
    value = value_of(newest, rule.metric)
    now = samples[-1]["at"] if now is None else now
    holds = False
    if now - newest["at"] <= no_data_s and _true(rule, newest):
        start = newest["at"]
        for s in reversed(valued):
            if not _true(rule, s):
                break
            start = s["at"]
        holds = newest["at"] - start >= rule.for_
    return Verdict(name, rule, holds, value, summary(rule, value, newest))


def still_firing(rule: RuleSettings, samples: list[dict[str, Any]], now: float, no_data_s: float) -> bool:
    """Whether an open alert of `rule` stays open although the rule no longer holds: its newest figure
    (at most `no_data_s` old) still meets the condition, or one did within `keep_firing_for`."""
    valued = [s for s in samples if value_of(s, rule.metric) is not None]
    if not valued or now - valued[-1]["at"] > no_data_s:
        return False
    if _true(rule, valued[-1]):
        return True
    return any(s["at"] >= now - rule.keep_firing_for and _true(rule, s) for s in valued)


def summary(rule: RuleSettings, value: float | None, figures: dict[str, Any]) -> str:
    text = rule.summary or f"{rule.metric} {{value}} {rule.op} {{threshold}}"
    fields = {
        "value": "?" if value is None else f"{value:g}",
        "threshold": f"{rule.threshold:g}",
        "value_pct": "?" if value is None else f"{value * 100:.1f}%",
        "threshold_pct": f"{rule.threshold * 100:g}%",
    }
    for key, v in fields.items():
        text = text.replace("{" + key + "}", v)
    if rule.metric.startswith("component.") or rule.metric == "component_worst":
        messages = figures.get("component_messages") or {}
        wanted = rule.metric.split(".", 1)[1] if "." in rule.metric else None
        said = [f"{n}: {m}" for n, m in messages.items() if wanted in (None, n)]
        if said:
            text += " (" + "; ".join(said) + ")"
    return text


def steady_growth(points: list[tuple[float, float]], window: float, min_rising: float = 0.7) -> float:
    """MB per hour that `points` [(time, MB), ...] grew by when they cover at least nine tenths of
    `window` seconds and rose steadily (at least `min_rising` of the steps up, the least-squares slope
    positive); else 0. One large allocation that stays is a step, not a leak: it fails the steadiness."""
    if len(points) < 6 or points[-1][0] - points[0][0] < 0.9 * window:
        return 0.0
    steps = [b[1] - a[1] for a, b in itertools.pairwise(points)]
    rising = sum(1 for d in steps if d > 0) / len(steps)
    if rising < min_rising:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var <= 0:
        return 0.0
    slope = sum((t - mt) * (v - mv) for t, v in points) / var  # MB per second
    return round(max(0.0, slope * 3600), 2)
