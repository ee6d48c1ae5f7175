"""deploy/prometheus-alerts.yml: the Prometheus alerting rules pass `promtool check rules` and their unit
tests (`promtool test rules deploy/prometheus-alerts.test.yml`), prometheus.yml loads them and still
passes `promtool check config`, and every alert keeps the threshold, `for` and severity of its rule in
the built-in monitor's DEFAULT_RULES, with a runbook section in docs/monitoring.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from obsidian_ai_agent.config import load_settings
from obsidian_ai_agent.monitoring_config import DEFAULT_RULES, ROLLBACK

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus-alerts.test.yml"
CONFIG = DEPLOY / "prometheus.yml"
RUNBOOK = ROOT / "docs" / "monitoring.md"
KEY_FILE = "/etc/prometheus/obsidian-ai-agent.key"

# Rules of DEFAULT_RULES that /metrics has no series for (the built-in monitor alone watches them), and
# alerts that only Prometheus can raise. A rule added to DEFAULT_RULES must be put in the alerts file or
# here, with its reason in the alerts file's header.
NO_SERIES = {
    "jobs_stuck": "running jobs whose lease expired are counted with the running ones in oaa_jobs",
    "database_failing": "component checks are not exported",
    "component_down": "component checks are not exported",
    "error_log_burst": "ERROR lines of the service log are not exported",
}
PROMETHEUS_ONLY = {"service_down"}
ROLLBACK_STEPS = ("obsidian-ai-agent backup", "obsidian-ai-agent restore", "obsidian-ai-agent smoke --url")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_COMPARISON = re.compile(r"^(?P<lhs>.*?)\s(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>-?\d+(?:\.\d+)?)\s*$", re.S)


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail(
            "promtool is not installed: install Debian's `prometheus` package "
            "(apt-get install --no-install-recommends prometheus; `make test` does so when it is missing)"
        )
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def camel(rule: str) -> str:
    return "".join(part.capitalize() for part in rule.split("_"))


def duration_seconds(text: str | None) -> float:
    """A Prometheus duration (`5m`, `1h30m`, `0s`) in seconds; no `for` is 0."""
    if text is None:
        return 0.0
    parts = _DURATION.findall(str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"not a Prometheus duration: {text!r}"
    return sum(float(n) * _UNIT[u] for n, u in parts)


def comparison(expr: str) -> tuple[str, float]:
    """The operator and threshold the alert's expression ends its (first) condition with."""
    first = re.split(r"\n\s*and\s", expr.strip())[0]
    found = _COMPARISON.match(first.strip())
    assert found, f"no trailing comparison with a number in {first!r}"
    return found["op"], float(found["threshold"])


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the document's headings: lower case, punctuation but - and _ dropped, spaces
    as hyphens."""
    out = set()
    for heading in re.findall(r"(?m)^#{1,6}\s+(.+?)\s*#*\s*$", markdown):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        out.add(slug)
    return out


def builtin_summary(rule: dict[str, Any]) -> str:
    """The built-in rule's summary with its value left as `{value}` and its threshold written out."""
    threshold = rule["threshold"]
    return (
        rule["summary"]
        .replace("{value_pct}", "{value}")
        .replace("{threshold_pct}", f"{threshold * 100:g}%")
        .replace("{threshold}", f"{threshold:g}")
    )


# -- promtool ---------------------------------------------------------------------------------------


