"""Prompts: a dataset's docs -> the text a model is given, zero- or few-shot.

The layout is lm-evaluation-harness's (``ConfigurableTask.fewshot_context`` in
lm_eval/api/task.py, v0.4): the spec's description, then each example's
question, the target delimiter, its answer and the few-shot delimiter, then
the question::

    {description}{q1}{target_delimiter}{a1}{fewshot_delimiter}...{q}

Few-shot examples come from the spec's few-shot split, never the evaluated
one, and from the same group (MMLU: the subject). Two samplers:

* ``first_n``: the first K of the group, in file order (lm-eval's, for MMLU);
* ``random``: for each task on its own, example ``j`` is
  ``pool[int(sha256("<seed>:<task_id>:<j>")[:16], 16) % len(pool)]``, drawing
  again (``j+1``, ...) over repeats. The choice depends on the seed, the task
  and the pool only: not on the order, ``--limit``, ``--shard`` or the Python
  version. (lm-eval draws from one ``Random(1234)`` across the tasks in turn,
  so its examples depend on the order; the seed is the same default.)

A system prompt (``--system``) goes first: in chat records as the system
message; in text prompts joined to the rest by the few-shot delimiter, as
lm-eval joins ``--system_instruction`` to a task's description.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from llmeval.errors import DataError
from llmeval.loaders import Doc
from llmeval.specs import DatasetSpec


def fewshot_pools(docs: Iterable[Doc]) -> dict[str | None, list[Doc]]:
    """The few-shot split's docs by group, in file order."""
    pools: dict[str | None, list[Doc]] = {}
    for doc in docs:
        pools.setdefault(doc.group, []).append(doc)
    return pools


def choose_examples(
    spec: DatasetSpec, doc: Doc, pools: dict[str | None, list[Doc]], k: int
) -> list[Doc]:
    """The ``k`` few-shot examples of ``doc`` (see the module docstring for the samplers)."""
    if k <= 0:
        return []
    pool = pools.get(doc.group, [])
    if len(pool) < k:
        group = f" for {doc.group}" if doc.group is not None else ""
        raise DataError(
            spec.name,
            f"the few-shot split {spec.fewshot_split!r} has {len(pool)} examples{group}, "
            f"--num-fewshot asks for {k}",
        )
    if spec.fewshot_sampler == "first_n":
        return pool[:k]
    chosen: list[int] = []
    j = 0
    while len(chosen) < k:
        digest = hashlib.sha256(f"{spec.fewshot_seed}:{doc.task_id}:{j}".encode()).hexdigest()
        i = int(digest[:16], 16) % len(pool)
        if i not in chosen:
            chosen.append(i)
        j += 1
    return [pool[i] for i in chosen]


def render(spec: DatasetSpec, key: str, doc: Doc) -> str:
    """One of the spec's templates filled with ``doc``'s values; a missing field names the row."""
    template = {
        "template": spec.template,
        "description": spec.prompt_description,
        "target": spec.target,
    }[key]
    if template is None:
        return default_target(spec, doc)
    try:
        return template.render(doc.values)
    except KeyError as exc:
        raise DataError(
            doc.where,
            f'no field "{exc.args[0]}" (used by prompt.{key} of '
            f"{spec.path.name if spec.path else spec.name})",
        ) from None


def default_target(spec: DatasetSpec, doc: Doc) -> str:
    """A few-shot example's answer when the spec names none: the gold choice (its letter or
    text, as the continuations say it) or the gold answer."""
    ref = doc.reference
    if "label" in ref:
        return str(doc.values["label_text" if spec.choice_answer == "text" else "label"])
    if "answer" in ref:
        return str(ref["answer"])
    raise DataError(doc.where, f"{spec.name}: no prompt.target for a few-shot example")


def build_prompt(
    spec: DatasetSpec, doc: Doc, examples: list[Doc], system: str | None = None
) -> str:
    """The text prompt of ``doc`` with ``examples`` before it (lm-eval's layout)."""
    parts = [render(spec, "description", doc)]
    for ex in examples:
        parts += [
            render(spec, "template", ex),
            spec.target_delimiter,
            render(spec, "target", ex),
            spec.fewshot_delimiter,
        ]
    parts.append(render(spec, "template", doc))
    body = "".join(parts)
    return join_system(system, body, spec.fewshot_delimiter) if system else body


def join_system(system: str, body: str, delimiter: str = "\n\n") -> str:
    """lm-eval's ``maybe_delimit``: the delimiter only where neither side has space at the seam."""
    if not body:
        return system
    if system[-1:].isspace() or body[:1].isspace():
        return system + body
    return system + delimiter + body


def messages(spec: DatasetSpec, prompt: str, system: str | None) -> list[dict[str, Any]]:
    """Chat messages for a prompt: the system prompt, then the user turn (instruction + prompt)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": spec.chat_instruction + prompt})
    return out


def fewshot_id(spec: DatasetSpec, doc: Doc) -> str:
    """How a record names a few-shot example: ``<split>:<task_id>`` (``dev:anatomy/0``)."""
    return f"{spec.fewshot_split}:{doc.task_id}"
