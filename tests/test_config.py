from __future__ import annotations

from pathlib import Path

import pytest

from obsidian_ai_agent.config import REDACTED, ConfigError, load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_when_nothing_is_set(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.search.default_mode == "hybrid"
    assert s.embedding.provider == "local"
    assert s.database_path == tmp_path.resolve() / "index.sqlite"
    assert ".obsidian/**" in s.exclude


def test_file_overrides_defaults_and_environment_overrides_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path / "c.yaml", "search:\n  k: 7\n  rrf_k: 30\nembedding:\n  batch_size: 8\n")
    s = load_settings(cfg)
    assert (s.search.k, s.search.rrf_k, s.embedding.batch_size) == (7, 30, 8)
    monkeypatch.setenv("OAA_SEARCH__K", "3")
    s = load_settings(cfg)
    assert (s.search.k, s.search.rrf_k) == (3, 30)
    assert s.config_file == cfg


def test_config_yaml_in_the_data_dir_is_found(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", "search:\n  k: 4\n")
    assert load_settings(data_dir=tmp_path).search.k == 4


def test_oaa_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAA_CONFIG", str(write(tmp_path / "x.yaml", "search:\n  k: 5\n")))
    assert load_settings().search.k == 5


def test_a_bad_value_in_the_file_names_the_field_the_file_and_what_is_allowed(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "embedding:\n  provider: cloud\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    msg = str(e.value)
    assert "embedding.provider" in msg and str(cfg) in msg and "'local' or 'openai'" in msg


def test_a_bad_value_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAA_SEARCH__K", "0")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "OAA_SEARCH__K" in str(e.value) and "greater than or equal to 1" in str(e.value)


def test_an_unknown_setting_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'serach'"):
        load_settings(write(tmp_path / "c.yaml", "serach:\n  k: 3\n"))


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML at line 3"):
        load_settings(write(tmp_path / "c.yaml", "search:\n  k: 3\n   bad: [\n"))


def test_a_missing_vault_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(data_dir=tmp_path, vault=tmp_path / "nope")


def test_unknown_keyword_field_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown field"):
        load_settings(write(tmp_path / "c.yaml", "search:\n  field_weights: {titel: 2}\n"))


def test_secrets_are_redacted_in_the_effective_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAA_EMBEDDING__API_KEY", "sk-very-secret-value")
    s = load_settings()
    assert s.embedding.api_key is not None
    shown = s.redacted()
    assert shown["embedding"]["api_key"] == REDACTED
    assert "sk-very-secret-value" not in repr(shown) and "sk-very-secret-value" not in repr(s)
