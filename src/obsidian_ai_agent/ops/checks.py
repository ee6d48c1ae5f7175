"""The component checks behind /api/health/detailed and the monitor: each one exercises its component for
real (a query and an integrity check, a kNN on the live matrix, a probe embedding, the LLM server's
`/models`, free disk, a write to the data directory) and returns a message and details, or raises
CheckResult with a state other than ok."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("obsidian_ai_agent.ops")

State = Literal["ok", "degraded", "down"]
RANK: dict[str, int] = {"ok": 0, "degraded": 1, "down": 2}
# A component check that takes longer than this is reported down (its thread is abandoned).
CHECK_TIMEOUT = 10.0
# The LLM server is asked with a short timeout: a health page must not wait for a slow model.
LLM_PROBE_TIMEOUT = 3.0
PROBE_TEXT = "health check of the embedding model"


class CheckResult(Exception):
    """Raised inside a check to report a state other than ok, with its message and details."""

    def __init__(self, state: State, message: str, **details: Any) -> None:
        super().__init__(message)
        self.state = state
        self.message = message
        self.details = details


def check_database(engine: Engine) -> tuple[str, dict[str, Any]]:
    store = engine.store
    counts = store.counts()
    integrity = store.quick_check()
    if integrity != "ok":
        raise CheckResult(
            "down",
            f"the index database fails its integrity check ({integrity}); restore a backup or reindex",
            **counts,
        )
    return f"{store.location}: {counts['chunks']} chunks, integrity ok", counts


def check_vectors(engine: Engine) -> tuple[str, dict[str, Any]]:
    vectors = engine.searcher.vectors
    vectors.refresh()
    if not len(vectors):
        raise CheckResult("degraded", "the index holds no vectors yet; index the vault", vectors=0)
    # A stored vector must find itself: the kNN runs on the real matrix (or the database's index).
    sample = engine.store.first_vector()
    hits = vectors.search(sample, 3) if sample is not None else []
    best = hits[0][1] if hits else -1.0
    dimension = int(sample.shape[0]) if sample is not None else 0
    details = {"vectors": len(vectors), "dimension": dimension, "best": round(best, 4)}
    if best < 0.99:
        raise CheckResult(
            "down", f"a stored vector did not find itself (best similarity {best:.3f})", **details
        )
    kind = "HNSW" if engine.store.backend == "postgres" else "exact kNN"
    return f"{kind} over {len(vectors)} vectors", details


def check_embedder(engine: Engine) -> tuple[str, dict[str, Any]]:
    embedder = engine.embedder
    vec = np.asarray(embedder.embed_query(PROBE_TEXT), dtype=np.float32)
    details = {"model": embedder.model_id, "dimension": int(embedder.dimension)}
    if (
        vec.shape != (embedder.dimension,)
        or not np.isfinite(vec).all()
        or abs(np.linalg.norm(vec) - 1) > 0.01
    ):
        raise CheckResult(
            "down", f"model {embedder.model_id} returned a malformed vector {vec.shape}", **details
        )
    return f"{embedder.model_id} embedded a probe text ({embedder.dimension} dimensions)", details


def _public_url(url: str) -> str:
    import httpx

    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except Exception:  # a malformed URL is shown as the setting says, minus anything before `@`
        return url.rsplit("@", 1)[-1]


def check_llm(engine: Engine) -> tuple[str, dict[str, Any]]:
    llm = engine.settings.llm
    if llm.provider == "extractive":
        return "none configured: answers are extracts of the notes", {"provider": "extractive"}
    if llm.provider == "llamacpp":
        from ..llm import LLMError, packaged_gguf

        try:
            path = Path(llm.model).expanduser() if llm.model else packaged_gguf()
        except LLMError as e:
            raise CheckResult("down", str(e), provider="llamacpp") from None
        details: dict[str, Any] = {"provider": "llamacpp", "model": str(path)}
        if not path.is_file():
            raise CheckResult("down", f"GGUF model file {path} does not exist; set llm.model", **details)
        if importlib.util.find_spec("llama_cpp") is None:
            raise CheckResult(
                "down",
                "llama-cpp-python is not installed: `pip install obsidian-ai-agent[local-llm]`",
                **details,
            )
        return f"model file {path.name} present", details
    return _probe_openai(engine)


def _probe_openai(engine: Engine) -> tuple[str, dict[str, Any]]:
    import httpx

    llm = engine.settings.llm
    where = _public_url(llm.base_url.rstrip("/"))
    details: dict[str, Any] = {"provider": "openai", "base_url": where, "model": llm.model or None}
    headers = {"Authorization": f"Bearer {llm.api_key.get_secret_value()}"} if llm.api_key else {}
    try:
        resp = httpx.get(
            llm.base_url.rstrip("/") + "/models",
            headers=headers,
            timeout=min(LLM_PROBE_TIMEOUT, llm.timeout),
        )
    except httpx.TimeoutException:
        raise CheckResult(
            "down", f"LLM server {where} did not answer within {LLM_PROBE_TIMEOUT:g} s", **details
        ) from None
    except httpx.HTTPError as e:
        raise CheckResult(
            "down", f"cannot reach LLM server {where}: {type(e).__name__}; is it running?", **details
        ) from None
    details["http_status"] = resp.status_code
    if resp.status_code in (401, 403):
        raise CheckResult("down", f"LLM server {where} refused the API key; set llm.api_key", **details)
    if resp.status_code == 404:
        return f"LLM server {where} answers (it lists no models)", details
    if resp.status_code >= 400:
        raise CheckResult("down", f"LLM server {where} answered {resp.status_code}", **details)
    try:
        ids = [str(m["id"]) for m in resp.json().get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        ids = []
    details["models"] = ids[:20]
    if llm.model and ids and not any(i == llm.model or i.split(":")[0] == llm.model for i in ids):
        raise CheckResult(
            "degraded", f"LLM server {where} is up but does not have model '{llm.model}'", **details
        )
    return f"LLM server {where} is up" + (f" with model '{llm.model}'" if llm.model else ""), details


def check_disk(engine: Engine) -> tuple[str, dict[str, Any]]:
    path = engine.settings.data_dir
    usage = shutil.disk_usage(path)
    floor = engine.settings.server.min_free_disk_mb * 1024 * 1024
    free_mb = usage.free // (1024 * 1024)
    details = {
        "path": str(path),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "min_free_bytes": floor,
    }
    if usage.free < floor / 10:
        raise CheckResult("down", f"only {free_mb} MB free in {path}; free space now", **details)
    if usage.free < floor:
        raise CheckResult(
            "degraded",
            f"{free_mb} MB free in {path}, under server.min_free_disk_mb "
            f"({engine.settings.server.min_free_disk_mb}); free some space",
            **details,
        )
    return f"{free_mb} MB free in {path}", details


def check_data_dir(engine: Engine) -> tuple[str, dict[str, Any]]:
    """A file can be made in the data directory and the index written: else every write would fail."""
    problem = engine.store.unwritable()
    details = {"path": str(engine.settings.data_dir)}
    if problem:
        raise CheckResult(
            "down",
            f"the data directory is not writable: {problem}; searches work, writes answer 503 until it is",
            **details,
        )
    return f"{engine.settings.data_dir} is writable", details


CHECKS: dict[str, Callable[[Engine], tuple[str, dict[str, Any]]]] = {
    "database": check_database,
    "data_dir": check_data_dir,
    "vector_search": check_vectors,
    "embedder": check_embedder,
    "llm": check_llm,
    "disk": check_disk,
}


def run_checks(engine: Engine, timeout: float = CHECK_TIMEOUT) -> dict[str, dict[str, Any]]:
    """Every check side by side in threads: {name: {state, message, details, latency_ms}}. A check that
    breaks or outlives `timeout` reports its component down; its thread is left to finish alone."""
    out: dict[str, dict[str, Any]] = {}
    pool = ThreadPoolExecutor(len(CHECKS), thread_name_prefix="check")
    try:
        started = time.perf_counter()
        futures = {name: pool.submit(_timed, fn, engine) for name, fn in CHECKS.items()}
        for name, future in futures.items():
            left = max(0.0, timeout - (time.perf_counter() - started))
            try:
                out[name] = future.result(timeout=left)
            except FutureTimeout:
                out[name] = {
                    "state": "down",
                    "message": f"the check did not finish within {timeout:g} s",
                    "details": {},
                    "latency_ms": round(timeout * 1000, 2),
                }
    finally:
        pool.shutdown(wait=False)
    return out


def _timed(fn: Callable[[Engine], tuple[str, dict[str, Any]]], engine: Engine) -> dict[str, Any]:
    t0 = time.perf_counter()
    state: State = "ok"
    details: dict[str, Any] = {}
    try:
        message, details = fn(engine)
    except CheckResult as r:
        state, message, details = r.state, r.message, r.details
    except Exception as e:  # a check that breaks reports its component down
        log.warning("health check %s failed", fn.__name__, exc_info=True)
        state, message = "down", f"{type(e).__name__}: {e}"
    return {
        "state": state,
        "message": message,
        "details": details,
        "latency_ms": round((time.perf_counter() - t0) * 1000, 2),
    }
