"""The ``hf`` backend: transformers on the CPU or a GPU.

Rows (one per prompt x sample) are grouped by sampling settings, sorted by
prompt length and run in batches of ``engine.batch_size`` with left padding.
Sampling is done by a logits processor with one ``torch.Generator`` per row,
seeded from the sample's key, so a sample's text does not depend on which
other rows share its batch. Stop sequences end a row as soon as they appear
and are cut from the text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import groupby
from typing import Any

from llmeval.backends import Backend, Completion, Request, failed, truncate_at_stop
from llmeval.errors import StageError, missing_dependency
from llmeval.models import materialize


class HFBackend(Backend):
    name = "hf"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._tok: Any = None

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise missing_dependency("transformers", "hf") from None
        threads = int(self.engine.get("threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        device = self.engine.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self.engine.get("dtype", "auto")
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device == "cuda" else "float32"
        where = materialize(self.model)
        transformers.utils.logging.disable_progress_bar()  # our own bar is the one on stderr
        t0 = time.monotonic()
        try:
            tok = AutoTokenizer.from_pretrained(where, revision=self._revision())
            model = AutoModelForCausalLM.from_pretrained(
                where, dtype=getattr(torch, dtype_name), revision=self._revision()
            )
        except OSError as exc:
            raise StageError(
                f"cannot load model {self.model.name!r} with transformers: {exc}"
            ) from None
        model.to(device).eval()
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._model, self._tok, self._device, self._torch = model, tok, device, torch
        config = model.config
        text_config = getattr(config, "text_config", None) or config
        limit = int(self.engine.get("max_model_len") or 0)
        self._max_len = (
            limit or int(getattr(text_config, "max_position_embeddings", 0) or 0) or 1 << 30
        )
        self.facts.update(
            device=device,
            dtype=dtype_name,
            transformers=transformers.__version__,
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            max_model_len=self._max_len,
            load_s=round(time.monotonic() - t0, 2),
        )
        self.log(
            f"hf: loaded {self.model.name} on {device} ({dtype_name}) in {self.facts['load_s']} s"
        )

    def _revision(self) -> str | None:
        return self.model.revision if self.model.kind == "hub" else None

    # ------------------------------------------------------------------ generation

    def _encode(self, req: Request) -> tuple[list[int] | None, str | None]:
        tok = self._tok
        if req.messages is not None:
            if not getattr(tok, "chat_template", None):
                return None, (
                    f"model {self.model.name} has no chat template; resolve without --chat "
                    "to use completion-style prompts"
                )
            text = tok.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(req.prompt)["input_ids"]
        if len(ids) + req.sampling.max_tokens > self._max_len:
            return ids, (
                f"prompt too long: {len(ids)} prompt tokens + max_tokens {req.sampling.max_tokens} "
                f"> the model's context of {self._max_len}"
            )
        return ids, None

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        self._load()
        rows: list[tuple[Request, int, int | None, list[int]]] = []
        for req in requests:
            ids, error = self._encode(req)
            if error:
                yield from failed(req, error, len(ids) if ids else None)
                continue
            assert ids is not None
            rows += [(req, s, seed, ids) for s, seed in zip(req.samples, req.seeds)]
        batch_size = int(self.engine.get("batch_size") or 8)
        rows.sort(
            key=lambda r: (
                r[0].sampling.temperature,
                r[0].sampling.top_p,
                r[0].sampling.max_tokens,
                r[0].sampling.stop,
                len(r[3]),
            )
        )
        for _, group in groupby(rows, key=lambda r: r[0].sampling):
            group_rows = list(group)
            for i in range(0, len(group_rows), batch_size):
                batch = group_rows[i : i + batch_size]
                try:
                    yield from self._run_batch(batch)
                except Exception as exc:  # one bad batch must not end the run
                    if len(batch) == 1:
                        req, s = batch[0][0], batch[0][1]
                        yield Completion(
                            req,
                            s,
                            None,
                            "error",
                            len(batch[0][3]),
                            None,
                            f"generation failed: {type(exc).__name__}: {exc}",
                        )
                    else:
                        for row in batch:  # isolate the row that fails
                            yield from self._run_batch_safe([row])

    def _run_batch_safe(self, batch: list[Any]) -> Iterator[Completion]:
        try:
            yield from self._run_batch(batch)
        except Exception as exc:
            req, s, _, ids = batch[0]
            yield Completion(
                req,
                s,
                None,
                "error",
                len(ids),
                None,
                f"generation failed: {type(exc).__name__}: {exc}",
            )

    def _run_batch(
        self, batch: list[tuple[Request, int, int | None, list[int]]]
    ) -> Iterator[Completion]:
        torch = self._torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self._tok
        sampling = batch[0][0].sampling
        width = max(len(r[3]) for r in batch)
        pad = tok.pad_token_id
        input_ids = torch.tensor(
            [[pad] * (width - len(r[3])) + r[3] for r in batch], device=self._device
        )
        attention = torch.tensor(
            [[0] * (width - len(r[3])) + [1] * len(r[3]) for r in batch], device=self._device
        )
        config = GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            do_sample=False,  # sampling, when asked, is the seeded logits processor below
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            processors.append(_SeededSampler([r[2] for r in batch], sampling, self._device, torch))
        stopper = _StopOnStrings(tok, sampling.stop, width, torch) if sampling.stop else None
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stopper] if stopper else []),
            )
        eos = (
            {tok.eos_token_id} if isinstance(tok.eos_token_id, int) else set(tok.eos_token_id or [])
        )
        for row, (req, s, _, ids) in enumerate(batch):
            generated = out[row, width:].tolist()
            n_tokens, hit_eos = 0, False
            for t in generated:
                n_tokens += 1
                if t in eos:
                    hit_eos = True
                    break
            else:
                # Rows finished by a stop string are padded after their last token.
                while n_tokens and generated[n_tokens - 1] == pad:
                    n_tokens -= 1
            text = tok.decode(generated[:n_tokens], skip_special_tokens=True)
            text, hit_stop = truncate_at_stop(text, sampling.stop)
            finish = "stop" if hit_eos or hit_stop else "length"
            yield Completion(req, s, text, finish, len(ids), n_tokens)


class _SeededSampler:
    """Temperature / top-p sampling with a generator per row; returns one-hot logits."""

    def __init__(self, seeds: list[int | None], sampling: Any, device: str, torch: Any):
        self.torch = torch
        self.temperature = sampling.temperature
        self.top_p = sampling.top_p
        self.generators = []
        for seed in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(seed or 0))
            self.generators.append(g)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self.torch
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True, dim=-1)
            keep = sorted_p.cumsum(-1) - sorted_p < self.top_p
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        chosen = [
            torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)
        ]
        out = torch.full_like(scores, float("-inf"))
        for i, c in enumerate(chosen):
            out[i, c] = 0.0
        return out


class _StopOnStrings:
    """Per-row stopping: a row ends once its generated text contains a stop string."""

    def __init__(self, tok: Any, stop: tuple[str, ...], prompt_width: int, torch: Any):
        self.tok, self.stop, self.width, self.torch = tok, stop, prompt_width, torch
        # Enough trailing tokens to contain the longest stop string, decoded each step.
        self.window = max(len(s) for s in stop) + 8

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        done = []
        for row in input_ids[:, self.width :].tolist():
            tail = self.tok.decode(row[-self.window :], skip_special_tokens=True)
            done.append(any(s in tail for s in self.stop))
        return self.torch.tensor(done, dtype=self.torch.bool, device=input_ids.device)
