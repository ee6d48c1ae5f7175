"""The package has no import cycle, and every module imports on its own: with nothing else of the package
loaded first, as a script, a test or a worker would import it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "obsidian_ai_agent"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports_at_load(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that `name` imports when it loads (not under TYPE_CHECKING, not in
    functions): the edges an import cycle is made of."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in ast.parse(path.read_text("utf-8")).body:
        if isinstance(node, ast.Import):
            edges |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for a in node.names:
                full = f"{target}.{a.name}"
                edges.add(full if full in modules else target)
    return {e for e in edges if e in modules and e != name}


def test_no_module_of_the_package_is_part_of_an_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports_at_load(name, path, modules) for name, path in modules.items()}
    cycles = []
    for start in graph:  # a path from a module's imports back to itself is a cycle
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == start:
                cycles.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
    assert cycles == [], f"modules in an import cycle: {sorted(cycles)}"


def test_every_module_imports_with_nothing_else_of_the_package_loaded() -> None:
    names = sorted(n for n in _modules() if not n.endswith(".__main__"))  # those run the CLI
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'obsidian_ai_agent']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        failed.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(failed))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "", run.stdout