def test_the_alerting_rules_pass_promtool_check_rules() -> None:
    run = promtool("check", "rules", str(ALERTS.relative_to(ROOT)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in run.stdout, run.stdout


def test_the_alerting_rules_pass_their_promtool_unit_tests() -> None:
    run = promtool("test", "rules", str(ALERT_TESTS.relative_to(ROOT)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_the_unit_tests_evaluate_every_alert_both_firing_and_silent() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    cases = [case for t in tests["tests"] for case in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    names = {a["alert"] for a in alerts()}
    assert fires == names, f"no firing case for {names - fires}"
    # Alerts over several series are tested with some under the threshold (they do not appear among the
    # expected alerts), the others with an evaluation where nothing fires (before `for`, or after).
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert silent >= names - {"MemoryLeak", "DiskWarning", "DiskCritical"}


def test_prometheus_yml_loads_the_rules_file_and_passes_promtool_check_config(tmp_path: Path) -> None:
    text = CONFIG.read_text()
    config = yaml.safe_load(text)
    assert config["rule_files"] == [ALERTS.name]  # relative to the config file: keep them side by side
    assert {job["job_name"] for job in config["scrape_configs"]} == {"obsidian-ai-agent", "node"}
    # promtool checks that the key file exists: point it at one here (an install writes the real one).
    key = tmp_path / "obsidian-ai-agent.key"
    key.write_text("oaa_000000000000_" + "x" * 43 + "\n")
    key.chmod(0o600)
    assert KEY_FILE in text
    (tmp_path / "prometheus.yml").write_text(text.replace(KEY_FILE, str(key)))
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    run = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "SUCCESS: 1 rule files found" in out, out
    assert f"SUCCESS: {len(alerts())} rules found" in out, out


# -- the rules file against the built-in monitor ----------------------------------------------------


def test_every_alert_is_named_after_a_built_in_rule_or_is_one_prometheus_alone_can_raise() -> None:
    seen = []
    for a in alerts():
        rule = a["labels"]["rule"]
        assert a["alert"] == camel(rule), f"{a['alert']} should be named {camel(rule)} after its rule {rule}"
        assert rule in DEFAULT_RULES or rule in PROMETHEUS_ONLY, f"{rule} is not a rule of DEFAULT_RULES"
        seen.append(rule)
    assert len(seen) == len(set(seen)), "a rule has two alerts"
    # Every built-in rule is in the file unless /metrics has no series for it.
    assert set(DEFAULT_RULES) - set(seen) == set(NO_SERIES)
    assert not set(NO_SERIES) & set(seen)
    header = ALERTS.read_text().split("groups:")[0]
    for rule in NO_SERIES:
        assert rule in header, f"the alerts file's header should say why {rule} is left out"


def test_every_alert_has_the_threshold_for_and_severity_of_its_built_in_rule() -> None:
    checked = 0
    for a in alerts():
        rule = a["labels"]["rule"]
        if rule in PROMETHEUS_ONLY:
            continue
        want = DEFAULT_RULES[rule]
        op, threshold = comparison(a["expr"])
        where = f"{a['alert']} against monitor.rules.{rule}"
        assert op == want.get("op", ">"), where
        assert threshold == pytest.approx(want["threshold"]), where
        assert duration_seconds(a.get("for")) == pytest.approx(want["for"]), where
        assert a["labels"]["severity"] == want["severity"], where
        checked += 1
    assert checked == len(DEFAULT_RULES) - len(NO_SERIES)


def test_rollback_criteria_say_rollback_recommended_and_no_other_alert_does() -> None:
    for a in alerts():
        rule = a["labels"]["rule"]
        rollback = DEFAULT_RULES.get(rule, {}).get("rollback", False)
        summary = a["annotations"]["summary"]
        assert (ROLLBACK in summary) == rollback, a["alert"]
        assert (a["labels"].get("rollback") == "true") == rollback, a["alert"]
        if rollback:
            assert a["labels"]["severity"] == "critical", a["alert"]


def test_every_alert_summary_reads_as_the_built_in_rules_summary() -> None:
    for a in alerts():
        rule = a["labels"]["rule"]
        if rule in PROMETHEUS_ONLY:
            continue
        summary = re.sub(r"\{\{[^}]*\}\}", "{value}", a["annotations"]["summary"])
        assert summary == builtin_summary(DEFAULT_RULES[rule]), a["alert"]


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() -> None:
    sections = anchors(RUNBOOK.read_text())
    for a in alerts():
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        notes = a["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), a["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/monitoring.md", a["alert"]
        assert anchor == a["labels"]["rule"], f"{a['alert']} should link to the section of its rule"
        assert anchor in sections, f"docs/monitoring.md has no heading for #{anchor}"


def test_the_runbook_has_a_section_for_every_built_in_rule() -> None:
    sections = anchors(RUNBOOK.read_text())
    assert not (missing := set(DEFAULT_RULES) - sections), f"no section in docs/monitoring.md for {missing}"


def test_the_runbook_gives_rollback_steps_in_the_section_of_every_rollback_criterion() -> None:
    text = RUNBOOK.read_text()
    parts = re.split(r"(?m)^## ", text)
    by_heading = {p.split("\n", 1)[0].strip(): p for p in parts[1:]}
    for name, rule in DEFAULT_RULES.items():
        if not rule.get("rollback"):
            continue
        section = by_heading[name]
        for step in ROLLBACK_STEPS:
            assert step in section, f"the section {name} lacks `{step}`"
        assert "previous version" in section, name


def test_the_settings_example_of_the_runbook_is_accepted_by_the_settings_model(tmp_path: Path) -> None:
    text = RUNBOOK.read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("monitor:")]
    assert len(blocks) == 1
    config = tmp_path / "config.yaml"
    config.write_text(blocks[0])
    monitor = load_settings(config_file=config, data_dir=tmp_path).monitor
    assert monitor.rules["cpu_warning"].threshold == 80
    assert monitor.rules["cpu_critical"].threshold == DEFAULT_RULES["cpu_critical"]["threshold"]
    assert [c.type for c in monitor.channels] == ["log", "slack", "email"]
