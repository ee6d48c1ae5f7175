"""Queries embedded by ONNX Runtime: the same vectors as torch's, a cache that is checked, and a fallback."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from obsidian_ai_agent import onnx_encoder
from obsidian_ai_agent.config import EmbeddingSettings
from obsidian_ai_agent.embeddings import EmbeddingError, LocalEmbedder, QueryCache, model_threads

from .conftest import QUESTIONS, SCIFACT


def _queries() -> list[str]:
    dev = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    lines = (SCIFACT / "queries_train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    return dev + [json.loads(line)["text"] for line in lines]


def test_query_vectors_from_onnx_runtime_are_interchangeable_with_torchs(embedder: LocalEmbedder) -> None:
    queries = _queries()
    ours = np.vstack([embedder.embed_query(q) for q in queries])
    assert embedder.query_runtime == "onnxruntime"
    torchs = np.vstack([embedder._embed([q]) for q in queries])  # the path indexing takes
    torchs /= np.linalg.norm(torchs, axis=1, keepdims=True)
    assert (ours * torchs).sum(axis=1).min() >= onnx_encoder.MIN_COSINE
    # Short texts (an answer's sentences, cut at 64 tokens) keep their order through the length sort.
    short = embedder.embed_short(queries[:20])
    assert (short * ours[:20]).sum(axis=1).min() > 0.99


def test_a_second_process_loads_the_exported_graph_without_torch(tmp_path: Path) -> None:
    first = LocalEmbedder(cache_dir=tmp_path)
    vec = first.embed_query("How do I write a due date in Dataview format?")
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".onnx"]
    second = LocalEmbedder(cache_dir=tmp_path)
    again = second.embed_query("How do I write a due date in Dataview format?")
    assert second.query_runtime == "onnxruntime" and second._model is None  # torch never loaded
    assert float(vec @ again) > 0.99999


def test_a_cached_graph_that_no_longer_gives_torchs_vectors_is_exported_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    LocalEmbedder(cache_dir=tmp_path).embed_query("warm up")
    probes = next(tmp_path.glob("*.probes.json"))
    data = json.loads(probes.read_text())
    data["vectors"] = [list(reversed(v)) for v in data["vectors"]]  # not what this graph gives
    probes.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, "obsidian_ai_agent.embeddings"):
        fresh = LocalEmbedder(cache_dir=tmp_path)
        fresh.embed_query("warm up")
    assert "exporting it again" in caplog.text and fresh.query_runtime == "onnxruntime"
    assert json.loads(probes.read_text())["vectors"] != data["vectors"]  # rewritten from torch

    next(tmp_path.glob("*.onnx")).write_bytes(b"not a graph")
    damaged = LocalEmbedder(cache_dir=tmp_path)
    assert float(damaged.embed_query("warm up") @ fresh.embed_query("warm up")) > 0.99999


def test_an_unwritable_cache_still_serves_queries_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, "obsidian_ai_agent.embeddings"):
        emb = LocalEmbedder(cache_dir=blocker / "models")
        emb.embed_query("recurring tasks")
    assert emb.query_runtime == "onnxruntime"
    assert "cannot keep the ONNX graph" in caplog.text and "embedding.cache_dir" in caplog.text


def _cls_pooled_copy(tmp_path: Path) -> Path:
    """The packaged model with CLS pooling: a model the export does not reproduce."""
    src = LocalEmbedder().path
    dst = tmp_path / "cls-model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    pooling = json.loads((dst / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return dst


def test_a_model_onnx_cannot_reproduce_falls_back_to_torch_or_fails_when_onnx_is_required(
    tmp_path: Path,
) -> None:
    model = _cls_pooled_copy(tmp_path)
    auto = LocalEmbedder(str(model), cache_dir=tmp_path / "cache")
    assert auto.embed_query("recurring tasks").shape == (384,)
    assert auto.query_runtime == "torch" and not (tmp_path / "cache").exists()
    with pytest.raises(EmbeddingError) as e:
        LocalEmbedder(str(model), runtime="onnx", cache_dir=tmp_path / "cache").embed_query("x")
    assert "embedding.runtime is `onnx`" in str(e.value) and "mean-pooled" in str(e.value)
    pinned = LocalEmbedder(runtime="torch", cache_dir=tmp_path / "cache")
    pinned.embed_query("recurring tasks")
    assert pinned.query_runtime == "torch" and not (tmp_path / "cache").exists()


def test_concurrent_queries_through_the_cache_share_onnx_calls(embedder: LocalEmbedder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cache = QueryCache(embedder)
    queries = _queries()[:30] * 3
    with ThreadPoolExecutor(16) as pool:
        vecs = list(pool.map(cache.get, queries))
    assert cache.model_calls <= 30  # each distinct query once at most, batched when they pile up
    assert all(float(v @ embedder.embed_query(q)) > 0.9999 for q, v in zip(queries, vecs, strict=True))


def test_model_threads_are_one_per_worker_unless_set() -> None:
    assert model_threads(EmbeddingSettings()) is None  # this process is no service worker
    assert model_threads(EmbeddingSettings(threads=3)) == 3
