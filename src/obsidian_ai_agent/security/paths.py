"""The vault path guard: a path a client names (a pushed note, an uploaded PDF) becomes a file inside the
vault, or is refused with the reason.

Refused: empty paths, NUL and control characters, bidirectional overrides, backslashes, absolute paths,
drive letters (`C:`), `.` and `..` segments, empty segments, Obsidian's and git's own folders
(`.obsidian/`, `.trash/`, `.git/`), extensions that are not sources, paths the index excludes, and
anything that resolves (through symlinks) outside the vault. Clients send URL-encoded paths; they
arrive decoded here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..notes.scan import is_inside, matches_any

NOTE_SUFFIXES = (".md", ".markdown")
PDF_SUFFIXES = (".pdf",)
SOURCE_SUFFIXES = NOTE_SUFFIXES + PDF_SUFFIXES
# Folders that belong to Obsidian, its trash and git, never to notes (compared case-insensitively:
# macOS and Windows file systems are).
RESERVED_DIRS = frozenset({".obsidian", ".trash", ".git"})
MAX_PATH_CHARS = 1024
MAX_SEGMENT_BYTES = 255  # the longest file name ext4, APFS and NTFS all accept

# Embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they reorder how a name is shown.
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))

_DRIVE = re.compile(r"^[A-Za-z]:")


class PathRefused(ValueError):
    """A path that cannot be used; the message says why and what to send instead."""


@dataclass(frozen=True)
class VaultPath:
    rel: str
    """Vault-relative POSIX path, as the index names the source."""
    path: Path
    """The file inside the vault (not resolved: a symlink inside the vault stays a symlink)."""


def check_relative(rel: str, suffixes: Iterable[str] = NOTE_SUFFIXES) -> str:
    """`rel` if it is a safe vault-relative path with one of `suffixes`, else `PathRefused`.

    Pure string checks, no file system: see `vault_path` for the full guard."""
    allowed = tuple(s.lower() for s in suffixes)
    if not rel:
        raise PathRefused("the path is empty; name a file inside the vault, e.g. 'Folder/Note.md'")
    if len(rel) > MAX_PATH_CHARS:
        raise PathRefused(f"the path is longer than {MAX_PATH_CHARS} characters")
    if "\x00" in rel or any(unicodedata.category(c) == "Cc" for c in rel):
        raise PathRefused("the path contains NUL or control characters")
    bidi = next((c for c in rel if c in BIDI_CONTROLS), None)
    if bidi is not None:
        raise PathRefused(
            f"the path contains the bidirectional control character U+{ord(bidi):04X}, which makes a name "
            "display differently from what it is (e.g. 'txt.md' shown for 'dm.txt'); remove it"
        )
    if "\\" in rel:
        raise PathRefused("the path contains a backslash; separate folders with '/'")
    if _DRIVE.match(rel):
        raise PathRefused("the path starts with a drive letter; give a path relative to the vault")
    if rel.startswith("/"):
        raise PathRefused("the path is absolute; give a path relative to the vault, e.g. 'Folder/Note.md'")
    segments = rel.split("/")
    for seg in segments:
        if seg in ("", ".", ".."):
            shown = "an empty" if not seg else f"a '{seg}'"
            raise PathRefused(
                f"the path has {shown} segment; give a plain path relative to the vault, "
                "without '.', '..' or '//'"
            )
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise PathRefused(f"a name in the path is longer than {MAX_SEGMENT_BYTES} bytes")
        if seg != seg.strip():
            raise PathRefused("a name in the path starts or ends with a space")
    if any(seg.lower() in RESERVED_DIRS for seg in segments[:-1]):
        reserved = next(seg for seg in segments if seg.lower() in RESERVED_DIRS)
        raise PathRefused(f"the path is inside '{reserved}/', which holds Obsidian's or git's own files")
    if not rel.lower().endswith(allowed):
        raise PathRefused(
            f"'{segments[-1]}' is not a file this route takes; the name must end with {', '.join(allowed)}"
        )
    if segments[-1].lower() in allowed:
        raise PathRefused(f"'{segments[-1]}' has no name before its extension")
    return rel


def vault_path(
    root: Path,
    rel: str,
    suffixes: Iterable[str] = NOTE_SUFFIXES,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> VaultPath:
    """The file `rel` names inside the vault `root`, or `PathRefused`.

    Besides `check_relative`: with `include`/`exclude` (the index's globs) a path the index would not
    pick up is refused, and a path that resolves outside the vault (a symlinked folder or file) is too."""
    rel = check_relative(rel, suffixes)
    if exclude is not None and matches_any(exclude, rel):
        raise PathRefused(f"'{rel}' is excluded from the index by the `exclude` setting")
    if include is not None and not matches_any(include, rel):
        raise PathRefused(f"'{rel}' is not selected by the `include` setting, so it would not be indexed")
    full = Path(root) / rel
    if not is_inside(root, full):
        raise PathRefused(f"'{rel}' resolves outside the vault (through a symlink)")
    if full.is_dir():
        raise PathRefused(f"'{rel}' is a folder in the vault, not a file")
    return VaultPath(rel, full)
