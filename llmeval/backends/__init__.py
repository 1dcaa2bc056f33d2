"""Generation backends: a registry of small classes behind names, imported lazily.

Importing this package imports neither torch nor vllm; a backend's module is
imported when the backend is chosen, and its heavy libraries when it first
generates (so a fully cached run never loads a model).

A backend receives :class:`Request` objects (one per prompt, carrying the
sample indices still missing and one seed per sample) and yields one
:class:`Completion` per sample, as soon as each is ready. A failure that
concerns some samples (a prompt too long, a server error after retries) is a
Completion with ``error`` set; only a failure of the whole backend (model not
loadable, engine dead) raises.

The rules every backend follows, so that a sample's text is a function of its
key (docs/records.md):

- a sampled (temperature > 0) sample is generated on its own, with its own
  seed: never as one of ``n`` draws of a shared generator, whose i-th draw
  would depend on which other samples were asked for at the same time;
- a greedy request is generated once and its text serves every sample index
  it carries (greedy decoding has nothing to draw);
- hf and vllm feed the model the same token ids (:func:`prompt_token_ids`).

While a backend works it calls :meth:`Backend.tick` (at most once a second),
so the heartbeat stays fresh during a long model load or a long batch.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

    @property
    def greedy(self) -> bool:
        """Greedy decoding: one generation serves every sample index."""
        return self.sampling.temperature == 0


@dataclass
class LoglikRequest:
    """Score each continuation's log-likelihood after the prompt (multiple choice, lm-eval's way)."""

    prompt: str | None
    messages: list[dict[str, Any]] | None
    continuations: list[str]
    tag: Any = None  # the caller's handle, returned in the LoglikResult


@dataclass
class LoglikResult:
    """Per continuation, in order: summed log-probability, token count, greedy or not."""

    request: LoglikRequest
    logprobs: list[float] | None
    tokens: list[int] | None
    greedy: list[bool] | None
    prompt_tokens: int | None = None
    error: str | None = None


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


class PromptError(Exception):
    """A record whose prompt the model cannot take (no chat template, too long): an error record."""

    def __init__(self, message: str, prompt_tokens: int | None = None):
        super().__init__(message)
        self.prompt_tokens = prompt_tokens


def prompt_token_ids(tok: Any, req: Request) -> list[int]:
    """The token ids the model is fed for ``req``, the same for every backend that tokenizes.

    Chat messages go through the tokenizer's chat template rendered as text,
    then encoded WITHOUT special tokens: the template writes its own BOS
    (Gemma, Llama 3, Mistral), as vLLM's ``LLM.chat`` does
    (vllm/entrypoints/llm.py, ``LLM.chat``: ``tokenizer.encode(prompt_str,
    add_special_tokens=False)``). A plain prompt is encoded WITH special
    tokens, as vLLM tokenizes a text prompt (vllm/inputs/preprocess.py,
    ``InputPreprocessor._tokenize_prompt``) and as transformers does by
    default. Either way a leading BOS is never doubled (a prompt that starts
    with the BOS text itself).
    """
    if req.messages is not None:
        template = getattr(tok, "chat_template", None)
        if not template:
            raise PromptError(
                "the model has no chat template; resolve without --chat for completion-style prompts"
            )
        rendered = tok.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
        if isinstance(rendered, list):  # tokenizers that render straight to ids (mistral mode)
            ids = [int(t) for t in rendered]
        else:
            ids = list(tok.encode(rendered, add_special_tokens=False))
    else:
        ids = list(tok.encode(req.prompt or ""))
    bos = getattr(tok, "bos_token_id", None)
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids


def context_text(tok: Any, req: LoglikRequest) -> tuple[str, bool]:
    """The context as text, and whether encoding it adds the tokenizer's special tokens.

    A plain prompt is encoded with the tokenizer's default (a BOS for Gemma,
    Llama), as :func:`prompt_token_ids` and lm-eval's ``HFLM.tok_encode`` do
    (lm_eval/models/huggingface.py: ``add_bos_token`` unset = the tokenizer's
    default; no second BOS when the text starts with one). A chat prompt is
    the template rendered as text, which writes its own BOS.
    """
    if req.messages is not None:
        if not getattr(tok, "chat_template", None):
            raise PromptError(
                "the model has no chat template; resolve without --chat for completion-style prompts"
            )
        rendered = tok.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
        if not isinstance(rendered, str):
            raise PromptError("the chat template did not render to text")
        return rendered, False
    text = req.prompt or ""
    bos = getattr(tok, "bos_token", None)
    return text, not (isinstance(bos, str) and bos and text.startswith(bos))


def continuation_token_ids(tok: Any, req: LoglikRequest) -> tuple[list[int], list[list[int]]]:
    """The context's ids and each continuation's ids, split as lm-eval splits them.

    lm-eval's ``TemplateLM._encode_pair`` (lm_eval/api/model.py): trailing
    whitespace of the context moves to the front of the continuation; the
    context and the context + continuation are encoded whole, and the
    continuation's ids are the tail of the whole beyond the context's length
    (so a token that merges across the boundary is scored with the
    continuation). The model is then fed ``(context + continuation)[:-1]``.
    """
    text, special = context_text(tok, req)
    if not text:
        raise PromptError("empty prompt: a log-likelihood needs a context")
    stripped = text.rstrip()
    spaces = text[len(stripped) :]
    context = list(tok.encode(stripped, add_special_tokens=special))
    conts = []
    for c in req.continuations:
        whole = list(tok.encode(stripped + spaces + c, add_special_tokens=special))
        tail = whole[len(context) :]
        if not tail:
            raise PromptError(f"continuation {c!r} encodes to no tokens after the context")
        conts.append(tail)
    return context, conts


def check_length(ids: list[int], max_tokens: int, max_len: int) -> None:
    """Refuse a prompt that leaves no room for ``max_tokens`` in the context (same rule for hf and vllm)."""
    if len(ids) + max_tokens > max_len:
        raise PromptError(
            f"prompt too long: {len(ids)} prompt tokens + max_tokens {max_tokens} "
            f"> max_model_len {max_len}",
            len(ids),
        )


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop sequence; say whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Backend:
    """Base class; subclasses implement :meth:`generate` and may extend :meth:`describe`.

    ``engine`` is the preset's ``[engine]`` table (its backend sub-tables
    included); keys it lacks take the defaults of presets/base.toml, the one
    place engine defaults live (:func:`llmeval.backends.options.engine_defaults`).
    """

    name = "base"
    TICK_S = 1.0  # at most one tick a second: a tick may redraw the progress bar

    def __init__(self, model: ModelRef, engine: dict[str, Any], log: Callable[[str], None]):
        from llmeval.backends.options import engine_defaults

        self.model = model
        self.engine = {**engine_defaults(), **engine}
        self.log = log
        self.facts: dict[str, Any] = {}
        # Set by eval-generate: receives the engine's own figures (phase, requests
        # running/waiting, KV-cache use) for the heartbeat.
        self.on_tick: Callable[[dict[str, Any]], None] | None = None
        self._last_tick = 0.0

    def tick(self, stats: Callable[[], dict[str, Any]] | dict[str, Any] | None = None) -> None:
        """Tell eval-generate the backend is alive (rate-limited; ``stats`` computed only when sent)."""
        now = time.monotonic()
        if self.on_tick is None or now - self._last_tick < self.TICK_S:
            return
        self._last_tick = now
        figures = stats() if callable(stats) else stats
        self.on_tick(dict(figures or {}))

    @contextmanager
    def keepalive(self, phase: str, every: float = 2.0) -> Iterator[None]:
        """Tick from a thread while the caller blocks (loading a model, one long engine call)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                self._last_tick = 0.0
                self.tick({"phase": phase})

        self._last_tick = 0.0
        self.tick({"phase": phase})
        thread = threading.Thread(target=beat, name=f"llmeval-{phase}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def describe(self) -> dict[str, Any]:
        """Facts for the run record: engine, versions, effective settings (cheap, no load)."""
        return {"name": self.name, "engine": dict(self.engine), **self.facts}

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        raise NotImplementedError

    def loglikelihood(self, requests: list[LoglikRequest]) -> Iterator[LoglikResult]:
        """One LoglikResult per request (any order); a backend that cannot, says so once."""
        raise StageError(
            f"the {self.name} backend cannot score log-likelihoods (--loglikelihood): "
            "use --backend hf, vllm or openai"
        )
        yield  # pragma: no cover

    def close(self) -> None:
        """Release the model (GPU memory, threads, connections)."""


def vllm_usable() -> bool:
    """vLLM importable and a GPU visible to CUDA (``CUDA_VISIBLE_DEVICES`` honoured), without importing either."""
    if importlib.util.find_spec("vllm") is None:
        return False
    from llmeval.gpus import visible_gpu_count

    return visible_gpu_count() > 0


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
    return "hf", "backend auto: hf (transformers; vllm needs a visible NVIDIA GPU and the vllm package)"


def load_backend_class(name: str) -> type[Backend]:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
