"""vllm/entrypoints/llm.py: the ``LLM`` class, over the engine in :mod:`vllm.engine.llm_engine`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

from vllm.engine.arg_utils import EngineArgs
from vllm.engine.llm_engine import LLMEngine
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams


class LLM:
    # Test hooks (see the package docstring); the fixture resets them.
    instances: ClassVar[list[LLM]] = []
    fail_on: ClassVar[str | None] = None
    dead_on: ClassVar[str | None] = None
    leftovers: ClassVar[bool] = True
    available_gpus: ClassVar[int] = 8
    worker_output: ClassVar[bool] = True

    def __init__(
        self,
        model: str,
        *,
        task: str = "auto",
        tokenizer: str | None = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        allowed_local_media_path: str = "",
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
        disable_custom_all_reduce: bool = False,
        hf_token: bool | str | None = None,
        hf_overrides: Any = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        compilation_config: Any = None,
        **kwargs: Any,
    ) -> None:
        # vllm/entrypoints/llm.py, LLM.__init__: stats off unless asked for.
        if "disable_log_stats" not in kwargs:
            kwargs["disable_log_stats"] = True
        # Every other keyword goes to EngineArgs: a name that is not a field is a TypeError.
        engine_args = EngineArgs(
            model=model,
            task=task,
            tokenizer=tokenizer,
            tokenizer_mode=tokenizer_mode,
            skip_tokenizer_init=skip_tokenizer_init,
            trust_remote_code=trust_remote_code,
            allowed_local_media_path=allowed_local_media_path,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            quantization=quantization,
            revision=revision,
            tokenizer_revision=tokenizer_revision,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            swap_space=swap_space,
            cpu_offload_gb=cpu_offload_gb,
            enforce_eager=enforce_eager,
            disable_custom_all_reduce=disable_custom_all_reduce,
            hf_token=hf_token,
            hf_overrides=hf_overrides,
            mm_processor_kwargs=mm_processor_kwargs,
            compilation_config=compilation_config,
            **kwargs,
        )
        self.engine_args = engine_args
        self.model = model
        self.init_kwargs = {
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "revision": revision,
            "tokenizer_revision": tokenizer_revision,
            "trust_remote_code": trust_remote_code,
            "quantization": quantization,
            "enforce_eager": enforce_eager,
            **kwargs,
        }
        self.llm_engine = LLMEngine.from_engine_args(engine_args, type(self))
        self.request_counter = itertools.count()
        self.generate_calls = 0
        LLM.instances.append(self)

    def get_tokenizer(self, lora_request: Any = None) -> Any:
        return self.llm_engine.get_tokenizer(lora_request)

    def get_metrics(self) -> list[Any]:
        return self.llm_engine.get_metrics()

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        priority: list[int] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        self.generate_calls += 1
        if sampling_params is None:
            sampling_params = SamplingParams()
        self._validate_and_add_requests(prompts, sampling_params, lora_request, priority, tokenization_kwargs)
        return self._run_engine()

    def _validate_and_add_requests(
        self,
        prompts: Any,
        params: Any,
        lora_request: Any,
        priority: list[int] | None,
        tokenization_kwargs: dict[str, Any] | None,
    ) -> None:
        # vllm/entrypoints/llm.py, LLM._validate_and_add_requests
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if isinstance(params, Sequence) and len(params) != len(prompts):
            raise ValueError("The lengths of prompts and params must be the same.")
        seq = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        for sp in seq:
            if isinstance(sp, SamplingParams):
                sp.output_kind = RequestOutputKind.FINAL_ONLY  # only the final output is wanted
        added: list[str] = []
        try:
            for i, (prompt, sp) in enumerate(zip(prompts, seq)):
                rid = str(next(self.request_counter))
                self.llm_engine.add_request(
                    rid,
                    prompt,
                    sp,
                    lora_request=lora_request,
                    tokenization_kwargs=tokenization_kwargs,
                    priority=priority[i] if priority else 0,
                )
                added.append(rid)
        except Exception:
            # vLLM <= 0.9 left the requests already added in the engine: the next generate()
            # call returns their outputs too. Later releases abort them.
            if not LLM.leftovers:
                self.llm_engine.abort_request(added)
            raise

    def _run_engine(self) -> list[RequestOutput]:
        # vllm/entrypoints/llm.py, LLM._run_engine: step until nothing is unfinished, then
        # sort the finished outputs by request id.
        outputs: list[RequestOutput] = []
        while self.llm_engine.has_unfinished_requests():
            for out in self.llm_engine.step():
                if out.finished:
                    outputs.append(out)
        return sorted(outputs, key=lambda o: int(o.request_id))

    def chat(
        self,
        messages: Any,
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: Any = None,
        chat_template: str | None = None,
        chat_template_content_format: str = "auto",
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        # vllm/entrypoints/llm.py, LLM.chat: one conversation or a list of them; the template
        # is rendered to text, then encoded WITHOUT special tokens (the template has its BOS).
        if messages and isinstance(messages[0], list):
            conversations = messages
        else:
            conversations = [messages]
        tok = self.get_tokenizer(lora_request)
        if chat_template is None and not getattr(tok, "chat_template", None):
            # vllm/entrypoints/chat_utils.py, apply_hf_chat_template
            raise ValueError(
                "As of transformers v4.44, default chat template is no longer allowed, so you "
                "must provide a chat template if the tokenizer does not define one."
            )
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be True.")
        prompts = []
        for conv in conversations:
            text = tok.apply_chat_template(
                conv,
                chat_template=chat_template,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **(chat_template_kwargs or {}),
            )
            prompts.append({"prompt_token_ids": list(tok.encode(text, add_special_tokens=False))})
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm, lora_request=lora_request)
