"""`smoke`: the post-deployment checks of the checklist's section 4 against a running server, over HTTP.

Every main route answering with the right shape, data integrity (a note written, found by keyword and by
meaning, removed again; or, with a read key, a note of the index found again by its title), a second
identical question answered from the cache, the job runner alive, the SLA timings, and a bounded burst
of concurrent requests. It talks HTTP only (it imports nothing of `api/`), and never leaves the
operator's data changed: the one note it writes is marked and deleted. The key is sent, never shown.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

Status = Literal["pass", "warn", "fail", "skip"]
TIMEOUT = 30.0
# The SLAs of the deployment checklist, in milliseconds.
SLA_MS = {"health": 100.0, "status": 100.0, "cached_answer": 500.0, "search": 1000.0, "generation": 2000.0}
SAMPLES = 5  # timings are medians: one slow sample on a busy host is not a breach
PROBE_QUERY = "overview"
WAIT_SECONDS = 60.0  # how long a written or removed note may take to show in search
WEB_JOB_SECONDS = 120.0
METRIC = "oaa_http_requests"


@dataclass
class Check:
    name: str
    status: Status
    reason: str
    ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    url: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "warn", "fail", "skip")}
        return {
            "ok": self.ok,
            "url": self.url,
            "counts": counts,
            "checks": [c.to_dict() for c in self.checks],
        }


class _Result(Exception):
    """Raised by a check for anything but a pass; returning a string is a pass."""

    def __init__(self, status: Status, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.details = status, reason, details


def _fail(reason: str, **details: Any) -> _Result:
    return _Result("fail", reason, **details)


def _warn(reason: str, **details: Any) -> _Result:
    return _Result("warn", reason, **details)


def _skip(reason: str) -> _Result:
    return _Result("skip", reason)


def public_url(url: str) -> str:
    """The URL without credentials (they would be a secret in the report)."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except Exception:
        return url.rsplit("@", 1)[-1]


def _message(resp: httpx.Response) -> str:
    """The server's error message (its `{"error": {"message"}}`), else the status line."""
    try:
        msg = resp.json()["error"]["message"]
        return f"{resp.status_code}: {msg}"
    except (ValueError, KeyError, TypeError):
        return f"{resp.status_code} {resp.reason_phrase}".strip()


