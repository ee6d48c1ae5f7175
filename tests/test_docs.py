"""docs/: the generated references match the code, every route, setting, alert rule and command is
documented, and every relative link in the docs and the README leads to a file and heading that exist."""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from obsidian_ai_agent.config import ENV_PREFIX, Settings
from obsidian_ai_agent.monitoring_config import DEFAULT_RULES
from obsidian_ai_agent.ops.alerts import EXPORT_FIELDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HINT = "regenerate them: .venv/bin/python docs/gen_reference.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen = _generator()


@pytest.fixture(scope="module")
def app() -> Any:
    return gen.build_app()


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _sections(text: str, level: int) -> dict[str, str]:
    """Heading text (without the #s) -> the text up to the next heading of this level or above."""
    found: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^(#{1,6}) (.*)$", line)
        if m and len(m.group(1)) <= level:
            if current is not None:
                found[current] = "\n".join(lines)
            current = m.group(2).strip() if len(m.group(1)) == level else None
            lines = []
        elif current is not None:
            lines.append(line)
    if current is not None:
        found[current] = "\n".join(lines)
    return found


def _leaf_settings(
    model: type[BaseModel], instance: BaseModel, loc: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """(YAML path, environment name) of every leaf setting, walked as tests/test_deploy.py walks them."""
    found = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        value = getattr(instance, name)
        here = (*loc, name)
        if isinstance(value, BaseModel):
            found += _leaf_settings(type(value), value, here)
        else:
            found.append((".".join(here), ENV_PREFIX + "__".join(p.upper() for p in here)))
    return found


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, cmd)]
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        if not sub.hidden:
            found += _commands(sub, (*path, name))
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        anchors |= set(re.findall(r'<a (?:id|name)="([^"]+)"', line))
        m = re.match(r"^#{1,6} (.*)$", line)
        if m:
            base = _slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def _links(text: str) -> list[str]:
    """Link targets outside code: fenced blocks and inline code are left out."""
    targets = []
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        targets += re.findall(r"\]\(([^)\s]+)\)", line)
    return targets


def test_the_generated_references_are_what_the_code_gives_now(app: Any) -> None:
    assert gen.stale(gen.outputs(app)) == [], HINT


def test_every_operation_of_the_openapi_schema_has_a_section_with_its_scope_an_example_and_its_errors(
    app: Any,
) -> None:
    sections = _sections(_read("api.md"), 4)
    operations = [(m.upper(), p, op) for p, item in app.openapi()["paths"].items() for m, op in item.items()]
    assert len(operations) > 30
    for method, path, op in operations:
        section = sections.get(f"`{method} {path}`")
        assert section is not None, f"docs/api.md has no section for {method} {path}; {HINT}"
        assert "```sh\ncurl -s" in section, f"{method} {path}: no request example"
        assert "Scope: " in section, f"{method} {path}: no scope"
        if op.get("security"):
            assert "Scope: none" not in section, f"{method} {path} needs a key"
        if op.get("requestBody") and "application/json" in op["requestBody"]["content"]:
            assert "```json" in section.split("Example:")[0], f"{method} {path}: no request body example"
        for status, response in op["responses"].items():
            if status.startswith("2") and "application/json" in (response.get("content") or {}):
                assert f"Response `{status}` (`application/json`)" in section, f"{method} {path} {status}"
            elif not status.startswith("2"):
                assert re.search(rf"^\| {status} \| `\w+`", section, re.M), (
                    f"{method} {path}: no {status} row"
                )


def test_every_route_the_app_serves_pages_included_is_named_in_the_api_reference(app: Any) -> None:
    from starlette.routing import Mount

    text = _read("api.md")
    paths: list[str] = []

    def walk(routes: list[Any]) -> None:
        for r in routes:
            if hasattr(r, "original_router"):
                walk(r.original_router.routes)
            elif isinstance(r, Mount):
                paths.append(r.path + "/")
            else:
                paths.append(re.sub(r"\{(\w+):[^}]+\}", r"{\1}", r.path))

    walk(app.routes)
    assert {"/", "/dashboard", "/dashboard/static/{name}", "/docs", "/status-page", "/mcp", "/health"} <= set(
        paths
    )
    for path in paths:
        assert re.search(rf"`(\w+ )?{re.escape(path)}[`{{]", text), (
            f"docs/api.md does not name {path}; {HINT}"
        )


