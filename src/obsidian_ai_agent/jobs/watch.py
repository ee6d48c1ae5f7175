"""Watch: follow a vault's file changes (watchfiles, debounced) and index them as `interactive` jobs,
so an edited note is searchable within seconds without a full scan."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..engine import Engine
from ..notes import kind_of
from ..notes.scan import matches_any
from . import submit_delete, submit_notes, submit_reindex
from .runner import JobRunner

log = logging.getLogger(__name__)


class Watcher:
    """Submits a job per debounced batch of changes; a `JobRunner` (its own unless given) runs them."""

    def __init__(self, engine: Engine, vault: Path | None = None, runner: JobRunner | None = None) -> None:
        self.engine = engine
        self.root = engine.vault_root(vault)
        self.runner = runner
        self.settings = engine.settings
        self.lane = engine.settings.watch.lane
        self._stop = threading.Event()

    def relevant(self, path: Path) -> str | None:
        """The vault-relative path of a change worth indexing, or None."""
        try:
            rel = (
                path.resolve().relative_to(self.root).as_posix()
                if path.exists()
                else path.relative_to(self.root).as_posix()
            )
        except ValueError:
            try:
                rel = path.relative_to(self.root).as_posix()
            except ValueError:
                return None
        if (
            not kind_of(rel)
            or not matches_any(self.settings.include, rel)
            or matches_any(self.settings.exclude, rel)
        ):
            return None
        return rel

    def submit(self, changed: set[Path]) -> list[int]:
        """Jobs for one batch of changed paths: upserts for files present, deletes for files gone.

        A batch with both goes in one `upsert_note` job (it removes the paths whose files are gone after
        indexing the present ones), so a rename (the old path gone, the new one added) is seen as a
        move and keeps its vectors, as `index` does.
        """
        upserts: set[str] = set()
        deletes: set[str] = set()
        for path in changed:
            rel = self.relevant(path)
            if rel is None:
                continue
            (upserts if (self.root / rel).is_file() else deletes).add(rel)
        if upserts:
            return [submit_notes(self.engine, upserts | deletes, self.root, lane=self.lane)]
        if deletes:
            return [submit_delete(self.engine, deletes, lane=self.lane)]
        return []

    def run(self, *, scan_first: bool = True, on_batch: Callable[[list[int]], None] | None = None) -> None:
        """Watch until `stop()` (or Ctrl-C): an incremental reindex first, then each debounced change."""
        from watchfiles import watch

        own = self.runner is None
        runner = self.runner or JobRunner(self.engine)
        if own:
            runner.start()
        try:
            if scan_first:
                submit_reindex(self.engine, self.root)
            for changes in watch(
                self.root,
                debounce=self.settings.watch.debounce_ms,
                stop_event=self._stop,
                raise_interrupt=False,
                rust_timeout=1000,
                yield_on_timeout=False,
            ):
                ids = self.submit({Path(p) for _, p in changes})
                if ids:
                    log.info("watch: submitted jobs %s", ids)
                if on_batch is not None:
                    on_batch(ids)
        finally:
            if own:
                runner.stop()

    def stop(self) -> None:
        self._stop.set()
