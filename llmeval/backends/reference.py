"""The ``reference`` backend: answers with each task's own reference solution.

A sanity check of the scorer and a ceiling to compare models against:
``eval-generate --backend reference --model reference`` emits HumanEval's and
MBPP's canonical solutions, GSM8K's gold answer as ``#### N``, and the gold
choice for multiple choice (its continuation: `` B``, or `` yes`` where the
choices are answered by their text). A task without a reference gets an error
record.
"""

from __future__ import annotations

from collections.abc import Iterator

from llmeval.backends import Backend, Completion, Request, failed
from llmeval.models import ModelRef


def reference_model(name: str) -> ModelRef:
    """The reference 'model': its identity is fixed, so its answers cache like any other."""
    return ModelRef(name, "reference", "llmeval:reference", "v1", "llmeval:reference@v1", None)


def answer(reference: dict) -> str | None:
    if isinstance(reference.get("canonical_solution"), str):
        return reference["canonical_solution"]
    if reference.get("answer") is not None:
        return f"#### {reference['answer']}"
    label = reference.get("label")
    if label is not None:
        # the gold continuation: " B", or the choice's text where choices are answered by it
        conts = reference.get("continuations")
        index = "ABCDEFGHIJ".find(str(label))
        if isinstance(conts, list) and 0 <= index < len(conts):
            return str(conts[index])
        return f" {label}"
    return None


class ReferenceBackend(Backend):
    name = "reference"

    def generate(self, requests: list[Request]) -> Iterator[Completion]:
        for req in requests:
            text = answer(req.reference or {})
            if text is None:
                yield from failed(req, "the record has no reference solution or answer")
                continue
            for s in req.samples:
                yield Completion(req, s, text, "stop", None, None)
