from __future__ import annotations

import numpy as np
import pytest

from obsidian_ai_agent.embeddings import (
    EmbeddingError,
    LocalEmbedder,
    OpenAIEmbedder,
    QueryCache,
    TransientEmbeddingError,
)

from .openai_server import Behaviour, build_app, free_port, running


def test_the_packaged_model_gives_normalised_384_dimension_vectors(embedder: LocalEmbedder) -> None:
    vecs = embedder.embed(
        ["Recurring tasks repeat on a schedule.", "How do I make a task repeat?", "Urgency"]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Related sentences are closer than unrelated ones: the model really runs.
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    assert embedder.model_id == "all-MiniLM-L6-v2" and embedder.counter.max_tokens == 256


def test_batching_gives_the_same_vectors_as_one_call(embedder: LocalEmbedder) -> None:
    texts = [f"note number {i} about tasks and dates" for i in range(70)]
    one = embedder.embed(texts)
    seen: list[int] = []
    many = embedder.embed(texts, progress=seen.append)
    assert np.allclose(one, many, atol=1e-5) and seen[-1] == 70


def test_an_openai_compatible_server_gives_the_same_vectors(embedder: LocalEmbedder) -> None:
    with running(build_app(embedder, Behaviour())) as url:
        remote = OpenAIEmbedder(url + "/v1", "minilm", batch_size=2)
        assert remote.dimension == 384 and remote.model_id == "openai:minilm"
        texts = ["one note", "another note", "a third"]
        assert np.allclose(remote.embed(texts), embedder.embed(texts), atol=1e-5)


def test_an_unreachable_server_names_the_url_and_the_model() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EmbeddingError) as e:
        OpenAIEmbedder(url, "nomic-embed-text", timeout=2)
    assert url + "/embeddings" in str(e.value) and "nomic-embed-text" in str(e.value)


def test_a_missing_model_says_how_to_get_it(embedder: LocalEmbedder) -> None:
    with running(build_app(embedder, Behaviour())) as url, pytest.raises(EmbeddingError) as e:
        OpenAIEmbedder(url + "/v1", "nomic-embed-text")
    assert "ollama pull nomic-embed-text" in str(e.value)


def test_a_server_error_or_timeout_is_transient(embedder: LocalEmbedder) -> None:
    behaviour = Behaviour()
    with running(build_app(embedder, behaviour)) as url:
        remote = OpenAIEmbedder(url + "/v1", "minilm", dimension=384, timeout=1)
        behaviour.fail_next = 1
        with pytest.raises(TransientEmbeddingError, match="503"):
            remote.embed(["x"])
        assert remote.embed(["x"]).shape == (1, 384)
        behaviour.slow = 1.5
        with pytest.raises(TransientEmbeddingError, match="did not answer within 1 s"):
            remote.embed(["x"])
        behaviour.slow = 0


def test_concurrent_queries_share_one_embedding_each_and_arrive_at_the_model_in_batches(embedder) -> None:  # type: ignore[no-untyped-def]
    import threading

    cache = QueryCache(embedder)
    queries = [f"how do I {verb} a recurring task" for verb in ("create", "delete", "move", "copy")]
    got: dict[int, tuple[str, np.ndarray]] = {}
    start = threading.Barrier(24)

    def ask(i: int) -> None:
        start.wait()
        q = queries[i % len(queries)]
        got[i] = (q, cache.get(q))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 24
    assert 1 <= cache.model_calls <= len(queries)  # 24 requests, at most one pass per distinct query
    for q, vec in got.values():
        assert np.allclose(vec, embedder.embed_query(q), atol=1e-5)
    assert cache.get(queries[0]) is cache.get(queries[0]) and cache.model_calls <= len(queries)
