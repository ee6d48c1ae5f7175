"""ETA of a running job from measured per-stage throughput, weighted with the history of earlier jobs.

Work is counted in source bytes: a note's parse, embedding and write costs grow with its size, so
seconds per byte of each stage predicts the rest far better than seconds per note in a vault of
notes of very different lengths. Earlier jobs give a prior that counts as if `prior_weight` bytes of
this job had been seen: early on it dominates, by then end the job's own measurements do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..store.jobs import StageTiming

STAGES = ("parse", "embed", "write")
# How much the prior counts, as a share of the job's bytes: at 10 % done history and measurement weigh
# the same.
PRIOR_SHARE = 0.10


@dataclass
class EtaModel:
    prior: dict[str, float] = field(default_factory=dict)
    """Seconds per byte of each stage from earlier jobs."""
    prior_weight: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    nbytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    @classmethod
    def from_history(cls, history: Iterable[list[StageTiming]], job_bytes: int) -> EtaModel:
        """`history`: stage timings of earlier jobs, newest first; newer jobs count more (halving)."""
        sums: dict[str, list[float]] = {s: [0.0, 0.0] for s in STAGES}
        weight = 1.0
        seen = 0.0
        for job in history:
            for t in job:
                if t.stage in sums and t.bytes > 0:
                    sums[t.stage][0] += weight * t.seconds
                    sums[t.stage][1] += weight * t.bytes
            seen += weight * max((t.bytes for t in job if t.stage in sums), default=0)
            weight /= 2
        prior = {s: sec / b for s, (sec, b) in sums.items() if b > 0}
        return cls(prior=prior, prior_weight=min(seen, PRIOR_SHARE * job_bytes) if prior else 0.0)

    def observe(self, stage: str, seconds: float, nbytes: int) -> None:
        if stage in self.seconds:
            self.seconds[stage] += seconds
            self.nbytes[stage] += nbytes

    def seconds_per_byte(self, stage: str) -> float | None:
        b = self.nbytes[stage]
        w = self.prior_weight if stage in self.prior else 0.0
        if b + w <= 0:
            return None
        return (self.seconds[stage] + self.prior.get(stage, 0.0) * w) / (b + w)

    def remaining(self, bytes_total: int) -> float | None:
        """Seconds left for a job of `bytes_total` bytes, or None while nothing predicts it."""
        left = 0.0
        for stage in STAGES:
            rate = self.seconds_per_byte(stage)
            todo = max(0, bytes_total - self.nbytes[stage])
            if rate is None:
                if todo and stage == "embed":
                    return None
                continue
            left += todo * rate
        return left
