"""How parsing a hostile note grows with its size: CPU seconds for the alias bomb, and for notes of 4x
more aliases and tags than another (linear work is ~4x; the old list scans were ~16x, 32-65 s at the
larger size). The notes are the ones `tests/hostile/test_notes_hostile.py` builds.

Usage: python bench/hostile_notes.py [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from common import REPO_DIR, add_common_args, emit, goal, log
from obsidian_ai_agent.notes import default_token_counter, parse_markdown

sys.path.insert(0, str(REPO_DIR))
from tests.hostile.test_notes_hostile import alias_bomb, many_aliases, many_tags


def cpu_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args()
    counter = default_token_counter()
    parse_markdown(b"# warm\n\ntext\n", "w.md", counter)
    result: dict[str, object] = {}
    bomb = alias_bomb()
    result["alias_bomb_s"] = round(cpu_seconds(lambda: parse_markdown(bomb, "bomb.md", counter)), 3)
    for name, build, small, big in (
        ("aliases", many_aliases, 20_000, 80_000),
        ("tags", many_tags, 27_500, 110_000),
    ):
        a, b = build(small), build(big)
        t_small = cpu_seconds(lambda a=a: parse_markdown(a, "n.md", counter))
        t_big = cpu_seconds(lambda b=b: parse_markdown(b, "n.md", counter))
        ratio = t_big / max(t_small, 1e-6)
        result[name] = {
            "small": small,
            "big": big,
            "small_s": round(t_small, 3),
            "big_s": round(t_big, 3),
            "growth_for_4x_input": round(ratio, 2),
            "goal": goal(round(ratio, 2), "<=", 8),
        }
        log(f"{name}: {t_small:.2f} s -> {t_big:.2f} s ({ratio:.1f}x for 4x the note)")
    emit("hostile_notes", result, args.out)


if __name__ == "__main__":
    main()
