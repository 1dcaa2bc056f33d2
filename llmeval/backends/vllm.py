"""The ``vllm`` backend: vLLM's offline engine (``vllm.LLM``), the H100 path.

The engine is built once from the preset's engine settings. Each call hands
every pending prompt of a chunk to ``LLM.generate`` in one go, so continuous
batching keeps the GPU full; samples come from ``SamplingParams(n=...)``, never
from duplicated prompts. Prompts too long for the context are turned into
error records before the call (vLLM would reject the whole batch); if the
batched call still raises, the prompts are retried one by one so the failure
stays with the record that caused it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from llmeval.backends import Backend, Completion, Request, failed
from llmeval.errors import StageError, missing_dependency
from llmeval.models import materialize

ENGINE_KEYS = (
    "dtype",
    "gpu_memory_utilization",
    "max_num_seqs",
    "max_num_batched_tokens",
    "enable_prefix_caching",
    "tensor_parallel_size",
)


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._llm: Any = None
        try:
            self.facts["vllm"] = metadata.version("vllm")
        except metadata.PackageNotFoundError:
            self.facts["vllm"] = None

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM``, from the preset's engine table."""
        args: dict[str, Any] = {k: self.engine[k] for k in ENGINE_KEYS if k in self.engine}
        if int(self.engine.get("max_model_len") or 0) > 0:
            args["max_model_len"] = int(self.engine["max_model_len"])
        if self.model.kind == "hub":
            args["revision"] = self.model.revision
        return args

    def _load(self) -> None:
        if self._llm is not None:
            return
        try:
            import vllm
        except ImportError:
            raise missing_dependency("vllm", "vllm") from None
        args = self.engine_args()
        t0 = time.monotonic()
        try:
            self._llm = vllm.LLM(model=materialize(self.model), **args)
        except (ValueError, RuntimeError, OSError) as exc:
            raise StageError(f"vLLM could not load {self.model.name!r}: {exc}") from None
        self._vllm = vllm
        self._tok = self._llm.get_tokenizer()
        config = getattr(self._llm.llm_engine, "model_config", None)
        self._max_len = int(
            getattr(config, "max_model_len", 0) or args.get("max_model_len") or 1 << 30
        )
        self.facts.update(
            engine_args=args, max_model_len=self._max_len, load_s=round(time.monotonic() - t0, 2)
        )
        self.log(f"vllm: loaded {self.model.name} in {self.facts['load_s']} s with {args}")

    def _prompt(self, req: Request) -> tuple[str | None, int | None, str | None]:
        if req.messages is not None:
            if not getattr(self._tok, "chat_template", None):
                return (
                    None,
                    None,
                    f"model {self.model.name} has no chat template; resolve without --chat",
                )
            text = self._tok.apply_chat_template(
                req.messages, add_generation_prompt=True, tokenize=False
            )
            n_tokens = len(self._tok.encode(text, add_special_tokens=False))
        else:
            text = req.prompt
            n_tokens = len(self._tok.encode(text))
        if n_tokens + req.sampling.max_tokens > self._max_len:
            return (
                None,
                n_tokens,
                (
                    f"prompt too long: {n_tokens} prompt tokens + max_tokens {req.sampling.max_tokens} "
                    f"> max_model_len {self._max_len}"
                ),
            )
        return text, n_tokens, None

    def _params(self, req: Request) -> Any:
        s = req.sampling
        return self._vllm.SamplingParams(
            n=len(req.samples),
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            seed=req.seeds[0] if s.temperature > 0 else None,
        )

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        self._load()
        ready: list[tuple[Request, str]] = []
        for req in requests:
            text, n_tokens, error = self._prompt(req)
            if error:
                yield from failed(req, error, n_tokens)
            else:
                assert text is not None
                ready.append((req, text))
        if not ready:
            return
        try:
            outputs = self._llm.generate(
                [t for _, t in ready], [self._params(r) for r, _ in ready], use_tqdm=False
            )
        except Exception:  # isolate the failing prompt(s)
            for req, text in ready:
                try:
                    (out,) = self._llm.generate([text], [self._params(req)], use_tqdm=False)
                except Exception as exc:
                    yield from failed(req, f"vLLM generate failed: {type(exc).__name__}: {exc}")
                else:
                    yield from self._completions(req, out)
            return
        for (req, _), out in zip(ready, outputs):
            yield from self._completions(req, out)

    def _completions(self, req: Request, out: Any) -> Iterator[Completion]:
        prompt_tokens = len(out.prompt_token_ids) if out.prompt_token_ids is not None else None
        for choice in sorted(out.outputs, key=lambda c: c.index):
            sample = req.samples[choice.index]
            finish = choice.finish_reason
            yield Completion(
                req,
                sample,
                choice.text,
                finish
                if finish in ("stop", "length")
                else "stop"
                if finish is None
                else str(finish),
                prompt_tokens,
                len(choice.token_ids),
            )

    def close(self) -> None:
        self._llm = None
