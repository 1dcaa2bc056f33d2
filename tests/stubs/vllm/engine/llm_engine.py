"""vllm/engine/llm_engine.py (and vllm/v1/engine/llm_engine.py): the engine ``LLM`` drives.

``add_request(request_id, prompt, params)`` validates and queues a request;
``step()`` runs one scheduler iteration (every running sequence gets one
token; at most ``max_num_seqs`` run at once, the rest wait) and returns the
``RequestOutput`` of the requests that finished (``FINAL_ONLY``) or of every
running one (``CUMULATIVE``). Generated tokens are a deterministic function of
the prompt ids and, when sampling, of the seed, temperature and top_p: not of
the batch or the order.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vllm.engine.arg_utils import EngineArgs
from vllm.logger import logger
from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import _SAMPLING_EPS, RequestOutputKind, SamplingParams
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.metrics.reader import Counter, Gauge

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# vllm/model_executor/layers/quantization/__init__.py, QUANTIZATION_METHODS (the union over
# 0.6-current: a name any supported release knows is accepted).
QUANTIZATION = (
    "aqlm", "awq", "awq_marlin", "bitblas", "bitsandbytes", "compressed-tensors", "deepspeedfp",
    "experts_int8", "fbgemm_fp8", "fp8", "fp_quant", "gguf", "gptq", "gptq_bitblas",
    "gptq_marlin", "gptq_marlin_24", "hqq", "inc", "ipex", "marlin", "modelopt", "modelopt_fp4",
    "moe_wna16", "mxfp4", "neuron_quant", "petit_nvfp4", "ptpc_fp8", "qqq", "quark", "rtn",
    "squeezellm", "tpu_int8", "torchao", "fbgemm_fp8",
)  # fmt: skip
SAMPLE_TEXT = (
    "def add(a, b):\n    return a + b\n\nThe answer is 42. It is the value of x and y.\n"
    "for i in range(10):\n    print(i)\n# a comment about the function\n"
)


class WordTokenizer:
    """A small stand-in tokenizer for model folders without tokenizer files: one id per word."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
    bos_token, eos_token = "<bos>", "<eos>"
    chat_template = (
        "<bos>{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    _words: dict[int, str] = {1: "<bos>", 2: "<eos>"}

    @property
    def max_token_id(self) -> int:
        return 50010

    def _id(self, word: str) -> int:
        if word in ("<bos>", "<eos>"):
            return {"<bos>": 1, "<eos>": 2}[word]
        i = 10 + int(hashlib.sha256(word.encode()).hexdigest()[:8], 16) % 50000
        self._words[i] = word
        return i

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self._id(w) for w in text.replace("<bos>", " <bos> ").split()]
        return ([self.bos_token_id] + ids) if add_special_tokens else ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        specials = {0, 1, 2}
        return " ".join(
            self._words.get(i, f"w{i}") for i in ids if not (skip_special_tokens and i in specials)
        )

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        **kwargs: Any,
    ) -> Any:
        text = "<bos>" + "".join(f"<{m['role']}> {m['content']} " for m in messages)
        if add_generation_prompt:
            text += "<assistant>"
        return self.encode(text, add_special_tokens=False) if tokenize else text


def load_tokenizer(args: EngineArgs) -> Any:
    """What vllm/transformers_utils/tokenizer.py ``get_tokenizer`` returns: the folder's HF tokenizer."""
    path = args.tokenizer or args.model
    if os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")
    ):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            path, revision=args.tokenizer_revision, trust_remote_code=args.trust_remote_code
        )
    return WordTokenizer()


@dataclass
class ModelConfig:
    model: str
    max_model_len: int
    dtype: str
    runner_type: str = "generate"


@dataclass
class CacheConfig:
    block_size: int
    num_gpu_blocks: int
    enable_prefix_caching: bool


@dataclass
class _Seq:
    index: int
    plan: list[int]  # the tokens this sequence will produce before EOS
    produced: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_ids: list[int]
    prompt_text: str  # decoded, for the failure hooks
    params: SamplingParams
    seqs: list[_Seq]

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.seqs)


