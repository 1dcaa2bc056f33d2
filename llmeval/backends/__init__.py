"""Generation backends: a registry of small classes behind names, imported lazily.

Importing this package imports neither torch nor vllm; a backend's module is
imported when the backend is chosen, and its heavy libraries when it first
generates (so a fully cached run never loads a model).

A backend receives :class:`Request` objects (one per prompt, carrying the
sample indices still missing) and yields one :class:`Completion` per sample,
as soon as each is ready. A failure that concerns some samples (a prompt too
long, a server error after retries) is a Completion with ``error`` set; only
a failure of the whole backend (model not loadable) raises.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmeval.errors import StageError
from llmeval.models import ModelRef

BACKENDS: dict[str, str] = {
    "hf": "llmeval.backends.hf:HFBackend",
    "vllm": "llmeval.backends.vllm:VLLMBackend",
    "openai": "llmeval.backends.openai:OpenAIBackend",
    "reference": "llmeval.backends.reference:ReferenceBackend",
}


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]


@dataclass
class Request:
    prompt: str | None
    messages: list[dict[str, Any]] | None
    samples: list[int]  # sample indices still to generate
    seeds: list[int | None]  # one per sample: derived from the run seed and the sample's key
    sampling: Sampling
    tag: Any = None  # the caller's handle, returned in each Completion
    reference: dict[str, Any] | None = (
        None  # the prompt record's reference (the reference backend's answer)
    )


@dataclass
class Completion:
    request: Request
    sample: int
    text: str | None
    finish_reason: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None


def failed(request: Request, error: str, prompt_tokens: int | None = None) -> Iterator[Completion]:
    """One error Completion for every sample of ``request``."""
    for s in request.samples:
        yield Completion(request, s, None, "error", prompt_tokens, None, error)


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop sequence; say whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Backend:
    """Base class; subclasses implement :meth:`generate` and may extend :meth:`describe`."""

    name = "base"

    def __init__(self, model: ModelRef, engine: dict[str, Any], log: Callable[[str], None]):
        self.model = model
        self.engine = engine
        self.log = log
        self.facts: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        """Facts for the run record: engine, versions, effective settings (cheap, no load)."""
        return {"name": self.name, "engine": dict(self.engine), **self.facts}

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the model (GPU memory, threads, connections)."""


def vllm_usable() -> bool:
    """vLLM importable and an NVIDIA GPU visible (checked without importing either)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    from llmeval.provenance import gpu_info

    return bool(gpu_info()[0])


def choose(name: str, base_url: str | None) -> tuple[str, str | None]:
    """Resolve ``auto`` to a backend name; return it and a note for stderr."""
    if name != "auto":
        if name not in BACKENDS:
            raise StageError(f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
        return name, None
    if base_url:
        return "openai", f"backend auto: openai (--base-url {base_url})"
    if vllm_usable():
        return "vllm", "backend auto: vllm (vllm importable, GPU present)"
    return "hf", "backend auto: hf (transformers; vllm needs an NVIDIA GPU and the vllm package)"


def load_backend_class(name: str) -> type[Backend]:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
