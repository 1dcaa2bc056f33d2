"""The ``hf`` backend: transformers on the CPU or a GPU.

Rows (one per sampled sample, one per greedy prompt) are grouped by sampling
settings, sorted by prompt length and run in batches of ``engine.batch_size``
with left padding. The model is fed :func:`~llmeval.backends.prompt_token_ids`,
the same ids the vllm backend hands vLLM.

Only llmeval's sampling settings apply: the model's ``generation_config``
(sampling defaults, repetition penalty, length limits) is replaced at load by
a neutral one that keeps only its end-of-sequence ids, so a chat model still
stops at the end of its turn (Gemma's ``<end_of_turn>``, Llama 3's ``<|eot_id|>``),
as vLLM stops on the same ids (``SamplingParams.update_from_generation_config``).

Sampling is done by a logits processor with one ``torch.Generator`` per row,
seeded from the sample's key, so a sample's text does not depend on which
other rows share its batch. Stop sequences end a row as soon as they appear
and are cut from the text; a batch ends as soon as every row has ended.

``[engine.hf]`` options are passed to ``from_pretrained`` as given.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from itertools import groupby
from typing import Any

from llmeval.backends import (
    Backend,
    Completion,
    LoglikRequest,
    LoglikResult,
    PromptError,
    Request,
    check_length,
    continuation_token_ids,
    failed,
    prompt_token_ids,
    truncate_at_stop,
)
from llmeval.backends.options import hf_kwargs
from llmeval.errors import StageError, missing_dependency
from llmeval.models import materialize

# from_pretrained(dtype=...) (torch_dtype before); pyproject.toml's lower bound says the same.
MIN_TRANSFORMERS = (4, 56)

# One row of a batch: the request, the sample indices its text serves, its seed, its prompt ids.
Row = tuple[Request, list[int], "int | None", list[int]]


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
        with self.keepalive("loading"):
            self._load_now()

    def _load_now(self) -> None:
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        except ImportError:
            raise missing_dependency("transformers", "hf") from None
        found = tuple(int(p) for p in re.findall(r"\d+", transformers.__version__)[:2])
        if found < MIN_TRANSFORMERS:
            need = ".".join(map(str, MIN_TRANSFORMERS))
            raise StageError(
                f"the hf backend needs transformers >= {need}, found {transformers.__version__}: "
                f"pip install -U 'transformers>={need}'"
            )
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
        options = hf_kwargs(self.engine)
        transformers.utils.logging.disable_progress_bar()  # our own bar is the one on stderr
        t0 = time.monotonic()
        try:
            tok = AutoTokenizer.from_pretrained(
                where,
                revision=self._revision(),
                trust_remote_code=bool(options.get("trust_remote_code", False)),
            )
            model = AutoModelForCausalLM.from_pretrained(
                where, dtype=getattr(torch, dtype_name), revision=self._revision(), **options
            )
        except (OSError, ValueError, TypeError) as exc:
            raise StageError(
                f"cannot load model {self.model.name!r} with transformers: {exc}"
            ) from None
        if "device_map" not in options:
            model.to(device)
        model.eval()
        tok.padding_side = "left"
        pad = tok.pad_token_id
        if pad is None:
            pad = tok.eos_token_id if isinstance(tok.eos_token_id, int) else 0
        # End of sequence: the tokenizer's EOS and every id the model's generation config
        # names (chat models list their end-of-turn token there).
        eos: set[int] = set()
        for source in (getattr(model.generation_config, "eos_token_id", None), tok.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(t) for t in source)
        self._eos = sorted(eos)
        # Nothing else of the model's generation config may reach generate(): transformers
        # fills every setting a passed config leaves at its default from the model's own
        # (repetition_penalty, top_k, temperature, max_length...).
        model.generation_config = GenerationConfig(
            eos_token_id=self._eos or None, pad_token_id=pad, bos_token_id=tok.bos_token_id
        )
        self._model, self._tok, self._device, self._torch, self._pad = model, tok, device, torch, pad
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
            eos_token_ids=self._eos,
            from_pretrained=options,
            load_s=round(time.monotonic() - t0, 2),
        )
        self.log(
            f"hf: loaded {self.model.name} on {device} ({dtype_name}) in {self.facts['load_s']} s"
        )

    def _revision(self) -> str | None:
        return self.model.revision if self.model.kind == "hub" else None

    # ------------------------------------------------------------------ generation

    def _encode(self, req: Request) -> list[int]:
        ids = prompt_token_ids(self._tok, req)
        check_length(ids, req.sampling.max_tokens, self._max_len)
        return ids

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        self._load()
        rows: list[Row] = []
        for req in requests:
            try:
                ids = self._encode(req)
            except PromptError as exc:
                yield from failed(req, str(exc), exc.prompt_tokens)
                continue
            if req.greedy:
                rows.append((req, list(req.samples), None, ids))
            else:
                rows += [(req, [s], seed, ids) for s, seed in zip(req.samples, req.seeds)]
        batch_size = int(self.engine["batch_size"])
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
                    done = list(self._run_batch(batch))
                except Exception as exc:  # one bad batch must not end the run
                    if len(batch) == 1:
                        done = list(self._row_failed(batch[0], exc))
                    else:
                        done = [c for row in batch for c in self._run_batch_safe([row])]
                yield from done

    def _row_failed(self, row: Row, exc: Exception) -> Iterator[Completion]:
        req, samples, _, ids = row
        for s in samples:
            yield Completion(
                req, s, None, "error", len(ids), None, f"generation failed: {type(exc).__name__}: {exc}"
            )

    def _run_batch_safe(self, batch: list[Row]) -> list[Completion]:
        try:
            return list(self._run_batch(batch))
        except Exception as exc:
            return list(self._row_failed(batch[0], exc))

    def _run_batch(self, batch: list[Row]) -> Iterator[Completion]:
        torch = self._torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self._tok
        sampling = batch[0][0].sampling
        width = max(len(r[3]) for r in batch)
        pad = self._pad
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
            eos_token_id=self._eos or None,
            bos_token_id=tok.bos_token_id,
        )
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            processors.append(_SeededSampler([r[2] for r in batch], sampling, self._device, torch))
        criteria: list[Any] = [_Ticker(self, len(batch), torch)]
        if sampling.stop:
            criteria.append(_StopOnStrings(tok, sampling.stop, width, torch))
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList(criteria),
            )
        eos = set(self._eos)
        for row, (req, samples, _, ids) in enumerate(batch):
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
            for s in samples:
                yield Completion(req, s, text, finish, len(ids), n_tokens)


    # ------------------------------------------------------------------ log-likelihood

    def loglikelihood(self, requests: list[LoglikRequest]) -> Iterator[LoglikResult]:
        """Sum of each continuation's token log-probs after the context (lm-eval's ``loglikelihood``).

        One row per distinct model input ``(context + continuation)[:-1]``:
        continuations of one token (" A".." D") share the context's row, so an
        MMLU question is one forward pass, not four. Rows are sorted by length
        and run ``engine.batch_size`` at a time, left-padded with the attention
        mask and explicit position ids, so padding changes no number; only the
        last positions' logits are computed (``logits_to_keep``) and turned
        into float32 log-softmax. A request whose input is longer than the
        model's context is an error (lm-eval would cut its left end silently).
        """
        self._load()
        # row input (tuple of ids) -> list of (request index, choice index, continuation ids)
        rows: dict[tuple[int, ...], list[tuple[int, int, list[int]]]] = {}
        results: dict[int, LoglikResult] = {}
        todo: dict[int, int] = {}
        per_request: dict[int, tuple[list[float], list[int], list[bool]]] = {}
        for i, req in enumerate(requests):
            try:
                context, conts = continuation_token_ids(self._tok, req)
                longest = len(context) + max(len(c) for c in conts) - 1
                if longest > self._max_len:
                    raise PromptError(
                        f"prompt too long: {longest} tokens > max_model_len {self._max_len}",
                        len(context),
                    )
            except PromptError as exc:
                results[i] = LoglikResult(req, None, None, None, exc.prompt_tokens, str(exc))
                continue
            n = len(conts)
            per_request[i] = ([0.0] * n, [len(c) for c in conts], [False] * n)
            results[i] = LoglikResult(req, None, None, None, len(context))
            todo[i] = n
            for j, cont in enumerate(conts):
                rows.setdefault(tuple(context + cont[:-1]), []).append((i, j, cont))
        ordered = sorted(rows.items(), key=lambda r: -len(r[0]))
        batch_size = int(self.engine["batch_size"])
        for b in range(0, len(ordered), batch_size):
            batch = ordered[b : b + batch_size]
            try:
                scored = self._score_rows([list(r[0]) for r in batch], [r[1] for r in batch])
            except Exception:  # one bad batch must not end the run: its rows one by one
                scored = []
                for row in batch:
                    try:
                        scored += self._score_rows([list(row[0])], [row[1]])
                    except Exception as one_exc:
                        for i, _, _ in row[1]:
                            results[i].error = (
                                f"log-likelihood failed: {type(one_exc).__name__}: {one_exc}"
                            )
            for i, j, logprob, greedy in scored:
                per_request[i][0][j] = logprob
                per_request[i][2][j] = greedy
            self.tick({"phase": "log-likelihood", "rows": min(b + batch_size, len(ordered))})
        for i in range(len(requests)):
            res = results[i]
            if res.error is None and i in per_request:
                res.logprobs, res.tokens, res.greedy = per_request[i]
            yield res

    def _score_rows(
        self, inputs: list[list[int]], targets: list[list[tuple[int, int, list[int]]]]
    ) -> list[tuple[int, int, float, bool]]:
        """One forward pass over ``inputs``: (request, choice, summed log-prob, greedy) per target."""
        torch = self._torch
        width = max(len(r) for r in inputs)
        keep = max(len(c) for tg in targets for _, _, c in tg)
        pad = self._pad
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in inputs], device=self._device)
        mask = torch.tensor(
            [[0] * (width - len(r)) + [1] * len(r) for r in inputs], device=self._device
        )
        # Left padding moves a row's tokens right: positions must count real tokens only.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            try:
                out = self._model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
                )
            except TypeError:  # a model class without logits_to_keep: every position
                out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions)
            logits = out.logits[:, -keep:, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            greedy_ids = logprobs.argmax(dim=-1)
        scored = []
        for row, tg in enumerate(targets):
            for i, j, cont in tg:
                k = len(cont)
                span = logprobs[row, keep - k :, :]
                want = torch.tensor(cont, device=span.device)
                total = span.gather(-1, want.unsqueeze(-1)).squeeze(-1).sum().item()
                greedy = bool((greedy_ids[row, keep - k :] == want).all().item())
                scored.append((i, j, float(total), greedy))
        return scored


class _Ticker:
    """A stopping criterion that never stops: it keeps the heartbeat fresh during a long batch."""

    def __init__(self, backend: Backend, rows: int, torch: Any):
        self.backend, self.rows, self.torch, self.steps = backend, rows, torch, 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        self.steps += 1
        self.backend.tick(lambda: {"phase": "generating", "batch": self.rows, "step": self.steps})
        return self.torch.zeros(input_ids.shape[0], dtype=self.torch.bool, device=input_ids.device)


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
