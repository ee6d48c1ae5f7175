from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from notes_corpora import DEMO_VAULT, DOCS_VAULT, PDFS

from obsidian_ai_agent.notes.scan import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    glob_to_regex,
    is_inside,
    scan_vault,
)


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    shutil.copytree(DOCS_VAULT / "Getting Started", root / "Getting Started")
    shutil.copy(DOCS_VAULT / "Introduction.md", root / "Introduction.md")
    shutil.copy(PDFS / "text_known/pypdf_crazyones.pdf", root / "Papers.pdf")
    for hidden in (".obsidian", ".trash", ".git"):
        (root / hidden).mkdir()
        (root / hidden / "inside.md").write_text("# hidden\n")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "Notes.MARKDOWN").write_text("upper-case suffix\n")
    return root


def rels(files: list) -> list[str]:  # type: ignore[type-arg]
    return [f.rel_path for f in files]


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("**/*.md", "a.md", True),
        ("**/*.md", "a/b/c.md", True),
        ("*.md", "a/b/c.md", True),  # no slash: any depth, like .gitignore
        ("/*.md", "a/b.md", False),
        ("a/*.md", "a/b/c.md", False),
        ("a/**/c.md", "a/c.md", True),
        ("a/**/c.md", "a/x/y/c.md", True),
        (".obsidian/**", ".obsidian/plugins/x.md", True),
        ("Daily/", "Daily/2024/x.md", True),
        ("Dai?y/*.md", "Daily/x.md", True),
        ("[AB]*.md", "Archive.md", True),
        ("[!AB]*.md", "Archive.md", False),
        ("*.md", "a.md.bak", False),
        ("a+b(c).md", "a+b(c).md", True),
    ],
)
def test_globs_follow_gitignore_like_rules(pattern: str, path: str, hit: bool) -> None:
    assert bool(glob_to_regex(pattern).match(path)) is hit


def test_default_scan_finds_notes_and_pdfs_and_skips_hidden_folders(vault: Path) -> None:
    files = scan_vault(vault, DEFAULT_INCLUDE, DEFAULT_EXCLUDE)
    names = rels(files)
    assert names == sorted(names)
    assert "Introduction.md" in names and "Papers.pdf" in names
    assert "Getting Started/Statuses/Core Statuses.md" in names
    assert not any(n.startswith((".obsidian", ".trash", ".git")) for n in names)
    assert "image.png" not in names
    assert "Notes.MARKDOWN" not in names  # globs are case-sensitive, like the file system
    assert "Notes.MARKDOWN" in rels(scan_vault(vault, ["*.MARKDOWN"], []))
    pdf = next(f for f in files if f.rel_path == "Papers.pdf")
    assert pdf.kind == "pdf" and pdf.size == (vault / "Papers.pdf").stat().st_size and pdf.mtime_ns > 0
    assert pdf.abs_path == vault / "Papers.pdf"
    expected = len(list((vault / "Getting Started").rglob("*.md"))) + 2
    assert len(files) == expected


def test_include_and_exclude_globs(vault: Path) -> None:
    only_statuses = scan_vault(vault, ["Getting Started/Statuses/**"], [])
    assert only_statuses and all(n.startswith("Getting Started/Statuses/") for n in rels(only_statuses))
    no_statuses = scan_vault(vault, DEFAULT_INCLUDE, [*DEFAULT_EXCLUDE, "Statuses", "*.pdf"])
    assert not any("Statuses/" in n or n.endswith(".pdf") for n in rels(no_statuses))
    assert "Getting Started/Dates.md" in rels(no_statuses)
    assert "Getting Started/Statuses.md" in rels(no_statuses)  # a file, not the excluded folder
    with_hidden = scan_vault(vault, DEFAULT_INCLUDE, [])
    assert ".obsidian/inside.md" in rels(with_hidden)


def test_a_symlink_out_of_the_vault_is_not_followed(vault: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# secret\n")
    os.symlink(outside, vault / "linked-out")
    os.symlink(outside / "secret.md", vault / "secret-link.md")
    names = rels(scan_vault(vault, DEFAULT_INCLUDE, DEFAULT_EXCLUDE))
    assert not any("secret" in n or "linked-out" in n for n in names)
    assert not is_inside(vault, vault / "linked-out" / "secret.md")
    assert is_inside(vault, vault / "Introduction.md")


def test_symlinks_inside_the_vault_are_fine_and_loops_end(vault: Path) -> None:
    os.symlink(vault / "Introduction.md", vault / "Intro link.md")
    (vault / "sub").mkdir()
    (vault / "sub" / "note.md").write_text("x")
    os.symlink(vault, vault / "sub" / "loop")  # a loop back to the root
    os.symlink(vault / "sub", vault / "a-link-to-sub")  # sorts before the real folder
    names = rels(scan_vault(vault, DEFAULT_INCLUDE, DEFAULT_EXCLUDE))
    assert "Intro link.md" in names
    assert "sub/note.md" in names  # the real path wins over the link
    assert not any(n.startswith(("a-link-to-sub/", "sub/loop/")) for n in names)
    os.symlink(vault / "missing.md", vault / "broken.md")
    assert "broken.md" not in rels(scan_vault(vault, DEFAULT_INCLUDE, DEFAULT_EXCLUDE))


def test_an_unreadable_folder_does_not_stop_the_scan(vault: Path) -> None:
    locked = vault / "locked"
    locked.mkdir()
    (locked / "x.md").write_text("x")
    locked.chmod(0)
    try:
        if os.geteuid() == 0:
            # Root reads anything: scan as an unprivileged user in a process of its own.
            names = scan_as_nobody(vault)
        else:
            names = rels(scan_vault(vault, DEFAULT_INCLUDE, DEFAULT_EXCLUDE))
    finally:
        locked.chmod(0o755)
    assert "Introduction.md" in names and "locked/x.md" not in names


def scan_as_nobody(vault: Path) -> list[str]:
    import json
    import subprocess
    import sys
    import tempfile

    # The test's own temp dir is private to root: give nobody a world-readable copy, locked folder kept.
    shared = Path(tempfile.mkdtemp(prefix="oaa-scan-"))
    try:
        shared.chmod(0o755)
        copy = shared / "vault"
        shutil.copytree(vault, copy, symlinks=True, ignore=shutil.ignore_patterns("locked"))
        (copy / "locked").mkdir()
        (copy / "locked" / "x.md").write_text("x")
        for root, dirs, files in os.walk(copy):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
        (copy / "locked").chmod(0)
        code = (
            "import json, sys; from pathlib import Path\n"
            "from obsidian_ai_agent.notes import scan\n"
            "found = scan.scan_vault(Path(sys.argv[1]), scan.DEFAULT_INCLUDE, scan.DEFAULT_EXCLUDE)\n"
            "print(json.dumps([f.rel_path for f in found]))"
        )
        run = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
                str(copy),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=shared,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        return list(json.loads(run.stdout))
    finally:
        for root, dirs, _ in os.walk(shared):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(shared, ignore_errors=True)


def test_the_demo_vault_scan_finds_its_notes_and_its_pdf() -> None:
    files = scan_vault(DEMO_VAULT, DEFAULT_INCLUDE, DEFAULT_EXCLUDE)
    kinds = [f.kind for f in files]
    assert kinds.count("pdf") == 1
    assert kinds.count("note") == len([p for p in DEMO_VAULT.rglob("*.md") if ".obsidian" not in p.parts])