class LLMEngine:
    def __init__(self, args: EngineArgs, hooks: Any) -> None:
        self.args = args
        self.hooks = hooks  # the LLM class: fail_on, dead_on, available_gpus
        self.log_stats = not args.disable_log_stats
        self.dead = False
        self.tokenizer = load_tokenizer(args)
        self.model_config = ModelConfig(args.model, self._max_len(), args.dtype)
        block = args.block_size or 16
        self.cache_config = CacheConfig(block, 4096, bool(args.enable_prefix_caching))
        self.max_num_seqs = args.max_num_seqs or 256
        self.waiting: deque[_Request] = deque()
        self.running: list[_Request] = []
        self.requests: dict[str, _Request] = {}
        self.added: list[tuple[str, Any, SamplingParams]] = []  # every add_request, for tests
        self.steps = 0
        self.max_unfinished = 0  # the most requests the engine held at once
        self.prefix_queries = self.prefix_hits = 0
        self._seen_prefixes: set[tuple[int, ...]] = set()
        # vllm/transformers_utils/tokenizer.py, get_cached_tokenizer: max_token_id is the
        # largest id of the vocabulary (added tokens included).
        self.max_token_id = (
            self.tokenizer.max_token_id
            if isinstance(self.tokenizer, WordTokenizer)
            else max(self.tokenizer.get_vocab().values())
        )
        vocab = sorted(set(self.tokenizer.encode(SAMPLE_TEXT, add_special_tokens=False)))
        self._vocab = vocab or list(range(10, 60))

    @classmethod
    def from_engine_args(cls, args: EngineArgs, hooks: Any) -> LLMEngine:
        cls._verify(args, hooks)
        logger.info("Initializing a V1 LLM engine (v%s) with config: model=%r", "test-double", args.model)
        if getattr(hooks, "worker_output", True):
            # The EngineCore process inherits descriptor 1, as vLLM's worker processes do.
            subprocess.run(["sh", "-c", "echo '(EngineCore_0 pid=0) INFO worker started'"], check=False)
        return cls(args, hooks)

    @staticmethod
    def _verify(args: EngineArgs, hooks: Any) -> None:
        # vllm/config.py, ModelConfig: a local folder needs a config; else a hub id
        # (vllm/transformers_utils/config.py, get_config).
        if os.path.isdir(args.model):
            if not os.path.isfile(os.path.join(args.model, "config.json")):
                raise ValueError(
                    f"Invalid repository ID or local directory specified: '{args.model}'."
                )
        elif args.model.startswith(("/", ".", "~")) or args.model.count("/") > 1:
            # A hub id is "name" or "org/name" (gpt2 has no org); a path that is not a folder
            # is neither.
            raise ValueError(f"Invalid repository ID or local directory specified: '{args.model}'.")
        # vllm/config.py, _get_and_verify_dtype
        if args.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype: {args.dtype}")
        # vllm/config.py, CacheConfig._verify_args
        if not 0 < args.gpu_memory_utilization <= 1:
            raise ValueError(
                "GPU memory utilization must be less than 1.0. Got "
                f"{args.gpu_memory_utilization}."
            )
        # vllm/config.py, ModelConfig._verify_quantization
        if args.quantization is not None and args.quantization not in QUANTIZATION:
            raise ValueError(
                f"Unknown quantization method: {args.quantization}. Must be one of {list(QUANTIZATION)}."
            )
        # vllm/config.py, ParallelConfig: the world size must fit the GPUs there are.
        world = args.tensor_parallel_size * args.pipeline_parallel_size
        if world > hooks.available_gpus:
            raise ValueError(
                f"The number of required GPUs exceeds the total number of available GPUs "
                f"in the placement group (world size {world} > {hooks.available_gpus})."
            )
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs"):
            value = getattr(args, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def _max_len(self) -> int:
        # vllm/config.py, _get_and_verify_max_len: the config's length, unless a smaller one is asked.
        derived = 2048
        cfg = os.path.join(self.args.model, "config.json")
        if os.path.isfile(cfg):
            with open(cfg) as fh:
                data = json.load(fh)
            text = data.get("text_config") or data
            derived = int(text.get("max_position_embeddings") or derived)
        asked = self.args.max_model_len
        if asked is not None and asked > derived:
            raise ValueError(
                f"User-specified max_model_len ({asked}) is greater than the derived "
                f"max_model_len (max_position_embeddings={derived} in model's config.json). "
                "This may lead to incorrect model outputs or CUDA errors."
            )
        return asked or derived

    # ------------------------------------------------------------------ the API LLM uses

    def get_tokenizer(self, lora_request: Any = None) -> Any:
        return self.tokenizer

    def get_model_config(self) -> ModelConfig:
        return self.model_config

    def _alive(self) -> None:
        if self.dead:
            raise EngineDeadError()

    def _parse_prompt(self, prompt: Any, tokenization_kwargs: dict | None) -> tuple[str | None, list[int]]:
        # vllm/inputs/parse.py, parse_singleton_prompt: str, TextPrompt or TokensPrompt.
        if isinstance(prompt, str):
            prompt = {"prompt": prompt}
        if not isinstance(prompt, dict):
            raise TypeError("inputs must be a string, TextPrompt, TokensPrompt, or EmbedsPrompt")
        if "prompt_token_ids" in prompt:
            ids = prompt["prompt_token_ids"]
            if not isinstance(ids, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in ids
            ):
                raise TypeError("prompt_token_ids must be a list of int")
            return prompt.get("prompt"), list(ids)
        if "prompt" in prompt:
            text = prompt["prompt"]
            if not isinstance(text, str):
                raise TypeError("TextPrompt.prompt must be a str")
            # vllm/inputs/preprocess.py, InputPreprocessor._tokenize_prompt: encode() with the
            # tokenizer's default, i.e. WITH special tokens (a BOS for Llama, Gemma, Mistral).
            add = (tokenization_kwargs or {}).get("add_special_tokens", True)
            return text, list(self.tokenizer.encode(text, add_special_tokens=add))
        raise TypeError("inputs must be a string, TextPrompt, TokensPrompt, or EmbedsPrompt")

    def add_request(
        self,
        request_id: str,
        prompt: Any,
        params: Any,
        arrival_time: float | None = None,
        lora_request: Any = None,
        tokenization_kwargs: dict | None = None,
        trace_headers: Any = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> None:
        self._alive()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        # vllm/v1/engine/processor.py, Processor._validate_lora / _validate_params
        if lora_request is not None and not self.args.enable_lora:
            raise ValueError(f"Got lora_request {lora_request} but LoRA is not enabled!")
        if priority != 0 and self.args.scheduling_policy != "priority":
            raise ValueError(f"Got priority {priority} but Priority scheduling is not enabled.")
        # vllm/v1/engine/output_processor.py, OutputProcessor.add_request
        if request_id in self.requests:
            raise ValueError(f"Request id {request_id} already running.")
        text, ids = self._parse_prompt(prompt, tokenization_kwargs)
        # vllm/v1/engine/processor.py, Processor._validate_model_input
        if not ids:
            raise ValueError("The decoder prompt cannot be empty")
        max_id = max(ids)
        if max_id > self.max_token_id or min(ids) < 0:
            raise ValueError(f"Token id {max_id} is out of vocabulary")
        if len(ids) > self.model_config.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {len(ids)}) is longer than the maximum model "
                f"length of {self.model_config.max_model_len}. Make sure that `max_model_len` "
                "is no smaller than the number of text tokens."
            )
        # vllm/v1/engine/processor.py, Processor._validate_logprobs: at most max_logprobs
        # (EngineArgs.max_logprobs, 20 by default; -1 = the vocabulary) per position.
        limit = self.args.max_logprobs if self.args.max_logprobs != -1 else self.max_token_id + 1
        for what, asked in (("sample", params.logprobs), ("prompt", params.prompt_logprobs)):
            if asked:
                n = self.max_token_id + 1 if asked == -1 else asked
                if n > limit:
                    raise ValueError(
                        f"Requested {what} logprobs of {n}, which is greater than max allowed: {limit}"
                    )
        params = params.clone()  # the engine keeps its own copy
        self.added.append((request_id, prompt, params))
        req = _Request(
            request_id,
            text,
            ids,
            self.tokenizer.decode(ids, skip_special_tokens=False),
            params,
            [_Seq(i, self._plan(ids, params, i)) for i in range(params.n)],
        )
        self.requests[request_id] = req
        self.waiting.append(req)
        self.max_unfinished = max(self.max_unfinished, len(self.requests))

    def _plan(self, ids: list[int], params: SamplingParams, index: int) -> list[int]:
        """The tokens sequence ``index`` will produce: a function of its inputs, not of the batch."""
        if params.temperature < _SAMPLING_EPS:
            material = f"greedy|{ids}"  # greedy: nothing but the prompt matters
        elif params.seed is None:
            material = os.urandom(16).hex()  # unseeded: a new draw every time
        else:
            # vllm/v1/engine/parallel_sampling.py, ParentRequest._get_child_sampling_params:
            # with n > 1, child i samples with seed + i.
            material = f"seed|{ids}|{params.seed + index}|{params.temperature}|{params.top_p}"
        rng = random.Random(hashlib.sha256(material.encode()).digest())
        natural = rng.randint(3, 40)
        return [rng.choice(self._vocab) for _ in range(natural)]

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def get_num_unfinished_requests(self) -> int:
        return len(self.requests)

    def abort_request(self, request_id: str | Iterable[str], internal: bool = False) -> None:
        self._alive()
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        for rid in ids:
            req = self.requests.pop(rid, None)
            if req is None:
                continue
            if req in self.running:
                self.running.remove(req)
            if req in self.waiting:
                self.waiting.remove(req)

    def step(self) -> list[RequestOutput]:
        self._alive()
        self.steps += 1
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting.popleft()
            self.prefix_queries += len(req.prompt_ids)
            prefix = tuple(req.prompt_ids)
            if prefix in self._seen_prefixes and self.cache_config.enable_prefix_caching:
                self.prefix_hits += len(req.prompt_ids)
            self._seen_prefixes.add(prefix)
            self.running.append(req)
        for req in self.running:
            if self.hooks.dead_on and self.hooks.dead_on in req.prompt_text:
                self.dead = True
                raise EngineDeadError()
            if self.hooks.fail_on and self.hooks.fail_on in req.prompt_text:
                raise RuntimeError("stand-in engine failure")
        outputs = []
        for req in list(self.running):
            for seq in req.seqs:
                if seq.finish_reason is None:
                    self._advance(req, seq)
            if req.finished:
                self.running.remove(req)
                del self.requests[req.request_id]
            if req.finished or req.params.output_kind != RequestOutputKind.FINAL_ONLY:
                outputs.append(self._output(req))
        return outputs

    def _advance(self, req: _Request, seq: _Seq) -> None:
        params = req.params
        if len(seq.produced) == len(seq.plan) and not params.ignore_eos:
            seq.produced.append(self.tokenizer.eos_token_id)  # EOS is in token_ids, not in text
            seq.finish_reason, seq.stop_reason = "stop", None
            return
        seq.produced.append(seq.plan[len(seq.produced) % len(seq.plan)])
        text = self.tokenizer.decode(seq.produced, skip_special_tokens=params.skip_special_tokens)
        cut = min(
            ((i, s) for s in params.stop if (i := text.find(s)) >= 0), default=None
        )
        if cut is not None:  # the stop string ends the output and is not part of it
            seq.text = text if params.include_stop_str_in_output else text[: cut[0]]
            seq.finish_reason, seq.stop_reason = "stop", cut[1]
            return
        seq.text = text
        if params.max_tokens is not None and len(seq.produced) >= params.max_tokens:
            seq.finish_reason = "length"
        elif len(req.prompt_ids) + len(seq.produced) >= self.model_config.max_model_len:
            seq.finish_reason = "length"

    def _output(self, req: _Request) -> RequestOutput:
        outs = [
            CompletionOutput(
                s.index, s.text, list(s.produced), None, None, s.finish_reason, s.stop_reason
            )
            for s in req.seqs
        ]
        prompt_logprobs = None
        if req.params.prompt_logprobs is not None and req.finished:
            prompt_logprobs = self.prompt_logprobs(req.prompt_ids, req.params.prompt_logprobs)
        return RequestOutput(
            req.request_id, req.prompt, list(req.prompt_ids), prompt_logprobs, outs, req.finished
        )

    # ------------------------------------------------------------------ prompt logprobs

    def token_logprob(self, prefix: list[int], token: int) -> float:
        """The double's log-probability of ``token`` after ``prefix``: a function of both only.

        Not a normalised distribution (the double has no model); what matters to a
        caller is where each number sits, and that it depends on the prefix."""
        h = hashlib.sha256(f"{prefix}|{token}".encode()).digest()
        return -0.05 - int.from_bytes(h[:4], "big") % 100000 / 10000.0

    def prompt_logprobs(self, ids: list[int], k: int) -> list[dict[int, Logprob] | None]:
        """What ``RequestOutput.prompt_logprobs`` holds (vllm/v1/engine/logprobs.py,
        ``LogprobsProcessor._update_prompt_logprobs``): None for the first prompt token (nothing
        precedes it), then per position a dict of the prompt token's Logprob (with its rank)
        and the ``k`` most likely tokens' (``k`` = 0: the prompt token's only)."""
        out: list[dict[int, Logprob] | None] = [None]
        for i in range(1, len(ids)):
            prefix, actual = ids[:i], ids[i]
            pool = sorted(
                {*self._vocab, actual}, key=lambda t: (-self.token_logprob(prefix, t), t)
            )
            ranks = {t: r + 1 for r, t in enumerate(pool)}
            top = pool[: (len(pool) if k == -1 else k)]
            out.append(
                {
                    t: Logprob(self.token_logprob(prefix, t), ranks[t], None)
                    for t in [actual, *top]
                }
            )
        return out

    def get_metrics(self) -> list[Any]:
        # vllm/v1/engine/llm_engine.py, LLMEngine.get_metrics: a snapshot of the Prometheus
        # metrics, which exist only with stats on (LLM() turns them off by default).
        assert self.log_stats, "Stat logging disabled"
        used = sum(len(r.prompt_ids) + max(len(s.produced) for s in r.seqs) for r in self.running)
        capacity = self.cache_config.num_gpu_blocks * self.cache_config.block_size
        return [
            Gauge("vllm:num_requests_running", {}, float(len(self.running))),
            Gauge("vllm:num_requests_waiting", {}, float(len(self.waiting))),
            Gauge("vllm:kv_cache_usage_perc", {}, min(1.0, used / capacity)),
            Counter("vllm:prefix_cache_queries", {}, self.prefix_queries),
            Counter("vllm:prefix_cache_hits", {}, self.prefix_hits),
        ]

