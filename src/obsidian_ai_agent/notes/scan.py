"""Finding a vault's sources: include/exclude globs, no symlink out of the vault."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

DEFAULT_INCLUDE = ["**/*.md", "**/*.markdown", "**/*.pdf"]
DEFAULT_EXCLUDE = [".obsidian/**", ".trash/**", ".git/**"]

_KINDS: dict[str, Literal["note", "pdf"]] = {".md": "note", ".markdown": "note", ".pdf": "pdf"}


@dataclass(frozen=True)
class ScannedFile:
    rel_path: str  # POSIX, relative to the vault root
    abs_path: Path  # the path inside the vault (symlinks not resolved)
    kind: Literal["note", "pdf"]
    size: int
    mtime_ns: int


def kind_of(path: str | Path) -> Literal["note", "pdf"] | None:
    """The source kind for a file name, or None when it is not a source."""
    return _KINDS.get(os.path.splitext(str(path))[1].lower())


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a gitignore-like glob over POSIX relative paths.

    `*` and `?` do not cross `/`; `**` matches across directories (`**/` also matches no directory,
    `/**` everything below); `[...]` is a character class. A pattern without a `/` (other than a
    trailing one) matches at any depth, a leading `/` anchors at the root, a trailing `/` means
    everything inside that directory.
    """
    pat = pattern.strip().replace("\\", "/")
    if pat.endswith("/"):
        pat += "**"
    if pat.startswith("/"):
        pat = pat.lstrip("/")
    elif "/" not in pat:
        pat = "**/" + pat
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**", i):
            j = i + 2
            while j < n and pat[j] == "*":
                j += 1
            at_start = i == 0 or pat[i - 1] == "/"
            if at_start and j < n and pat[j] == "/":
                out.append("(?:.*/)?")  # '**/' : zero or more directories
                i = j + 1
            elif at_start and j == n:
                out.append(".*")  # trailing '**' : everything
                i = j
            else:
                out.append(".*")
                i = j
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                i += 1
            else:
                body = pat[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def matches(pattern: str, rel_path: str) -> bool:
    """Does `pattern` match `rel_path` or one of its parent directories?"""
    rx = glob_to_regex(pattern)
    if rx.match(rel_path):
        return True
    parts = rel_path.split("/")
    return any(rx.match("/".join(parts[:k])) for k in range(1, len(parts)))


def matches_any(patterns: Iterable[str], rel_path: str) -> bool:
    return any(matches(p, rel_path) for p in patterns)


def is_inside(root: Path, path: Path) -> bool:
    """Is `path`, with every symlink resolved, inside `root` (also resolved)?"""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def _dir_excluded(rel_dir: str, exclude: list[str]) -> bool:
    """Prune a directory when an exclude pattern covers everything inside it."""
    for pat in exclude:
        if matches(pat, rel_dir):
            return True
        p = pat.strip()
        if p.endswith("/**") and matches(p[:-3], rel_dir):
            return True
    return False


def scan_vault(
    root: Path, include: list[str] | None = None, exclude: list[str] | None = None
) -> list[ScannedFile]:
    """Every Markdown note and PDF under `root` that `include` selects and `exclude` does not.

    Symlinks are followed only when their target is inside the vault, each real directory is walked
    once (no loops), unreadable directories and files are skipped. Sorted by `rel_path`.
    """
    include = list(DEFAULT_INCLUDE if include is None else include)
    exclude = list(DEFAULT_EXCLUDE if exclude is None else exclude)
    root = Path(root)
    real_root = root.resolve()
    found: dict[str, ScannedFile] = {}
    seen_dirs: set[tuple[int, int]] = set()
    linked_dirs: list[tuple[Path, str]] = []  # walked after the real tree, so real paths win

    def walk(directory: Path, rel_dir: str) -> None:
        try:
            st = directory.stat()
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            return
        seen_dirs.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            path = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                if is_link and not is_inside(real_root, path):
                    continue
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = not is_dir and entry.is_file(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                if _dir_excluded(rel, exclude):
                    continue
                if is_link:
                    linked_dirs.append((path, rel))
                else:
                    walk(path, rel)
                continue
            if not is_file:
                continue
            kind = kind_of(entry.name)
            if kind is None or not matches_any(include, rel) or matches_any(exclude, rel):
                continue
            try:
                fst = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            found[rel] = ScannedFile(rel, path, kind, fst.st_size, fst.st_mtime_ns)

    walk(root, "")
    while linked_dirs:
        walk(*linked_dirs.pop(0))
    return [found[k] for k in sorted(found)]
