"""Loaders: each dataset's published file format -> tasks ``(task_id, prompt, reference)``.

One function per format (HumanEval JSONL, MBPP, GSM8K, MMLU's CSV directory,
MedQA), plus the row readers they share (JSONL/JSON/CSV/Parquet). The
registry that names datasets and finds their files is :mod:`llmeval.datasets`.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmeval.errors import DataError
from llmeval.records import Record, read_records
from llmeval.vocab import STYLE_ASSERTS, STYLE_HUMANEVAL

LETTERS = "ABCDEFGHIJ"

# A task as a loader yields it: (task_id, prompt text, reference).
Task = tuple[str, str, dict[str, Any]]


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def json_items(path: Path) -> Iterator[tuple[int, Record]]:
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


def require_field(row: Record, name: str, where: str) -> Any:
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
    for i, row in json_items(path):
        where = f"{path}:{i + 1}"
        yield (
            str(require_field(row, "task_id", where)),
            require_field(row, "prompt", where),
            {
                "style": STYLE_HUMANEVAL,
                "prompt_is_code": True,
                "entry_point": require_field(row, "entry_point", where),
                "test": require_field(row, "test", where),
                "setup": "",
                "canonical_solution": row.get("canonical_solution"),
            },
        )


MBPP_PROMPT = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
)


def load_mbpp(path: Path) -> Iterator[Task]:
    for i, row in json_items(path):
        where = f"{path}:{i + 1}"
        text = row.get("text", row.get("prompt"))
        if text is None:
            raise DataError(where, 'no field "text" (or "prompt")')
        tests = list(require_field(row, "test_list", where))
        imports = list(row.get("test_imports") or [])
        setup = "\n".join([*imports, row.get("test_setup_code") or ""]).strip()
        entry = function_name_from_assert(tests[0]) if tests else None
        if entry is None:
            raise DataError(where, 'field "test_list": no function call found in the first assert')
        yield (
            str(require_field(row, "task_id", where)),
            MBPP_PROMPT.format(text=text, tests="\n".join(tests)),
            {
                "style": STYLE_ASSERTS,
                "prompt_is_code": False,
                "entry_point": entry,
                "test": "\n".join(tests),
                "setup": setup,
                "canonical_solution": row.get("code"),
            },
        )


GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


def load_gsm8k(path: Path) -> Iterator[Task]:
    for i, row in json_items(path):
        where = f"{path}:{i + 1}"
        answer = str(require_field(row, "answer", where))
        m = GSM8K_ANSWER.search(answer)
        if not m:
            raise DataError(where, 'field "answer": no "#### N" final answer')
        yield (
            str(row.get("id", i)),
            f"Question: {require_field(row, 'question', where)}\nAnswer:",
            {"answer": m.group(1).replace(",", ""), "solution": answer},
        )


def mc_prompt(question: str, choices: list[str], header: str = "") -> str:
    lines = [header] if header else []
    lines.append(question.strip())
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    lines.append("Answer:")
    return "\n".join(lines)


def choice_label(value: Any, n: int, where: str) -> str:
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
                        {"choices": cols[1:5], "label": choice_label(cols[5], 4, where)},
                    )
        return
    for i, row in json_items(path):
        where = f"{path}:{i + 1}"
        choices = list(require_field(row, "choices", where))
        subject = str(row.get("subject", "")) or "misc"
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."
        yield (
            f"{subject}/{row.get('id', i)}",
            mc_prompt(require_field(row, "question", where), choices, header),
            {
                "choices": choices,
                "label": choice_label(require_field(row, "answer", where), len(choices), where),
            },
        )


def load_medqa(path: Path) -> Iterator[Task]:
    """MedQA (USMLE) jsonl: question, options {"A": ...}, answer_idx."""
    for i, row in json_items(path):
        where = f"{path}:{i + 1}"
        options = require_field(row, "options", where)
        if not isinstance(options, dict):
            raise DataError(where, 'field "options" must be an object {"A": ...}')
        letters = sorted(options)
        choices = [str(options[k]) for k in letters]
        yield (
            str(row.get("id", i)),
            mc_prompt(require_field(row, "question", where), choices),
            {
                "choices": choices,
                "label": choice_label(require_field(row, "answer_idx", where), len(choices), where),
            },
        )
