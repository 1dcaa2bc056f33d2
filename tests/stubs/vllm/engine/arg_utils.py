"""vllm/engine/arg_utils.py: EngineArgs, the dataclass behind ``LLM(**kwargs)``.

``LLM.__init__`` passes its keyword arguments to ``EngineArgs(...)``, so an
argument that is not a field is a ``TypeError`` ("EngineArgs.__init__() got an
unexpected keyword argument ..."). The fields are the ones vLLM 0.6-0.11 and
current share (plus a few newer ones), with vLLM's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EngineArgs:
    model: str = "facebook/opt-125m"
    served_model_name: str | list[str] | None = None
    tokenizer: str | None = None
    task: str = "auto"
    skip_tokenizer_init: bool = False
    tokenizer_mode: str = "auto"
    trust_remote_code: bool = False
    allowed_local_media_path: str = ""
    download_dir: str | None = None
    load_format: str = "auto"
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    seed: int | None = None
    max_model_len: int | None = None
    distributed_executor_backend: Any = None
    pipeline_parallel_size: int = 1
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    enable_expert_parallel: bool = False
    max_parallel_loading_workers: int | None = None
    block_size: int | None = None
    enable_prefix_caching: bool | None = None
    disable_sliding_window: bool = False
    swap_space: float = 4
    cpu_offload_gb: float = 0
    gpu_memory_utilization: float = 0.90
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_logprobs: int = 20
    disable_log_stats: bool = False
    revision: str | None = None
    code_revision: str | None = None
    rope_scaling: dict[str, Any] | None = None
    rope_theta: float | None = None
    hf_overrides: Any = None
    hf_token: bool | str | None = None
    tokenizer_revision: str | None = None
    quantization: str | None = None
    enforce_eager: bool | None = None
    max_seq_len_to_capture: int = 8192
    disable_custom_all_reduce: bool = False
    limit_mm_per_prompt: dict[str, int] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    enable_lora: bool = False
    enable_lora_bias: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    fully_sharded_loras: bool = False
    device: str = "auto"
    num_gpu_blocks_override: int | None = None
    model_loader_extra_config: dict | None = None
    ignore_patterns: str | list[str] | None = None
    preemption_mode: str | None = None
    scheduling_policy: str = "fcfs"
    enable_chunked_prefill: bool | None = None
    speculative_config: dict[str, Any] | None = None
    compilation_config: Any = None
    kv_transfer_config: Any = None
    generation_config: str | None = "auto"
    override_generation_config: dict[str, Any] | None = None
    enable_sleep_mode: bool = False
    model_impl: str = "auto"
    calculate_kv_scales: bool | None = None
    disable_async_output_proc: bool = False
    override_pooler_config: Any = None
    worker_cls: str = "auto"

    def __post_init__(self) -> None:
        if not self.tokenizer:
            self.tokenizer = self.model
