"""A test double of vLLM's offline API, for machines without a GPU.

It is not vLLM: it generates no language. It follows vLLM's public API and
REJECTS WHAT vLLM REJECTS, each rule with a comment citing the vLLM file and
function that enforces it (releases 0.6-0.11 and current main), so that a
backend that would fail on a real engine fails here too:

- ``LLM(model, **kwargs)``: keyword arguments must be ``EngineArgs`` fields
  (:mod:`vllm.engine.arg_utils`); dtype, memory share, context length and GPU
  count are checked; the tokenizer is the model folder's real Hugging Face
  tokenizer when it has one (as vLLM loads it), else a small word tokenizer.
- ``SamplingParams``: vLLM's argument checks, greedy ``n > 1`` refused.
- prompts: ``str``, ``TextPrompt`` (``{"prompt": ...}``) or ``TokensPrompt``
  (``{"prompt_token_ids": [...]}``); text is tokenized WITH special tokens;
  token ids are checked against the vocabulary and the context length.
- ``seed`` with ``n > 1``: sample i is drawn with seed + i (V1's parallel
  sampling); an unseeded request is random (differs call to call); greedy
  output depends on the prompt ids only.
- ``RequestOutput`` / ``CompletionOutput`` with vLLM's fields.
- ``LLM.generate`` and ``LLM.chat`` (template rendered, then encoded without
  special tokens), and the engine under them, ``llm.llm_engine``:
  ``add_request`` / ``step`` / ``has_unfinished_requests`` /
  ``get_num_unfinished_requests`` / ``abort_request``, with continuous
  batching up to ``max_num_seqs``, and ``LLM.get_metrics()`` (V1 gauges).

Hooks for tests (class attributes of :class:`LLM`, reset by the fixture):
``instances``, ``fail_on`` (a prompt substring that makes ``step()`` raise
while that request runs), ``dead_on`` (same, but the engine dies:
``EngineDeadError`` for every later call), ``leftovers`` (True: a failed
``LLM.generate`` leaves the requests it had added in the engine, as vLLM
<= 0.9 did), ``available_gpus``, ``worker_output`` (start a child process that
writes to descriptor 1 while loading, as vLLM's EngineCore and workers do; the
logger, :mod:`vllm.logger`, writes to stdout unless ``VLLM_LOGGING_STREAM``
says otherwise, as vLLM's does).
"""

from vllm.entrypoints.llm import LLM
from vllm.inputs import TextPrompt, TokensPrompt
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams

__version__ = "0.11.0+testdouble"

__all__ = [
    "LLM",
    "SamplingParams",
    "RequestOutputKind",
    "TextPrompt",
    "TokensPrompt",
    "RequestOutput",
    "CompletionOutput",
]
