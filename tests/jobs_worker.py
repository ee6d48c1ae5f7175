"""Entry points for job tests that need real processes: `python -m tests.jobs_worker COMMAND ...`.

- `reindex DATA VAULT WINDOW`: submit (or resume) a reindex of VAULT and run it here; WINDOW chunks per
  embedding call, small so a test can kill the process between many checkpoints.
- `work DATA LOG [N]`: run a job runner until the queue is empty (and, given N, until N jobs exist, so
  several workers can all be running before the first job is submitted); `probe` jobs append
  `start|end id pid` lines to LOG (opened with O_APPEND, so lines of several processes never mix) and
  sleep `payload.sleep`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def probe_handler(log: Path) -> Any:
    def probe(ctx: Any) -> dict[str, Any]:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"start {ctx.job.id} {os.getpid()}\n".encode())
            deadline = time.monotonic() + float(ctx.job.payload.get("sleep", 0))
            while time.monotonic() < deadline:
                ctx.check()
                time.sleep(0.01)
            os.write(fd, f"end {ctx.job.id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        return {"pid": os.getpid()}

    return probe


def main(argv: list[str]) -> int:
    from obsidian_ai_agent import indexer, jobs
    from obsidian_ai_agent.config import load_settings
    from obsidian_ai_agent.engine import Engine

    command, data = argv[0], Path(argv[1])
    settings = load_settings(data_dir=data)
    with Engine(settings) as engine:
        if command == "reindex":
            indexer.EMBED_WINDOW = int(argv[3])
            job_id = jobs.submit_reindex(engine, Path(argv[2]))
            job = jobs.run(engine, job_id)
            print(json.dumps(job.to_dict()))
            return 0 if job.status == "succeeded" else 1
        if command == "work":
            jobs.register("probe", probe_handler(Path(argv[2])))
            runner = jobs.JobRunner(engine).start()
            print("ready", flush=True)
            expect = int(argv[3]) if len(argv) > 3 else 0
            while True:
                counts = engine.jobs.counts()
                idle = counts["queued"] == 0 and counts["running"] == 0
                if idle and sum(counts.values()) >= expect:
                    break
                time.sleep(0.1)
            runner.stop()
            return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
