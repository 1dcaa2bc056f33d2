"""Multiple choice by log-likelihood: prompt records -> one record with every choice's log-prob.

    eval-resolve mmlu --num-fewshot 5 | eval-generate --model gemma3-270m --loglikelihood | eval-score

What lm-evaluation-harness does for ``output_type: multiple_choice``: each
choice's continuation (``reference.continuations``, " A".." D" or " yes") is
scored as the sum of its tokens' log-probabilities after the prompt, split
into tokens as lm-eval splits them
(:func:`llmeval.backends.continuation_token_ids`). The record gets
``choice_logprobs``, ``choice_tokens``, ``choice_bytes`` and
``choice_greedy`` (docs/records.md); eval-score picks the argmax (``acc``)
and the argmax per UTF-8 byte (``acc_norm``) with :func:`pick`.

The work is keyed like a generation (:func:`request_key`), with
``"kind": "loglikelihood"`` in the hashed object so the two never share a
key, and answered from the shared generation cache when it is there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import orjson

from llmeval.backends import Backend, LoglikRequest, LoglikResult
from llmeval.errors import DataError
from llmeval.models import ModelRef
from llmeval.records import Record, check_fields
from llmeval.vocab import FINISH_ERROR, FINISH_LOGLIKELIHOOD

KIND = "loglikelihood"


def request_key(
    model: ModelRef, record: Record, messages: list[dict[str, Any]] | None, continuations: list[str]
) -> str:
    """The content hash of one log-likelihood request (docs/records.md, ``key``)."""
    payload = {
        "v": 1,
        "kind": KIND,
        "model_id": model.model_id,
        "model_revision": model.revision,
        "tokenizer": model.tokenizer,
        "prompt": None if messages else record.get("prompt"),
        "messages": messages,
        "continuations": continuations,
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def continuations_of(rec: Record) -> list[str] | None:
    """The record's continuations, or None when it has none to score."""
    ref = rec.get("reference")
    conts = ref.get("continuations") if isinstance(ref, dict) else None
    if isinstance(conts, list) and conts and all(isinstance(c, str) and c for c in conts):
        return list(conts)
    return None


def pick(logprobs: list[float], nbytes: list[int]) -> tuple[int, int]:
    """The chosen index by log-likelihood (acc) and by log-likelihood per byte (acc_norm).

    lm-eval's ``process_results`` for multiple choice: ``argmax(lls)`` and
    ``argmax(lls / completion_len)`` with the length in UTF-8 bytes of each
    choice's continuation; numpy's argmax, so a tie goes to the first.
    """
    acc = max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))
    norm = [lp / b if b else float("-inf") for lp, b in zip(logprobs, nbytes)]
    acc_norm = max(range(len(norm)), key=lambda i: (norm[i], -i))
    return acc, acc_norm


def loglikelihood(
    numbered: Iterable[tuple[str, Record]],
    backend: Backend,
    *,
    fields: Callable[[Record], Record],
    messages_of: Callable[[Record], list[dict[str, Any]] | None],
    chunk_size: int = 1024,
    cache: Any = None,
    done_keys: set[str] | None = None,
    tally: Any = None,
    on_progress: Callable[[Any], None] | None = None,
) -> Iterator[Record]:
    """One record per prompt record (``sample`` 0), in input order within each chunk.

    ``fields(rec)`` gives the fields every eval-generate record carries (model,
    backend, run...); ``messages_of(rec)`` the chat messages the model is
    given. A record without continuations, or one the backend cannot score,
    becomes a record with ``error``; ``done_keys`` are skipped (resume).
    """
    done_keys = done_keys or set()
    model = backend.model

    def emit(
        rec: Record, key: str, result: dict[str, Any] | None, error: str | None, cached: bool
    ) -> Record:
        conts = continuations_of(rec) or []
        out = {**rec, **fields(rec)}
        out.update(
            sample=0,
            params={"loglikelihood": True},
            completion=None,
            finish_reason=FINISH_ERROR if error else FINISH_LOGLIKELIHOOD,
            usage={
                "prompt_tokens": (result or {}).get("prompt_tokens"),
                "completion_tokens": None,
            },
            error=error,
            cached=cached,
            key=key,
            choice_logprobs=None if error else result["choice_logprobs"],  # type: ignore[index]
            choice_tokens=None if error else result["choice_tokens"],  # type: ignore[index]
            choice_greedy=None if error else result["choice_greedy"],  # type: ignore[index]
            choice_bytes=[len(c.encode("utf-8")) for c in conts] if conts else None,
        )
        if tally is not None:
            tally.done += 1
            if error:
                tally.errors += 1
            elif cached:
                tally.cached += 1
            else:
                tally.generated += 1
                tally.prompt_tokens += out["usage"]["prompt_tokens"] or 0
        return out

    iterator = iter(numbered)
    while True:
        chunk = list(islice(iterator, chunk_size))
        if not chunk:
            break
        ready: list[Record | None] = []
        pending: dict[int, tuple[Record, str]] = {}
        requests: list[LoglikRequest] = []
        for where, rec in chunk:
            check_fields(where, rec, optional=("prompt", "messages", "id", "dataset", "reference"))
            if rec.get("messages") is None and rec.get("prompt") is None:
                raise DataError(where, 'no field "prompt" (a string) or "messages"')
            if tally is not None:
                tally.total += 1
                if isinstance(rec.get("dataset"), str):
                    tally.datasets.add(rec["dataset"])
            conts = continuations_of(rec)
            messages = messages_of(rec)
            key = request_key(model, rec, messages, conts or [])
            if key in done_keys:
                if tally is not None:
                    tally.skipped += 1
                    tally.done += 1
                continue
            if conts is None:
                ready.append(
                    emit(
                        rec,
                        key,
                        None,
                        'no "reference.continuations" to score: --loglikelihood needs multiple-'
                        "choice records (eval-resolve of mmlu, medqa, medmcqa, pubmedqa...)",
                        False,
                    )
                )
                continue
            hit = cache.get(key) if cache is not None else None
            if hit is not None and hit.get("kind") == KIND:
                ready.append(emit(rec, key, hit, None, True))
                continue
            pending[len(ready)] = (rec, key)
            # A placeholder, answered below, so the chunk's records keep their input order.
            requests.append(LoglikRequest(rec.get("prompt"), messages, conts, tag=len(ready)))
            ready.append(None)
        if requests:
            for res in backend.loglikelihood(requests):
                slot = res.request.tag
                rec, key = pending[slot]
                ready[slot] = _answered(rec, key, res, emit, cache, model)
                if on_progress:
                    on_progress(tally)
        yield from (r for r in ready if r is not None)
        if on_progress:
            on_progress(tally)


def _answered(
    rec: Record,
    key: str,
    res: LoglikResult,
    emit: Callable[..., Record],
    cache: Any,
    model: ModelRef,
) -> Record:
    if res.error or res.logprobs is None:
        return emit(rec, key, {"prompt_tokens": res.prompt_tokens}, res.error or "no result", False)
    result = {
        "kind": KIND,
        "choice_logprobs": res.logprobs,
        "choice_tokens": res.tokens,
        "choice_greedy": res.greedy,
        "prompt_tokens": res.prompt_tokens,
        "model_id": model.model_id,
    }
    if cache is not None:
        cache.put(key, result)
    return emit(rec, key, result, None, False)
