"""Presets: TOML files of engine, sampling, scoring and SLURM settings, with inheritance.

A preset file (``presets/NAME.toml``) may name ``inherits = "other"``; tables
merge key by key, the child winning. Every key is checked against
:data:`SCHEMA` (type and range): an unknown key, a wrong type or an
out-of-range value is a :class:`PresetError` naming the file and the key.
``[engine.vllm]`` and ``[engine.hf]`` hold options handed to that engine as
given (``vllm.LLM(...)`` / ``from_pretrained(...)`` keyword arguments), typed by
:mod:`llmeval.backends.options`. Command-line flags override the merged result
(:func:`apply_overrides`, and ``--engine KEY=VALUE``).

Search order for a preset NAME: a path ending in ``.toml``; ``$LLMEVAL_PRESETS``
(colon-separated directories); the repository's ``presets/`` directory.

``python -m llmeval.presets NAME`` prints the effective, merged preset.
"""

from __future__ import annotations

import builtins
import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from llmeval.errors import StageError
from llmeval.paths import PRESETS_DIR


class PresetError(StageError):
    """A preset that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""
    items: builtins.type | None = None  # for a list: the type of its elements


_INT = Key(int, 1)
SCHEMA: dict[str, dict[str, Key]] = {
    "engine": {
        "backend": Key(
            str, choices=("auto", "vllm", "hf", "openai", "reference"), help="generation backend"
        ),
        "dtype": Key(str, choices=("auto", "float16", "bfloat16", "float32"), help="weights dtype"),
        "device": Key(str, choices=("auto", "cpu", "cuda"), help="hf backend device"),
        "gpu_memory_utilization": Key(float, 0.0, 1.0, low_open=True, help="vLLM KV-cache share"),
        "max_num_seqs": Key(int, 1, help="vLLM sequences per step"),
        "max_num_batched_tokens": Key(int, 1, help="vLLM tokens per step"),
        "enable_prefix_caching": Key(bool, help="vLLM automatic prefix caching"),
        "tensor_parallel_size": Key(int, 1, help="GPUs per model (vLLM)"),
        "max_model_len": Key(int, 0, help="context length; 0 = the model's own"),
        "batch_size": Key(int, 1, help="hf backend sequences per forward pass"),
        "chunk_size": Key(int, 1, help="prompts handed to the engine per call"),
        "concurrency": Key(int, 1, help="openai backend requests in flight"),
        "request_timeout": Key(float, 0.0, low_open=True, help="openai request timeout, s"),
        "max_retries": Key(int, 0, help="openai retries on 429/5xx/connection errors"),
        "threads": Key(int, 0, help="CPU threads for torch; 0 = torch's default"),
    },
    "sampling": {
        "temperature": Key(
            float,
            0.0,
            2.0,
            help="0 = greedy; at most 2 (vLLM's SamplingParams and OpenAI's API refuse more)",
        ),
        "top_p": Key(float, 0.0, 1.0, low_open=True, help="nucleus sampling mass"),
        "max_tokens": Key(int, 1, help="new tokens per sample"),
        "n": Key(int, 1, help="samples per prompt"),
        "seed": Key(int, 0, help="run seed; each sample's seed derives from it and its key"),
    },
    "scoring": {
        "timeout": Key(float, 0.0, low_open=True, help="seconds per program"),
        "workers": Key(int, 0, help="parallel programs; 0 = number of CPUs"),
        "memory_mb": Key(int, 16, help="address-space limit per program"),
    },
    "slurm": {
        "partition": Key(str, help="SLURM partition of generation tasks"),
        "gpus": Key(int, 0, help="GPUs per task (a model's tensor x pipeline parallelism)"),
        "cpus_per_task": Key(int, 1, help="CPUs per task"),
        "mem": Key(str, help='e.g. "64G"'),
        "time": Key(str, help='e.g. "04:00:00"'),
    },
}
TOP_LEVEL = {"inherits": Key(str), "description": Key(str)}


def find_preset(name: str) -> Path:
    """Locate a preset by name or path (see module docstring for the order)."""
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise PresetError(f"preset file {name} does not exist")
        return path
    dirs = [Path(d) for d in os.environ.get("LLMEVAL_PRESETS", "").split(os.pathsep) if d]
    dirs.append(PRESETS_DIR)
    for d in dirs:
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml")})
    raise PresetError(
        f"unknown preset {name!r}; known: {', '.join(known) or 'none'} "
        f"(searched {', '.join(str(d) for d in dirs)})"
    )


def check_key(
    path: Path,
    section: str | None,
    key: str,
    value: Any,
    spec: Key,
    error: type[StageError] = PresetError,
) -> Any:
    """``value`` checked against ``spec``; ``error`` names ``path`` and the dotted key.

    Dataset specs (:mod:`llmeval.specs`) check their keys with it too, so both
    kinds of file report a bad key the same way.
    """
    where = f"{path}: key {section + '.' if section else ''}{key}"
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        want = "/".join(t.__name__ for t in types)
        raise error(f"{where}: expected {want}, got {type(value).__name__} {value!r}")
    if spec.items is not None and isinstance(value, list):
        for item in value:
            if not isinstance(item, spec.items) or isinstance(item, bool) != (spec.items is bool):
                raise error(
                    f"{where}: expected a list of {spec.items.__name__}, "
                    f"got {type(item).__name__} {item!r} in it"
                )
    if spec.choices and value not in spec.choices:
        raise error(f"{where}: {value!r} is not one of {', '.join(spec.choices)}")
    if not isinstance(value, (int, float)):
        return value
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        op = ">" if spec.low_open else ">="
        raise error(f"{where}: {value!r} out of range (must be {op} {spec.low:g})")
    if spec.high is not None and value > spec.high:
        raise error(f"{where}: {value!r} out of range (must be <= {spec.high:g})")
    return value


BACKEND_TABLES = ("vllm", "hf")  # [engine.vllm], [engine.hf]: options passed to the engine as given


def validate(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Check one file's contents against the schema; return it with ints widened to floats."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in TOP_LEVEL:
            out[key] = check_key(path, None, key, value, TOP_LEVEL[key])
        elif key in SCHEMA:
            if not isinstance(value, dict):
                raise PresetError(f"{path}: key {key}: expected a table [{key}]")
            table = {}
            for sub, subvalue in value.items():
                if key == "engine" and sub in BACKEND_TABLES:
                    from llmeval.backends.options import validate_table

                    table[sub] = validate_table(path, sub, subvalue)
                    continue
                spec = SCHEMA[key].get(sub)
                if spec is None:
                    known = ", ".join(
                        sorted([*SCHEMA[key], *(BACKEND_TABLES if key == "engine" else ())])
                    )
                    raise PresetError(
                        f"{path}: unknown key {key}.{sub} (known in [{key}]: {known})"
                    )
                table[sub] = check_key(path, key, sub, subvalue, spec)
            out[key] = table
        else:
            known = ", ".join(sorted([*TOP_LEVEL, *SCHEMA]))
            raise PresetError(f"{path}: unknown key {key} (known: {known})")
    return out


def merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Merge ``child`` over ``base`` table by table."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict):
            table = out.setdefault(key, {})
            for sub, subvalue in value.items():
                if key == "engine" and sub in BACKEND_TABLES:
                    table.setdefault(sub, {}).update(copy.deepcopy(subvalue))  # key by key too
                else:
                    table[sub] = copy.deepcopy(subvalue)
        else:
            out[key] = value
    return out


def load_preset(name: str) -> dict[str, Any]:
    """The effective preset ``name``: its inheritance chain merged, validated.

    The result has every schema section (possibly empty), ``name``, and
    ``chain`` (the preset names, root first).
    """
    chain: list[tuple[str, Path, dict[str, Any]]] = []
    seen: set[Path] = set()
    current: str | None = name
    while current is not None:
        path = find_preset(current).resolve()
        if path in seen:
            names = " -> ".join(c[0] for c in chain)
            raise PresetError(f"{path}: inheritance cycle ({names} -> {current})")
        seen.add(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise PresetError(f"{path}: invalid TOML ({exc})") from None
        data = validate(path, data)
        chain.append((current, path, data))
        current = data.get("inherits")
    merged: dict[str, Any] = {section: {} for section in SCHEMA}
    for _, _, data in reversed(chain):
        merged = merge(merged, {k: v for k, v in data.items() if k != "inherits"})
    merged["name"] = name
    merged["chain"] = [c[0] for c in reversed(chain)]
    return merged


def apply_overrides(preset: dict[str, Any], section: str, **values: Any) -> dict[str, Any]:
    """Return a copy of ``preset`` with non-None command-line ``values`` in ``section``."""
    out = copy.deepcopy(preset)
    for key, value in values.items():
        if value is not None:
            if key not in SCHEMA[section]:
                raise PresetError(f"command line: unknown key {section}.{key}")
            out[section][key] = check_key(
                Path("command line"), section, key, value, SCHEMA[section][key]
            )
    return out


def describe_key(section: str, key: str, spec: Key) -> str:
    """One line for ``--keys``: the dotted key, its type and bounds or choices, its help."""
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    kind = "/".join(t.__name__ for t in types)
    if spec.items is not None:
        kind += f" of {spec.items.__name__}"
    if spec.choices:
        kind += " in " + "|".join(spec.choices)
    if spec.low is not None:
        kind += f" {'>' if spec.low_open else '>='} {spec.low:g}"
    if spec.high is not None:
        kind += f" <= {spec.high:g}"
    return f"{section}.{key}\t{kind}\t{spec.help}"


def main(argv: list[str] | None = None) -> int:
    """Print the effective preset as JSON (``python -m llmeval.presets NAME``), or every
    preset key with its type and meaning (``--keys``)."""
    import orjson

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m llmeval.presets NAME|PATH.toml|--keys", file=sys.stderr)
        return 2
    if args[0] == "--keys":
        sys.stdout.write(
            "".join(describe_key(s, k, SCHEMA[s][k]) + "\n" for s in SCHEMA for k in SCHEMA[s])
        )
        return 0
    try:
        preset = load_preset(args[0])
    except PresetError as exc:
        print(f"llmeval.presets: error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(orjson.dumps(preset, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
