"""Under concurrency a query's embedding is not held behind large model calls of other request threads,
and those calls do not run side by side, each with its own activations (issue 9, under load)."""

from __future__ import annotations

import threading
import time

from obsidian_ai_agent.embeddings import EncodeGate


def test_the_model_runs_one_batch_at_a_time_queries_first_and_large_calls_in_arrival_order() -> None:
    gate = EncodeGate()
    order: list[str] = []
    running = 0
    most = 0
    lock = threading.Lock()

    def call(name: str, n: int, hold: float, batches: int = 1) -> None:
        nonlocal running, most
        if n <= EncodeGate.SMALL:
            with gate(n):
                order.append(name)
            return
        with gate.call() as ticket:
            for _ in range(batches):
                with gate(n, ticket):
                    with lock:
                        running += 1
                        most = max(most, running)
                        order.append(name)
                    time.sleep(hold)
                    with lock:
                        running -= 1

    first = threading.Thread(target=call, args=("large-0", 32, 0.1, 3))
    first.start()
    time.sleep(0.05)
    later = []
    for i in (1, 2, 3):  # each comes a little after the one before
        later.append(threading.Thread(target=call, args=(f"large-{i}", 32, 0.02, 2)))
        later[-1].start()
        time.sleep(0.01)
    query = threading.Thread(target=call, args=("query", 1, 0.0))
    query.start()
    for t in [first, *later, query]:
        t.join(10)
    assert most == 1
    # The query goes between the first call's batches; the large calls finish in the order they came.
    assert order.index("query") < order.index("large-1")
    assert order[order.index("large-1") :] == [
        "large-1",
        "large-1",
        "large-2",
        "large-2",
        "large-3",
        "large-3",
    ]
    assert order[:2] == ["large-0", "query"] or order.count("large-0") == 3


def test_a_large_call_is_not_starved_by_a_steady_stream_of_queries() -> None:
    """Four threads take the gate for queries back to back (as searches under load do); a large call
    (an answer's sentences) must still get its turn while they go on, not only once they stop."""
    gate = EncodeGate()
    stop = threading.Event()
    queries = 0

    def search() -> None:
        nonlocal queries
        while not stop.is_set():
            with gate(1):
                time.sleep(0.01)
                queries += 1

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    done = threading.Event()

    def answer() -> None:
        with gate.call() as ticket, gate(24, ticket):
            done.set()

    try:
        time.sleep(0.1)
        threading.Thread(target=answer, daemon=True).start()
        got_in = done.wait(timeout=30)
        during = queries
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert got_in, "the large call waited until every query had stopped"
    assert during > 0 and queries > during  # queries ran before and after it: it shared, not stalled them
