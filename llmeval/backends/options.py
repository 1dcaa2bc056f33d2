"""Engine options: the typed schema of each backend's own table, and ``--engine KEY=VALUE``.

A preset's ``[engine]`` table holds the settings llmeval itself reads (backend,
batch size, dtype, context length, tensor parallelism, vLLM memory and
batching...; :data:`llmeval.presets.SCHEMA`, defaults in presets/base.toml).
Two sub-tables carry what goes to an engine untouched:

- ``[engine.vllm]``: keyword arguments of ``vllm.LLM(...)``, i.e. fields of
  ``vllm.engine.arg_utils.EngineArgs`` (trust_remote_code, quantization,
  enforce_eager, enable_lora, kv_cache_dtype, hf_overrides, ...);
- ``[engine.hf]``: keyword arguments of transformers'
  ``AutoModelForCausalLM.from_pretrained`` (attn_implementation,
  trust_remote_code, device_map, quantization_config, ...).

Known keys are typed and range-checked like every preset key; an unknown key
is one line naming it. For vLLM, a key outside the table below is still
accepted when it is a field of the installed vLLM's ``EngineArgs`` (vLLM adds
fields every release). A key that [engine] already has (``tensor_parallel_size``,
``max_model_len``, ``dtype``...) is set there, not in a sub-table: one place
per setting.

On the command line, ``--engine KEY=VALUE`` (repeatable) sets any of them:
``tensor_parallel_size=2`` (an [engine] key), ``enforce_eager=true`` (found in
the chosen backend's table), or explicitly ``vllm.enforce_eager=true`` /
``hf.attn_implementation=sdpa``. VALUE is read as JSON, else as a TOML value,
else as a string: ``quantization=awq``, ``hf_overrides={"rope_theta": 1e6}``.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from llmeval.presets import SCHEMA, Key, PresetError, check_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_B = Key(bool)
_S = Key(str)
_D = Key(dict)

# vllm.LLM(**kwargs) -> vllm.engine.arg_utils.EngineArgs(**kwargs), typed as EngineArgs
# declares them: fields of vLLM 0.6 that current vLLM still has, a few later ones noted,
# and three that recent releases dropped (swap_space, max_seq_len_to_capture,
# rope_scaling: where vLLM has no such argument, loading fails with one line naming it).
VLLM: dict[str, Key] = {
    "trust_remote_code": _B,
    "tokenizer": _S,
    "tokenizer_mode": _S,
    "tokenizer_revision": _S,
    "quantization": _S,
    "kv_cache_dtype": _S,
    "enforce_eager": _B,
    "seed": Key(int, 0),
    "swap_space": Key(float, 0.0),
    "cpu_offload_gb": Key(float, 0.0),
    "pipeline_parallel_size": Key(int, 1),
    "data_parallel_size": Key(int, 1),  # 0.8+
    "enable_expert_parallel": _B,  # 0.8+
    "block_size": Key(int, 1),
    "enable_chunked_prefill": _B,
    "max_seq_len_to_capture": Key(int, 1),
    "disable_custom_all_reduce": _B,
    "distributed_executor_backend": _S,
    "download_dir": _S,
    "load_format": _S,
    "enable_lora": _B,
    "max_lora_rank": Key(int, 1),
    "max_loras": Key(int, 1),
    "max_cpu_loras": Key(int, 1),
    "disable_log_stats": _B,
    "disable_sliding_window": _B,
    "hf_overrides": _D,
    "rope_scaling": _D,
    "compilation_config": Key((int, dict)),
    "speculative_config": _D,  # 0.8+
    "limit_mm_per_prompt": _D,
    "mm_processor_kwargs": _D,
    "max_logprobs": Key(int, 0),
    "num_gpu_blocks_override": Key(int, 1),
    "generation_config": _S,
    "override_generation_config": _D,
    "model_impl": _S,
    "calculate_kv_scales": _B,
    "scheduling_policy": Key(str, choices=("fcfs", "priority")),
    "kv_transfer_config": _D,
}

# transformers AutoModelForCausalLM.from_pretrained(**kwargs): loading options.
HF: dict[str, Key] = {
    "trust_remote_code": _B,
    "attn_implementation": _S,
    "device_map": Key((str, dict)),
    "low_cpu_mem_usage": _B,
    "use_safetensors": _B,
    "local_files_only": _B,
    "subfolder": _S,
    "variant": _S,
    "cache_dir": _S,
    "quantization_config": _D,
    "max_memory": _D,
    "offload_folder": _S,
    "tp_plan": _S,
}

TABLES: dict[str, dict[str, Key]] = {"vllm": VLLM, "hf": HF}

# [engine] keys that become vllm.LLM(...) arguments under the same name.
VLLM_FROM_ENGINE = (
    "dtype",
    "gpu_memory_utilization",
    "max_num_seqs",
    "max_num_batched_tokens",
    "enable_prefix_caching",
    "tensor_parallel_size",
)


@lru_cache(maxsize=1)
def _vllm_engine_fields() -> frozenset[str]:
    """The installed vLLM's EngineArgs fields (empty when vLLM is not installed)."""
    if importlib.util.find_spec("vllm") is None:
        return frozenset()
    try:
        import dataclasses

        from llmeval.backends.vllm import stdout_to_stderr

        with stdout_to_stderr():  # importing vllm configures its logger: on stderr, please
            from vllm.engine.arg_utils import EngineArgs

        return frozenset(f.name for f in dataclasses.fields(EngineArgs))
    except Exception:  # a broken install: only the table above is known
        return frozenset()


# Options vLLM has that would break what llmeval relies on, and why.
REFUSED: dict[str, str] = {
    "skip_tokenizer_init": "llmeval encodes prompts with the model's tokenizer (chat templates, "
    "TokensPrompt) and reads it from the engine",
}