def test_every_setting_appears_in_the_configuration_reference_as_yaml_path_and_environment_name() -> None:
    text = _read("configuration.md")
    settings = _leaf_settings(Settings, Settings(data_dir=Path("/var/lib/obsidian-ai-agent")))
    assert ("server.rate_limits.enabled", "OAA_SERVER__RATE_LIMITS__ENABLED") in settings
    assert ("monitor.rules", "OAA_MONITOR__RULES") in settings
    for yaml_path, env in settings:
        assert f"| `{yaml_path}` | `{env}` |" in text, f"docs/configuration.md lacks {yaml_path}; {HINT}"


def test_the_configuration_reference_shows_every_default_rule_with_its_threshold_and_severity() -> None:
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| \[`(\w+)`\]\(monitoring\.md#\w+\) \|.*$", _read("configuration.md"), re.M)
    }
    for name, rule in DEFAULT_RULES.items():
        assert name in rows, f"docs/configuration.md has no default-rule row for {name}"
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        assert cells[1:4] == [
            f"`{rule['metric']}`",
            f"`{rule.get('op', '>')}`",
            gen.number(float(rule["threshold"])),
        ]
        assert cells[5] == rule["severity"] and (cells[6] == "yes") == bool(rule.get("rollback"))


def test_every_command_and_subcommand_appears_in_the_cli_reference_with_its_options() -> None:
    from typer.main import get_command

    from obsidian_ai_agent.cli import app as cli_app

    sections = _sections(_read("cli.md"), 2)
    commands = _commands(get_command(cli_app))
    paths = [" ".join(p) for p, _ in commands]
    assert {"alerts ack", "keys create", "maintenance on", "backup verify", "restore", "smoke"} <= set(paths)
    for path, cmd in commands:
        heading = "`" + " ".join(("obsidian-ai-agent", *path)) + "`"
        assert heading in sections, f"docs/cli.md has no section for {' '.join(path)}; {HINT}"
        for param in cmd.params:
            if param.param_type_name == "option" and not param.hidden:
                for opt in [*param.opts, *param.secondary_opts]:
                    assert opt in sections[heading], f"docs/cli.md: {' '.join(path)} lacks {opt}"
            elif param.param_type_name == "argument":
                assert f"`{param.name.upper()}`" in sections[heading], f"{' '.join(path)} lacks {param.name}"


def test_every_error_code_the_source_can_answer_with_is_described_in_the_api_reference() -> None:
    text = _read("api.md")
    codes = gen.source_error_codes()
    assert {"unauthorized", "forbidden", "rate_limited", "maintenance", "database_damaged"} <= set(codes)
    for code in codes:
        assert re.search(rf"^\| `{code}` \| \d{{3}} \|", text, re.M), f"docs/api.md does not describe {code}"


def test_the_generator_stops_at_an_error_code_it_cannot_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    fewer = {k: v for k, v in gen.ERROR_CODES.items() if k != "vault_not_writable"}
    monkeypatch.setattr(gen, "ERROR_CODES", fewer)
    with pytest.raises(gen.NotDocumented, match="vault_not_writable"):
        gen.check_error_codes(set())


def test_the_incident_levels_give_every_rule_its_severity_and_the_columns_of_the_incident_log() -> None:
    text = _read("incidents.md")
    for name, rule in DEFAULT_RULES.items():
        m = re.search(rf"^\| \[`{name}`\]\(monitoring\.md#{name}\) \| (\w+) \|\s*(\w*)\s*\|$", text, re.M)
        assert m, f"docs/incidents.md has no severity row for {name}"
        assert m.group(1) == rule["severity"] and (m.group(2) == "yes") == bool(rule.get("rollback")), name
    for column in EXPORT_FIELDS:
        assert f"`{column}`" in text, f"docs/incidents.md does not name the incident log's column {column}"
    assert "alerts list --all --csv" in text


def test_the_rollback_guide_gives_exactly_the_rollback_criteria_as_reasons_to_roll_back() -> None:
    when = _sections(_read("rollback.md"), 2)["When to roll back"]
    named = set(re.findall(r"^\s*\| \[`(\w+)`\]", when, re.M))
    assert named == {name for name, rule in DEFAULT_RULES.items() if rule.get("rollback")}
    assert "smoke" in when


def test_the_docs_index_links_every_document_in_docs() -> None:
    linked = {t.split("#")[0] for t in _links(_read("README.md"))}
    for path in sorted(DOCS.iterdir()):
        if path.name != "README.md" and path.suffix in (".md", ".py"):
            assert path.name in linked, f"docs/README.md does not link {path.name}"


def test_every_relative_link_in_the_docs_and_the_readme_leads_to_a_file_and_heading_that_exist() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        for target in _links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, obsidian:, app:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            assert dest.exists(), f"{page.relative_to(ROOT)}: {target} leads to no file"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{page.relative_to(ROOT)}: {target} leads to no heading"
            checked += 1
    assert checked > 100
