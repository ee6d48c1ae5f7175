"""LLM providers against real models: llama-cpp-python's server over HTTP, and the same GGUF in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obsidian_ai_agent.config import LLMSettings
from obsidian_ai_agent.llm import (
    LlamaCpp,
    LLMModelMissing,
    LLMTimeout,
    LLMUnavailable,
    OpenAIChat,
    _sse_delta,
    get_llm,
    packaged_gguf,
)

from .llama_server import MODEL_ALIAS, llama_server
from .openai_server import free_port

HELLO = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello to Ada in one short sentence."},
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with llama_server() as base:
        yield base


def test_the_openai_provider_streams_deltas_from_a_real_server(server: str) -> None:
    llm = OpenAIChat(server, MODEL_ALIAS, timeout=60)
    deltas = list(llm.stream(HELLO, max_tokens=24))
    assert len(deltas) > 1
    assert "".join(deltas).strip()


def test_the_openai_provider_answers_without_streaming(server: str) -> None:
    text = OpenAIChat(server, MODEL_ALIAS, timeout=60).complete(HELLO, max_tokens=24)
    assert text.strip()


def test_an_unset_model_takes_the_one_the_server_lists(server: str) -> None:
    llm = OpenAIChat(server, "", timeout=60)
    llm.check()
    assert llm.model == MODEL_ALIAS


def test_a_missing_model_names_the_server_the_model_and_the_fix(server: str) -> None:
    llm = OpenAIChat(server, "llama3.2", timeout=60)
    with pytest.raises(LLMModelMissing) as e:
        list(llm.stream(HELLO, max_tokens=8))
    message = str(e.value)
    assert server in message and "'llama3.2'" in message
    assert "ollama pull llama3.2" in message and MODEL_ALIAS in message


def test_a_server_that_is_down_names_the_url_the_model_and_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMUnavailable) as e:
        OpenAIChat(url, "qwen2.5", timeout=5).complete(HELLO)
    message = str(e.value)
    assert url in message and "'qwen2.5'" in message
    assert "ollama serve" in message and "ollama pull qwen2.5" in message


@pytest.mark.parametrize("stream", [True, False])
def test_a_server_slower_than_the_timeout_is_a_timeout_error(server: str, stream: bool) -> None:
    llm = OpenAIChat(server, MODEL_ALIAS, timeout=0.02)
    # A long prompt cannot be read and answered in 20 ms on this machine.
    messages = [{"role": "user", "content": "Summarise: " + "tasks have due dates and priorities. " * 150}]
    with pytest.raises(LLMTimeout, match=r"did not answer within 0.02 s"):
        if stream:
            list(llm.stream(messages, max_tokens=48))
        else:
            llm.complete(messages, max_tokens=48)


def test_sse_lines_are_read_as_deltas_done_or_nothing() -> None:
    assert _sse_delta('data: {"choices":[{"delta":{"content":"Hi"}}]}') == "Hi"
    assert _sse_delta('data: {"choices":[{"delta":{"role":"assistant"}}]}') == ""
    assert _sse_delta(": keep-alive") == ""
    assert _sse_delta("data: [DONE]") is None


def test_the_packaged_gguf_is_found_through_the_installed_package() -> None:
    path = packaged_gguf()
    assert path.is_file() and path.suffix == ".gguf" and "site-packages" in str(path)


def test_the_llamacpp_provider_runs_the_gguf_in_process() -> None:
    llm = get_llm(LLMSettings(provider="llamacpp", context_window=1024, threads=1))
    assert isinstance(llm, LlamaCpp) and llm.model.endswith(".gguf")
    deltas = list(llm.stream(HELLO, max_tokens=24, temperature=0.0))
    assert len(deltas) > 1 and "".join(deltas).strip()
    assert 0 < llm.count_tokens("Tasks are due on Friday.") < 20


def test_a_missing_gguf_file_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LLMUnavailable, match=r"nope\.gguf does not exist; set llm.model"):
        LlamaCpp(str(tmp_path / "nope.gguf"))


def test_extractive_needs_no_model() -> None:
    assert get_llm(LLMSettings()) is None
    assert isinstance(get_llm(LLMSettings(provider="openai", model="m")), OpenAIChat)
