"""Lanes: which lane a kind of job goes to, the limits a claim honours, and the retry backoff."""

from __future__ import annotations

import random

from ..config import LaneSettings, Settings
from ..store.jobs import LaneLimit

KINDS = ("reindex", "upsert_note", "delete_note", "index_pdf", "index_web", "backup", "answer_vectors")


def lane_for(
    settings: Settings, kind: str, lane: str | None = None, *, nbytes: int | None = None
) -> LaneSettings:
    """The lane a job runs in: the one asked for, else the route of its kind, else `bulk`. Notes of more
    than `jobs.big_note_bytes` (`nbytes`) take the reindex route instead of the small-note lane: they
    cannot finish in its time."""
    name = lane or settings.jobs.routes.get(kind) or "bulk"
    if (
        kind == "upsert_note"
        and name == settings.jobs.routes.get(kind)  # the small-note lane, asked for or by default (watch)
        and nbytes is not None
        and nbytes > settings.jobs.big_note_bytes
    ):
        name = settings.jobs.routes.get("reindex") or "bulk"
    try:
        return settings.lane(name)
    except KeyError:
        known = ", ".join(x.name for x in settings.lanes)
        raise ValueError(f"unknown lane {name!r}; lanes: {known}") from None


def limits(settings: Settings, only: list[str] | None = None) -> list[LaneLimit]:
    """Each lane's priority and concurrency, as `JobStore.claim` needs them (highest priority first)."""
    lanes = [x for x in settings.lanes if only is None or x.name in only]
    return [LaneLimit(x.name, x.priority, x.concurrency) for x in sorted(lanes, key=lambda x: -x.priority)]


def backoff_delay(lane: LaneSettings, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: attempt n waits up to backoff * 2**(n-1), capped, at least half of it.

    Half fixed, half random ("equal jitter"), so retries of many runners spread out but never hammer.
    """
    ceiling = min(lane.backoff_max, lane.backoff * (2 ** max(0, attempt - 1)))
    r = (rng or random).random()
    return ceiling / 2 + r * ceiling / 2
