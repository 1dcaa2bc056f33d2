"""vllm/logprobs.py (vllm/sequence.py before 0.10): ``Logprob``, one token's entry in a logprobs dict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Logprob:
    """The log-probability of a token, its rank in the vocabulary (1 = the argmax), its text."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None