def _missing(body: Any, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if not isinstance(body, dict) or k not in body]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Smoke:
    """One run against one server; `run()` gives the report."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        concurrency: int = 100,
        web_url: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.concurrency = concurrency
        self.web_url = web_url
        self.timeout = timeout
        self.client = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)
        self.status: dict[str, Any] = {}
        self.probe: list[dict[str, Any]] = []  # the results of the probe search
        self.known: dict[str, Any] | None = None  # a note of the index: path, title
        self.marker = f"oaasmoke{uuid.uuid4().hex[:16]}"
        self.timings: dict[str, list[float]] = {}
        self.first_answer: dict[str, Any] = {}

    # -- HTTP ---------------------------------------------------------------------------------------

    def call(self, method: str, path: str, **kw: Any) -> tuple[httpx.Response, float]:
        t0 = time.perf_counter()
        try:
            resp = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise _fail(f"{method} {path}: no answer ({type(e).__name__}: {e})") from None
        return resp, (time.perf_counter() - t0) * 1000

    def timed(self, name: str, method: str, path: str, **kw: Any) -> httpx.Response:
        resp, ms = self.call(method, path, **kw)
        if resp.status_code < 400:
            self.timings.setdefault(name, []).append(ms)
        return resp

    def search(self, query: str, mode: str | None = None, k: int = 10) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"query": query, "k": k}
        if mode:
            body["mode"] = mode
        resp = self.timed("search", "POST", "/api/search", json=body)
        if resp.status_code != 200:
            raise _fail(f"POST /api/search ({mode or 'default'} mode) answered {_message(resp)}")
        results = resp.json().get("results")
        if not isinstance(results, list):
            raise _fail("POST /api/search answered without a `results` list")
        return results

    # -- routes -------------------------------------------------------------------------------------

    def check_health(self) -> str:
        for _ in range(SAMPLES):
            resp = self.timed("health", "GET", "/health")
            if resp.status_code != 200:
                raise _fail(f"GET /health answered {_message(resp)}")
        body = resp.json()
        if missing := _missing(body, ("status", "version", "uptime_s")):
            raise _fail(f"GET /health lacks {', '.join(missing)}")
        if body["status"] != "ok":
            raise _fail(f"GET /health says {body['status']!r}")
        return f"ok, version {body['version']}, up {body['uptime_s']:.0f} s"

    def check_status(self) -> str:
        for _ in range(SAMPLES):
            resp = self.timed("status", "GET", "/status")
            if resp.status_code != 200:
                raise _fail(f"GET /status answered {_message(resp)}")
        body = resp.json()
        wanted = ("version", "index", "embedding", "llm_provider", "queue", "job_runner", "warm")
        if missing := _missing(body, wanted) or _missing(body.get("index"), ("sources", "chunks", "vectors")):
            raise _fail(f"GET /status lacks {', '.join(missing)}")
        self.status = body
        index = body["index"]
        if not body["warm"].get("ready"):
            raise _warn(f"the worker is not warm: {body['warm'].get('error')}")
        return (
            f"{index['sources']} sources, {index['chunks']} chunks, {index['vectors']} vectors, "
            f"model {body['embedding'].get('model')}, answers by {body['llm_provider']}"
        )

    def check_detailed_health(self) -> str:
        resp, _ = self.call("GET", "/api/health/detailed")
        if resp.status_code == 403:
            raise _skip("needs an admin key")
        if resp.status_code != 200:
            raise _fail(f"GET /api/health/detailed answered {_message(resp)}")
        body = resp.json()
        if missing := _missing(body, ("status", "components", "system")):
            raise _fail(f"GET /api/health/detailed lacks {', '.join(missing)}")
        bad = {n: c for n, c in body["components"].items() if c.get("state") != "ok"}
        summary = "; ".join(f"{n} {c.get('state')}: {c.get('message')}" for n, c in bad.items())
        if body["status"] == "down":
            raise _fail(summary or "the server says it is down", components=list(bad))
        if bad:
            raise _warn(summary, components=list(bad))
        return f"every component ok: {', '.join(body['components'])}"

    def check_metrics(self) -> str:
        resp, _ = self.call("GET", "/metrics")
        if resp.status_code == 403:
            raise _skip("needs an admin key")
        if resp.status_code != 200:
            raise _fail(f"GET /metrics answered {_message(resp)}")
        if not resp.headers.get("content-type", "").startswith("text/plain") or METRIC not in resp.text:
            raise _fail(f"GET /metrics is not a Prometheus exposition with {METRIC}")
        series = sum(1 for line in resp.text.splitlines() if line and not line.startswith("#"))
        return f"Prometheus text, {series} series"

    def check_jobs(self) -> str:
        resp, _ = self.call("GET", "/api/jobs")
        if resp.status_code == 403:
            raise _skip("needs an admin key")
        if resp.status_code != 200:
            raise _fail(f"GET /api/jobs answered {_message(resp)}")
        jobs = resp.json().get("jobs")
        if not isinstance(jobs, list) or _missing(
            jobs[0] if jobs else {"id": 0, "status": ""}, ("id", "status")
        ):
            raise _fail("GET /api/jobs does not list jobs with id and status")
        return f"{len(jobs)} recent job(s) listed"

    def check_job_runner(self) -> str:
        if not self.status:
            raise _skip("no /status to read")
        queue = self.status.get("queue", {})
        figures = ", ".join(f"{n} {s}" for s, n in queue.items()) or "empty"
        if self.status.get("job_runner"):
            return f"the worker that answered runs jobs; queue: {figures}"
        if queue.get("queued", 0):
            raise _fail(f"no job runner in the worker that answered and jobs wait; queue: {figures}")
        raise _warn(f"the worker that answered runs no jobs (server.run_jobs is off?); queue: {figures}")

    def check_search(self) -> str:
        results = []
        for _ in range(3):
            results = self.search(PROBE_QUERY)
        sources = int(self.status.get("index", {}).get("sources", 0) or 0)
        if not results:
            if sources:
                raise _fail(f"search for {PROBE_QUERY!r} found nothing in an index of {sources} sources")
            raise _warn("the index is empty: search has nothing to find")
        wanted = ("path", "title", "snippet", "score", "link")
        if missing := _missing(results[0], wanted):
            raise _fail(f"a search result lacks {', '.join(missing)}")
        self.probe = results
        self.known = {"path": results[0]["path"], "title": results[0]["title"]}
        return f"{len(results)} results for {PROBE_QUERY!r}, first {results[0]['path']}"

    def check_related(self) -> str:
        if self.known is None:
            raise _skip("no note to ask about")
        resp, _ = self.call("POST", "/api/related", json={"path": self.known["path"], "k": 5})
        if resp.status_code != 200:
            raise _fail(f"POST /api/related answered {_message(resp)}")
        body = resp.json()
        if _missing(body, ("path", "related")) or not isinstance(body["related"], list):
            raise _fail("POST /api/related lacks `path` and a `related` list")
        return f"{len(body['related'])} notes related to {self.known['path']}"

    # -- data integrity -----------------------------------------------------------------------------

    def _until(self, found: Callable[[], bool], want: bool) -> bool:
        deadline = time.monotonic() + WAIT_SECONDS
        while found() != want:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def check_integrity(self) -> str:
        path = f"{self.marker}.md"
        title = f"OAA smoke test {self.marker}"
        sentence = f"The smoke test marker {self.marker} proves that a written note is found again."
        note = f"# {title}\n\n{sentence}\n\nWritten by `obsidian-ai-agent smoke`, which removes it.\n"
        resp, _ = self.call(
            "PUT",
            f"/api/notes/{path}",
            params={"wait": "true"},
            content=note.encode(),
            headers={"Content-Type": "text/markdown"},
        )
        if resp.status_code in (403, 409):
            why = "the key has no write scope"
            if resp.status_code == 409:
                why = f"the server writes no notes ({_message(resp)})"
            return self._integrity_read_only(why)
        if resp.status_code not in (200, 202):
            raise _fail(f"PUT /api/notes/{path} answered {_message(resp)}")

        def keyword() -> bool:
            return any(r["path"] == path for r in self.search(self.marker, "keyword"))

        try:
            if resp.json().get("status") == "failed":
                raise _fail(f"indexing the written note failed: {resp.json().get('error')}")
            if not self._until(keyword, True):
                raise _fail(f"the written note {path} is not found by its marker within {WAIT_SECONDS:g} s")
            semantic = [r["path"] for r in self.search(sentence, "semantic", 5)]
            if path not in semantic:
                raise _fail(f"a semantic search for the note's own sentence does not find {path}")
        finally:
            gone, _ = self.call("DELETE", f"/api/notes/{path}", params={"wait": "true"})
        if gone.status_code not in (200, 202):
            raise _fail(f"DELETE /api/notes/{path} answered {_message(gone)}; remove it by hand")
        if not self._until(keyword, False):
            raise _fail(f"the removed note {path} is still found after {WAIT_SECONDS:g} s")
        return f"wrote {path}, found it by keyword and by meaning, removed it"

    def _integrity_read_only(self, why: str) -> str:
        if self.known is None:
            raise _skip(f"{why}, and search found no note to check")
        path, title = self.known["path"], self.known["title"]
        for mode in ("keyword", "semantic"):
            if path not in [r["path"] for r in self.search(title, mode)]:
                raise _fail(f"a {mode} search for the title {title!r} does not find {path}")
        return f"{why}: {path} is found again by its title, by keyword and by meaning"

    # -- answers ------------------------------------------------------------------------------------

    def check_answer_cache(self) -> str:
        question = f"What is {self.known['title']}?" if self.known else "What is in these notes?"
        answers = []
        for i in range(3):
            resp, ms = self.call("POST", "/api/ask", json={"question": question})
            if resp.status_code != 200:
                raise _fail(f"POST /api/ask answered {_message(resp)}")
            body = resp.json()
            if missing := _missing(body, ("text", "mode", "citations", "cached")):
                raise _fail(f"POST /api/ask lacks {', '.join(missing)}")
            answers.append(body)
            self.timings.setdefault("generation" if i == 0 else "cached_answer", []).append(ms)
        self.first_answer = answers[0]
        if not answers[1]["cached"]:
            raise _fail("a second identical question was not answered from the cache")
        return f"the second identical question came from the cache ({answers[0]['mode']} answer)"

    # -- web pages ----------------------------------------------------------------------------------

    def check_web(self) -> str:
        if not self.web_url:
            raise _skip("no --web-url given")
        resp, _ = self.call("POST", "/api/index_web", json={"url": self.web_url})
        if resp.status_code != 202:
            raise _fail(f"POST /api/index_web answered {_message(resp)}")
        job = resp.json()
        job_id = job["job_id"]
        deadline = time.monotonic() + WEB_JOB_SECONDS
        while job.get("status") in ("queued", "running"):
            if time.monotonic() > deadline:
                raise _fail(f"job {job_id} indexing {self.web_url} did not finish in {WEB_JOB_SECONDS:g} s")
            time.sleep(0.5)
            resp, _ = self.call("GET", f"/api/jobs/{job_id}")
            if resp.status_code == 403:
                raise _warn(f"job {job_id} queued; following it needs an admin key")
            if resp.status_code != 200:
                raise _fail(f"GET /api/jobs/{job_id} answered {_message(resp)}")
            job = resp.json()
        if job["status"] != "succeeded":
            raise _fail(f"job {job_id} indexing {self.web_url} {job['status']}: {job.get('error')}")
        return f"job {job_id} indexed {self.web_url}"

    # -- SLAs and load ------------------------------------------------------------------------------

    def sla(self, name: str) -> Check:
        limit = SLA_MS[name]
        label = f"sla_{name}"
        samples = self.timings.get(name, [])
        if name == "generation":
            provider = self.status.get("llm_provider")
            if provider in (None, "extractive"):
                return Check(label, "skip", "no LLM configured (answers are extracts)")
            if self.first_answer.get("cached"):
                return Check(label, "skip", "the first question was already cached: no generation timed")
        if not samples:
            return Check(label, "skip", "not measured (its check did not get that far)")
        ms = statistics.median(samples)
        status: Status = "pass" if ms < limit else "fail"
        return Check(
            label, status, f"median {ms:.0f} ms over {len(samples)} (SLA < {limit:.0f} ms)", round(ms, 1)
        )

    async def _burst(self) -> list[tuple[str, int | str, float]]:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url, headers=self.headers, timeout=self.timeout, limits=limits
        ) as client:

            async def one(i: int) -> tuple[str, int | str, float]:
                kind = "health" if i % 2 == 0 else "search"
                t0 = time.perf_counter()
                try:
                    if kind == "health":
                        resp = await client.get("/health")
                    else:
                        resp = await client.post("/api/search", json={"query": PROBE_QUERY, "k": 5})
                    outcome: int | str = resp.status_code
                except httpx.HTTPError as e:
                    outcome = type(e).__name__
                return kind, outcome, (time.perf_counter() - t0) * 1000

            return await asyncio.gather(*(one(i) for i in range(self.concurrency)))

    def check_load(self) -> str:
        t0 = time.perf_counter()
        results = asyncio.run(self._burst())
        seconds = time.perf_counter() - t0
        ms = [r[2] for r in results]
        errors = [r for r in results if not (isinstance(r[1], int) and r[1] < 400)]
        details = {
            "requests": len(results),
            "errors": len(errors),
            "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "seconds": round(seconds, 2),
        }
        line = (
            f"{len(results)} requests at once (health and search): {len(errors)} errors, "
            f"p50 {details['p50_ms']:.0f} ms, p99 {details['p99_ms']:.0f} ms, {seconds:.1f} s in all"
        )
        if errors:
            kinds: dict[str, int] = {}
            for _, outcome, _ in errors:
                kinds[str(outcome)] = kinds.get(str(outcome), 0) + 1
            seen = ", ".join(f"{n} x {o}" for o, n in kinds.items())
            hint = " (429: rate limited; lower --concurrency)" if "429" in kinds else ""
            raise _fail(f"{line}; {seen}{hint}", **details)
        raise _Result("pass", line, **details)

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> Report:
        checks: list[Check] = []

        def do(name: str, fn: Callable[[], str]) -> Check:
            t0 = time.perf_counter()
            try:
                check = Check(name, "pass", fn())
            except _Result as r:
                check = Check(name, r.status, r.reason, details=r.details)
            except Exception as e:  # a check that breaks is a failed check, not a traceback
                check = Check(name, "fail", f"the check itself failed: {type(e).__name__}: {e}")
            check.ms = round((time.perf_counter() - t0) * 1000, 1)
            checks.append(check)
            return check

        with self.client:
            if do("health", self.check_health).status == "fail":
                return Report(public_url(self.url), checks)  # nothing else can answer either
            if do("status", self.check_status).status == "fail":
                return Report(public_url(self.url), checks)  # the key is refused, or the index unreadable
            for name, fn in (
                ("detailed_health", self.check_detailed_health),
                ("metrics", self.check_metrics),
                ("jobs", self.check_jobs),
                ("job_runner", self.check_job_runner),
                ("search", self.check_search),
                ("related", self.check_related),
                ("integrity", self.check_integrity),
                ("answer_cache", self.check_answer_cache),
                ("web", self.check_web),
            ):
                do(name, fn)
            for name in SLA_MS:
                checks.append(self.sla(name))
            do("load", self.check_load)
        return Report(public_url(self.url), checks)


def run_smoke(
    url: str, key: str | None = None, *, concurrency: int = 100, web_url: str | None = None
) -> Report:
    """Every smoke check against the server at `url`; the key is sent as a bearer token, never reported."""
    return Smoke(url, key, concurrency=concurrency, web_url=web_url).run()