def check_option(where: Path, backend: str, key: str, value: Any) -> Any:
    """Type-check one option of ``[engine.<backend>]``; raise a one-line PresetError."""
    if backend == "vllm" and key in REFUSED:
        raise PresetError(f"{where}: key engine.vllm.{key} is not supported: {REFUSED[key]}")
    if key in SCHEMA["engine"]:
        raise PresetError(
            f"{where}: key engine.{backend}.{key}: set it as engine.{key} "
            f"(an [engine] setting llmeval reads itself)"
        )
    spec = TABLES[backend].get(key)
    if spec is None:
        if backend == "vllm" and key in _vllm_engine_fields():
            return value  # a field of the installed vLLM that the table above does not list
        known = ", ".join(sorted(TABLES[backend]))
        extra = (
            "; with vLLM installed, any vllm.engine.arg_utils.EngineArgs field"
            if backend == "vllm"
            else ""
        )
        raise PresetError(
            f"{where}: unknown key engine.{backend}.{key} (known: {known}{extra})"
        )
    return check_key(where, f"engine.{backend}", key, value, spec)


def validate_table(where: Path, backend: str, table: Any) -> dict[str, Any]:
    """Check a whole ``[engine.<backend>]`` table from a preset or a campaign."""
    if not isinstance(table, dict):
        raise PresetError(f"{where}: key engine.{backend}: expected a table [engine.{backend}]")
    return {k: check_option(where, backend, k, v) for k, v in table.items()}


def parse_value(text: str) -> Any:
    """A command-line VALUE: JSON, else a TOML value, else the text itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_flags(preset: dict[str, Any], flags: list[str] | None, backend: str) -> dict[str, Any]:
    """The preset with ``--engine KEY=VALUE`` flags applied for ``backend`` (checked, one line on error)."""
    out = copy.deepcopy(preset)
    where = Path("--engine")
    for flag in flags or []:
        key, sep, raw = flag.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PresetError(f"--engine: expected KEY=VALUE, got {flag!r}")
        value = parse_value(raw)
        if key == "backend":
            raise PresetError("--engine: set the backend with --backend")
        table, _, sub = key.partition(".")
        if sub:
            if table not in TABLES:
                raise PresetError(
                    f"--engine: unknown key {key} (a prefix is one of: {', '.join(TABLES)})"
                )
            out["engine"].setdefault(table, {})[sub] = check_option(where, table, sub, value)
            continue
        if key in SCHEMA["engine"]:
            out["engine"][key] = check_key(where, "engine", key, value, SCHEMA["engine"][key])
            continue
        own = TABLES.get(backend)
        if own is not None and (key in own or (backend == "vllm" and key in _vllm_engine_fields())):
            out["engine"].setdefault(backend, {})[key] = check_option(where, backend, key, value)
            continue
        others = [b for b, t in TABLES.items() if key in t and b != backend]
        if others:
            raise PresetError(
                f"--engine: key {key} is a {others[0]} option; the {backend} backend does not take it"
            )
        known = sorted(SCHEMA["engine"]) + sorted(own or {})
        raise PresetError(f"--engine: unknown key {key} (known for {backend}: {', '.join(known)})")
    return out


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    from llmeval.presets import load_preset

    return load_preset("base")["engine"]


def engine_defaults() -> dict[str, Any]:
    """The default [engine] settings: presets/base.toml's, the one place they are written."""
    return copy.deepcopy(_defaults())


def vllm_kwargs(engine: dict[str, Any]) -> dict[str, Any]:
    """``vllm.LLM(...)`` keyword arguments from an effective [engine] table (model excluded)."""
    args: dict[str, Any] = {k: engine[k] for k in VLLM_FROM_ENGINE if engine.get(k) is not None}
    if int(engine.get("max_model_len") or 0) > 0:
        args["max_model_len"] = int(engine["max_model_len"])
    args.update(engine.get("vllm") or {})
    return args


def hf_kwargs(engine: dict[str, Any]) -> dict[str, Any]:
    """``from_pretrained(...)`` keyword arguments from an effective [engine] table."""
    return dict(engine.get("hf") or {})


def engine_flags(where: Path, table: Any, label: str = "engine") -> list[str]:
    """A campaign's ``engine`` table as checked ``--engine KEY=VALUE`` arguments for eval-generate.

    Keys are [engine] keys, backend options (resolved against the backend
    eval-generate chooses), or ``vllm``/``hf`` sub-tables; values are passed as
    JSON, which :func:`parse_value` reads back exactly.
    """
    if not isinstance(table, dict):
        raise PresetError(f"{where}: key {label}: expected a table")
    flags: list[str] = []
    for key, value in table.items():
        if key in TABLES and isinstance(value, dict):
            for sub, subvalue in value.items():
                checked = check_option(where, key, sub, subvalue)
                flags.append(f"{key}.{sub}={orjson.dumps(checked).decode()}")
            continue
        if key == "backend":
            raise PresetError(f"{where}: key {label}.backend: set the model's backend = \"...\"")
        if key in SCHEMA["engine"]:
            checked = check_key(where, label, key, value, SCHEMA["engine"][key])
        else:
            owners = [b for b, t in TABLES.items() if key in t]
            if not owners and key in _vllm_engine_fields():
                owners = ["vllm"]
            if not owners:
                known = sorted(SCHEMA["engine"]) + sorted({k for t in TABLES.values() for k in t})
                raise PresetError(f"{where}: unknown key {label}.{key} (known: {', '.join(known)})")
            checked = check_option(where, owners[0], key, value)
        flags.append(f"{key}={orjson.dumps(checked).decode()}")
    return flags
