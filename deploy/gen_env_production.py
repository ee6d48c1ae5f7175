"""Write deploy/.env.production from the settings model: every `OAA_*` variable, its default and meaning.

Run it after adding or changing a setting (tests/test_deploy.py fails until the file lists exactly the
settings the model has): `.venv/bin/python deploy/gen_env_production.py`.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from obsidian_ai_agent.config import ENV_PREFIX, Settings

OUT = Path(__file__).resolve().parent / ".env.production"

# What a production install sets (systemd's EnvironmentFile); everything else is shown commented out.
PRODUCTION = {
    "OAA_DATA_DIR": "/var/lib/obsidian-ai-agent",
    "OAA_VAULT": "/srv/obsidian-vault",
    "OAA_SERVER__HOST": "127.0.0.1",
    "OAA_SERVER__PORT": "8000",
    "OAA_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]',
    "OAA_LOG_LEVEL": "INFO",
    "OAA_LOGGING__FILE": "/var/log/obsidian-ai-agent/service.log",
    "OAA_BACKUP__SCHEDULE": "86400",
}

# Meanings of the fields whose declaration carries no docstring.
MEANINGS = {
    "embedding.base_url": "The /v1 URL of the `openai` embeddings server.",
    "embedding.api_key": "Bearer key for the embeddings server (secret).",
    "embedding.batch_size": "Chunks embedded per batch.",
    "embedding.timeout": "Seconds to wait for the embeddings server.",
    "embedding.device": "Torch device of the local model (cpu).",
    "search.default_mode": "Search mode when the caller names none: hybrid, keyword or semantic.",
    "search.keyword_weight": "Weight of the keyword (bm25) ranking in fusion.",
    "search.semantic_weight": "Weight of the vector ranking in fusion.",
    "server.host": "Address to bind (loopback behind a reverse proxy).",
    "server.port": "Port to bind.",
    "server.workers": "Worker processes (each loads the model; about one per core).",
    "server.cors_origins": "Origins allowed by CORS (JSON list); the Obsidian apps by default.",
    "server.ssl_certfile": "TLS certificate (PEM) to serve HTTPS directly; empty behind a TLS proxy.",
    "server.ssl_keyfile": "TLS private key (PEM), with server.ssl_certfile.",
    "server.debug": "Debug mode (never in production).",
    "server.rate_limits.enabled": "Rate limits per key and route group.",
    "llm.base_url": "The /v1 URL of the `openai` chat server (Ollama: http://127.0.0.1:11434/v1).",
    "llm.api_key": "Bearer key for the chat server (secret).",
    "llm.max_tokens": "Most tokens a generated answer may have.",
    "llm.temperature": "Sampling temperature of the model.",
    "cache.enabled": "Cache answers and searches (keyed by the index generation).",
    "cache.max_entries": "Most cache entries kept.",
    "logging.json_format": "Log lines as JSON (else plain text).",
    "watch.lane": "The lane the watcher's jobs go to.",
    "include": "Globs of vault files to index (JSON list).",
    "exclude": "Globs of vault files never indexed (JSON list).",
    "pdf_max_pages": "Most pages read from one PDF.",
    "log_level": "DEBUG, INFO, WARNING or ERROR (INFO for production).",
    "jobs.tune_batch_size": "Try a few embedding batch sizes on first use, keep the fastest (local model).",
}


def docstrings(cls: type) -> dict[str, str]:
    """The string literal that follows each field of a class body (how config.py documents fields)."""
    found: dict[str, str] = {}
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    for stmt, nxt in zip(body.body, body.body[1:], strict=False):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            found[stmt.target.id] = " ".join(nxt.value.value.split())
    return found


def shown(value: Any) -> str:
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    if isinstance(value, dict):
        value = {
            k: v.model_dump(mode="json", by_alias=True) if isinstance(v, BaseModel) else v
            for k, v in value.items()
        }
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def section(
    model: type[BaseModel], prefix: tuple[str, ...], instance: BaseModel
) -> list[tuple[str, str, str]]:
    """(env name, default, meaning) for every leaf setting of `model`; nested sections recurse."""
    docs = docstrings(model)
    rows = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        value = getattr(instance, name)
        loc = (*prefix, name)
        if isinstance(value, BaseModel):
            rows += section(type(value), loc, value)
            continue
        dotted = ".".join(loc)
        meaning = docs.get(name) or MEANINGS.get(dotted) or _described(info) or dotted.replace("_", " ")
        rows.append((ENV_PREFIX + "__".join(p.upper() for p in loc), shown(value), meaning))
    return rows


def _described(info: FieldInfo) -> str:
    return info.description or ""


def main() -> None:
    defaults = Settings(data_dir="/var/lib/obsidian-ai-agent")
    rows = [(ENV_PREFIX + "CONFIG", "", "A YAML settings file; the environment wins over it.")]
    rows += section(Settings, (), defaults)
    lines = [
        "# obsidian-ai-agent: every setting as an environment variable (systemd EnvironmentFile).",
        "# Generated by deploy/gen_env_production.py from the settings model; tests/test_deploy.py keeps it",
        "# complete. Lookup order: defaults < config file < environment. Nested settings join with `__`;",
        "# lists and mappings are JSON. Lines left commented keep the default shown. Secrets: set them here,",
        "# `chmod 600` this file (root:obsidian-ai-agent 0640 at most), never in the unit itself.",
        "",
    ]
    for env, default, meaning in rows:
        lines += textwrap.wrap(meaning, 100, initial_indent="# ", subsequent_indent="# ")
        if env in PRODUCTION:
            lines.append(
                f"# default: {default or '(none)'}"
                if env != "OAA_DATA_DIR"
                else "# default: ~/.local/share/obsidian-ai-agent"
            )
            lines.append(f"{env}={PRODUCTION[env]}")
        else:
            lines.append(f"#{env}={default}")
        lines.append("")
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {OUT} ({len(rows)} settings)")


if __name__ == "__main__":
    main()
