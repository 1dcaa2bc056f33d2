"""A stand-in for vLLM's offline API, for tests on machines without a GPU.

It follows vLLM's documented signatures closely enough that a wrong call fails:
``LLM(model, *, tokenizer=None, tensor_parallel_size=1, dtype="auto", seed=None,
gpu_memory_utilization=0.9, ..., **engine_kwargs)`` where engine kwargs must be
real ``EngineArgs`` fields; ``LLM.generate(prompts, sampling_params=None, *,
use_tqdm=True, ...)`` with one SamplingParams or a list of the same length as
the prompts; a prompt longer than ``max_model_len`` raises ``ValueError`` for
the whole call, as vLLM does; ``SamplingParams`` validates its arguments;
outputs are ``RequestOutput`` / ``CompletionOutput`` with vLLM's field names.
Text is a deterministic function of the prompt, seed and output index.
Every call is recorded in ``LLM.calls`` for assertions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

__version__ = "0.0.0+standin"

# A subset of vllm.engine.arg_utils.EngineArgs fields that LLM(**kwargs) accepts.
ENGINE_ARGS = {
    "max_num_seqs",
    "max_num_batched_tokens",
    "enable_prefix_caching",
    "max_model_len",
    "block_size",
    "swap_space",
    "kv_cache_dtype",
    "enable_chunked_prefill",
    "pipeline_parallel_size",
    "disable_log_stats",
    "download_dir",
    "load_format",
    "distributed_executor_backend",
}


class _Tokenizer:
    """Whitespace 'tokenizer' standing in for the HF tokenizer vLLM returns."""

    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [hash(w) % 50000 for w in text.split()]
        return ([1] + ids) if add_special_tokens else ids

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = False, tokenize: bool = True
    ) -> Any:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        if add_generation_prompt:
            text += "<assistant>"
        return self.encode(text) if tokenize else text


@dataclass
class SamplingParams:
    n: int = 1
    best_of: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is None:
            self.stop = []


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


class RequestOutput:
    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: Any,
        outputs: list[CompletionOutput],
        finished: bool,
        **kwargs: Any,
    ):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished


@dataclass
class _ModelConfig:
    max_model_len: int


@dataclass
class _Engine:
    model_config: _ModelConfig


@dataclass
class _Call:
    prompts: list[str]
    params: list[SamplingParams]
    use_tqdm: bool


class LLM:
    instances: list[LLM] = []
    fail_on: str | None = None  # a prompt substring that makes generate() raise, for tests

    def __init__(
        self,
        model: str,
        *,
        task: str = "auto",
        tokenizer: str | None = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        quantization: str | None = None,
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        seed: int | None = None,
        gpu_memory_utilization: float = 0.9,
        swap_space: float = 4,
        cpu_offload_gb: float = 0,
        enforce_eager: bool = False,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(
                f"EngineArgs.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}"
            )
        if dtype not in ("auto", "half", "float16", "bfloat16", "float", "float32"):
            raise ValueError(f"Unknown dtype: {dtype}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        self.model = model
        self.init_kwargs = {
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "revision": revision,
            **kwargs,
        }
        self.llm_engine = _Engine(_ModelConfig(int(kwargs.get("max_model_len") or 2048)))
        self.calls: list[_Call] = []
        self._tok = _Tokenizer()
        LLM.instances.append(self)

    def get_tokenizer(self, lora_request: Any = None) -> _Tokenizer:
        return self._tok

    def generate(
        self,
        prompts: Any,
        sampling_params: Any = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        priority: list[int] | None = None,
    ) -> list[RequestOutput]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a str or a list of str in this stand-in")
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = (
            sampling_params
            if isinstance(sampling_params, list)
            else [sampling_params] * len(prompts)
        )
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        if not all(isinstance(p, SamplingParams) for p in params):
            raise TypeError("sampling_params must be SamplingParams")
        limit = self.llm_engine.model_config.max_model_len
        for p in prompts:
            n = len(self._tok.encode(p))
            if n > limit:
                raise ValueError(
                    f"The decoder prompt (length {n}) is longer than the maximum model length of {limit}."
                )
            if LLM.fail_on and LLM.fail_on in p:
                raise RuntimeError("stand-in engine failure")
        self.calls.append(_Call(list(prompts), list(params), use_tqdm))
        outputs = []
        for i, (prompt, sp) in enumerate(zip(prompts, params)):
            choices = []
            for j in range(sp.n):
                digest = hashlib.sha256(
                    f"{prompt}|{sp.seed}|{sp.temperature}|{j}".encode()
                ).hexdigest()
                words = [
                    f"w{digest[k : k + 4]}" for k in range(0, 4 * min(sp.max_tokens or 16, 12), 4)
                ]
                finish = "length" if (sp.max_tokens or 16) <= 12 else "stop"
                text = " ".join(words[: sp.max_tokens])
                choices.append(
                    CompletionOutput(
                        j, text, list(range(len(words[: sp.max_tokens]))), None, None, finish, None
                    )
                )
            outputs.append(
                RequestOutput(str(i), prompt, self._tok.encode(prompt), None, choices, True)
            )
        return outputs
