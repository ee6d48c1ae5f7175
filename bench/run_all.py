"""Run every benchmark, each in a fresh process, write bench/results/<name>.json and print one JSON object.

Usage: python bench/run_all.py [--only indexing search_latency chroma_peer mcp_latency] [--quick] [--fresh]
Other flags are passed to every benchmark that accepts them (e.g. `--queries 200`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
BENCHMARKS = ("indexing", "search_latency", "chroma_peer", "mcp_latency")


def accepted_flags(name: str) -> set[str]:
    """The long options a benchmark's parser knows (from its --help), so unknown ones are not passed."""
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / f"{name}.py"), "--help"], capture_output=True, text=True, check=False
    ).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", out)) - {"--help", "--out"}


def pass_through(extra: list[str], known: set[str]) -> list[str]:
    """The flags (with their values) of `extra` that this benchmark accepts."""
    out: list[str] = []
    keep = False
    for arg in extra:
        if arg.startswith("--"):
            keep = arg.split("=")[0] in known
        if keep:
            out.append(arg)
    return out


def summary(name: str, r: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one result."""
    if name == "indexing":
        idx, again = r["indexing"], r["reindex_unchanged"]
        return {
            "pipeline_chunks_per_s": idx["pipeline_chunks_per_s"],
            "raw_encoder_chunks_per_s": idx["raw_encoder_chunks_per_s"],
            "ratio": idx["goal_ratio"],
            "reindex_in_process_s": again["in_process"]["wall_seconds"],
            "reindex_cli_median_s": again["cli"]["median_wall_seconds"],
            "reindex_goal": again["goal_wall_seconds"],
            "reindex_zero_embedded": again["goal_zero_embedded"]["met"],
        }
    if name == "search_latency":
        return {
            "tiers": {
                str(t["chunks"]): {m: [v["p50_ms"], v["p99_ms"]] for m, v in t["modes"].items()}
                for t in r["tiers"]
            },
            "tiers_given_vector": {
                str(t["chunks"]): {m: [v["p50_ms"], v["p99_ms"]] for m, v in t["cached_query_vector"].items()}
                for t in r["tiers"]
            },
            "query_embedding": {
                str(t["chunks"]): [t["query_embedding"]["p50_ms"], t["query_embedding"]["p99_ms"]]
                for t in r["tiers"]
            },
            "tiers_format": "chunks -> mode -> [p50_ms, p99_ms]",
            "hybrid_p99_goal": r["goal_hybrid_p99_ms_at_largest"],
        }
    if name == "chroma_peer":
        return {"chunks": r["settings"]["chunks"], **r["ratios_ours_over_chroma"]}
    if name == "mcp_latency":
        return {
            "mcp_search": [r["mcp_search"]["p50_ms"], r["mcp_search"]["p99_ms"]],
            "api_search": [r["api_search"]["p50_ms"], r["api_search"]["p99_ms"]],
            "format": "[p50_ms, p99_ms]",
            "ratio_mcp_over_api": r["ratio_mcp_over_api"],
        }
    return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args, extra = p.parse_known_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in args.only:
        out = RESULTS_DIR / f"{name}.json"
        cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), *pass_through(extra, accepted_flags(name))]
        cmd += ["--out", str(out)]
        print(f"[run_all] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
        entry: dict[str, Any] = {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
        if proc.returncode == 0:
            result = json.loads(proc.stdout)
            entry.update(summary=summary(name, result), result_file=str(out.relative_to(BENCH_DIR.parent)))
        results[name] = entry
    doc = {"benchmarks": results, "seconds": round(time.perf_counter() - started, 1), "args": sys.argv[1:]}
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    (RESULTS_DIR / "run_all.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    sys.exit(max((e["exit_code"] for e in results.values()), default=0) != 0)


if __name__ == "__main__":
    main()
