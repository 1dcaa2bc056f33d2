"""Loaders: a dataset's published files -> documents, one loader per format.

A format is how a family of published files is read (``humaneval``: HumanEval's
JSONL; ``mbpp``: MBPP's; ``mmlu_csv``: MMLU's directory of header-less
``<subject>_<split>.csv``; ``rows``: any JSONL/JSON/CSV/Parquet rows, read
through the field mapping of the dataset's spec). Each yields :class:`Doc`:
the task id, the values its prompt template is filled with, the scorer's
reference, and the few-shot group it belongs to. The spec
(:mod:`llmeval.specs`) says which format and fields; the prompt is built from
the docs by :mod:`llmeval.prompts`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from llmeval.errors import DataError
from llmeval.records import Record, read_numbered
from llmeval.specs import LETTERS, DatasetSpec
from llmeval.vocab import EXACT_MATCH, MULTIPLE_CHOICE, STYLE_ASSERTS, STYLE_HUMANEVAL


@dataclass
class Doc:
    """One task of a split: its id, its template values, its reference, its few-shot group."""

    task_id: str
    values: dict[str, Any]
    reference: dict[str, Any]
    group: str | None = None  # few-shot examples come from the same group (MMLU: the subject)
    where: str = ""  # FILE:ROW, for messages


class Row(NamedTuple):
    position: int  # 0-based, in the file
    where: str  # FILE:N for messages (N: the row's number, from 1)
    key: str | None  # its key when the file is a JSON object of rows (PubMedQA's PMIDs)
    data: Record


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def json_items(path: Path) -> Iterator[Row]:
    """Rows of a .jsonl(.gz), a .json array or object of rows (or JSON lines named .json,
    as MedMCQA publishes them), a .csv with a header, or a .parquet file."""
    suffixes = "".join(path.suffixes[-2:])
    if path.suffix == ".parquet":
        for i, row in enumerate(_parquet_rows(path)):
            yield Row(i, f"{path}:{i + 1}", None, row)
    elif path.suffix == ".json":
        yield from _json_rows(path)
    elif suffixes.endswith(".csv") or path.suffix == ".csv":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise DataError(f"{path}:{line}", f"not UTF-8 text ({exc.reason})") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        end = 1  # the header's line; a row is named by the file line it starts on
        try:
            for i, row in enumerate(reader):
                start, end = end + 1, reader.line_num
                yield Row(i, f"{path}:{start}", None, dict(row))
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}", f"invalid CSV ({exc})") from None
    else:
        for i, (where, row) in enumerate(read_numbered(path)):
            yield Row(i, where, None, row)


def _json_rows(path: Path) -> Iterator[Row]:
    import orjson

    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        first = raw.lstrip()[:1]
        if first == b"{" and b"\n" in raw.strip():  # JSON lines under a .json name
            for i, (where, row) in enumerate(read_numbered(path)):
                yield Row(i, where, None, row)
            return
        raise DataError(str(path), f"invalid JSON ({exc})") from None
    if isinstance(data, list):
        items: list[tuple[str | None, Any]] = [(None, row) for row in data]
    elif isinstance(data, dict):
        items = [(str(k), row) for k, row in data.items()]
    else:
        raise DataError(str(path), "expected a JSON array or object of rows")
    for i, (key, row) in enumerate(items):
        where = f"{path}:{i + 1}" if key is None else f"{path}:{key}"
        if not isinstance(row, dict):
            raise DataError(where, "expected a JSON object")
        yield Row(i, where, key, row)


def _parquet_rows(path: Path) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(str(path), "reading Parquet needs pyarrow: pip install pyarrow") from None
    yield from pq.read_table(path).to_pylist()


def require_field(row: Record, name: str, where: str, hint: str | None = None) -> Any:
    if name not in row:
        raise DataError(where, f'no field "{name}"' + (f" ({hint})" if hint else ""))
    return row[name]


def function_name_from_assert(test: str) -> str | None:
    """The function an MBPP-style ``assert f(...) == ...`` calls."""
    m = re.search(
        r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*(?:set\()?([A-Za-z_]\w*)\s*\(", test
    )
    return m.group(1) if m else None


def choice_label(
    value: Any, n: int, where: str, texts: list[str] | None = None, base: int = 0
) -> str:
    """The gold letter from a label: a letter, an index (from ``base``), or one of ``texts``."""
    if isinstance(value, bool):
        raise DataError(where, f"answer {value!r} is neither a letter nor an index")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        idx = int(value) - base
        if not 0 <= idx < n:
            raise DataError(
                where,
                f"answer index {int(value)} out of range for {n} choices"
                + (f" (numbered from {base})" if base else ""),
            )
        return LETTERS[idx]
    if isinstance(value, str):
        letter = value.strip().upper()
        if len(letter) == 1 and letter in LETTERS[:n]:
            return letter
        if texts is not None:
            folded = [t.strip().casefold() for t in texts]
            if value.strip().casefold() in folded:
                return LETTERS[folded.index(value.strip().casefold())]
    if texts:
        raise DataError(
            where, f"answer {value!r} is not a letter, an index or one of {', '.join(texts)}"
        )
    raise DataError(where, f"answer {value!r} is neither a letter nor an index")


def choice_values(choices: list[str], label: str) -> dict[str, Any]:
    """Template values of a multiple-choice question: lettered lines, gold letter and text."""
    return {
        "choice_lines": "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)),
        "label": label,
        "label_text": choices[LETTERS.index(label)],
    }


def mc_reference(
    choices: list[str] | None,
    label: str,
    *,
    delimiter: str = " ",
    by_text: bool = False,
    loglikelihood: bool = False,
) -> dict[str, Any]:
    """A multiple-choice reference (docs/records.md): choices, gold letter, and the
    continuations a log-likelihood scorer appends to the prompt (lm-eval's target
    delimiter + the letter, or + the choice text)."""
    ref: dict[str, Any] = {"choices": choices, "label": label}
    if choices is not None:
        ref["continuations"] = [
            delimiter + (c if by_text else LETTERS[i]) for i, c in enumerate(choices)
        ]
        ref["loglikelihood"] = loglikelihood
    return ref


def code_reference(
    row: Record, test: str, entry_point: str, prompt_is_code: bool
) -> dict[str, Any]:
    return {
        "style": STYLE_HUMANEVAL if "def check(" in test else STYLE_ASSERTS,
        "prompt_is_code": prompt_is_code,
        "entry_point": entry_point,
        "test": test,
        "setup": "",
        "canonical_solution": row.get("canonical_solution"),
    }


def _mc_doc(
    spec: DatasetSpec,
    task_id: str,
    row: Row,
    values: dict[str, Any],
    choices: list[str],
    label_value: Any,
    base: int = 0,
    group: str | None = None,
    label_field: str = "label",
) -> Doc:
    where = row.where
    if spec.choice_count is not None and len(choices) != spec.choice_count:
        raise DataError(
            where,
            f"{len(choices)} choices, but {spec.name} has {spec.choice_count} "
            f"(choices.count in {spec.path.name if spec.path else spec.name})",
        )
    by_text = spec.choice_answer == "text"
    try:
        # a label names its choice by text only where the choices are answered by text
        label = choice_label(label_value, len(choices), where, choices if by_text else None, base)
    except DataError as exc:
        raise DataError(where, f'field "{label_field}": {exc.reason}') from None
    values.update(choice_values(choices, label))
    ref = mc_reference(
        choices,
        label,
        delimiter=spec.target_delimiter,
        by_text=by_text,
        loglikelihood=spec.loglikelihood,
    )
    return Doc(task_id, values, ref, group, where)


# --------------------------------------------------------------------------- formats


def load_humaneval(spec: DatasetSpec, path: Path, split: str, **_: Any) -> Iterator[Doc]:
    for row in json_items(path):
        r, where = row.data, row.where
        task_id = str(require_field(r, "task_id", where))
        values = {
            "prompt": require_field(r, "prompt", where),
            "entry_point": require_field(r, "entry_point", where),
            "task_id": task_id,
        }
        ref = {
            "style": STYLE_HUMANEVAL,
            "prompt_is_code": True,
            "entry_point": values["entry_point"],
            "test": require_field(r, "test", where),
            "setup": "",
            "canonical_solution": r.get("canonical_solution"),
        }
        yield Doc(task_id, values, ref, None, where)


def load_mbpp(spec: DatasetSpec, path: Path, split: str, **_: Any) -> Iterator[Doc]:
    for row in json_items(path):
        r, where = row.data, row.where
        text = r.get("text", r.get("prompt"))
        if text is None:
            raise DataError(where, 'no field "text" (or "prompt")')
        tests = list(require_field(r, "test_list", where))
        imports = list(r.get("test_imports") or [])
        setup = "\n".join([*imports, r.get("test_setup_code") or ""]).strip()
        entry = function_name_from_assert(tests[0]) if tests else None
        if entry is None:
            raise DataError(where, 'field "test_list": no function call found in the first assert')
        task_id = str(require_field(r, "task_id", where))
        values = {
            "text": text,
            "tests": "\n".join(tests),
            "code": r.get("code"),
            "task_id": task_id,
        }
        ref = {
            "style": STYLE_ASSERTS,
            "prompt_is_code": False,
            "entry_point": entry,
            "test": "\n".join(tests),
            "setup": setup,
            "canonical_solution": r.get("code"),
        }
        yield Doc(task_id, values, ref, None, where)


def _mmlu_values(subject: str, question: str) -> dict[str, Any]:
    # lm-eval's doc_to_text strips the question; its description names the subject in words.
    return {
        "question": question.strip(),
        "subject": subject,
        "subject_text": subject.replace("_", " "),
    }


def load_mmlu(spec: DatasetSpec, path: Path, split: str, **_: Any) -> Iterator[Doc]:
    """MMLU as published (a directory of header-less ``<subject>_<split>.csv``, or its
    ``<split>/`` folder), or as the hub's rows (question, subject, choices, answer)."""
    wanted = set(spec.subjects)
    if path.is_dir():
        csvs = sorted(path.glob(f"*_{split}.csv")) or sorted((path / split).glob(f"*_{split}.csv"))
        if not csvs:
            raise DataError(str(path), f"no <subject>_{split}.csv files")
        by_subject = {p.name[: -len(f"_{split}.csv")]: p for p in csvs}
        missing = sorted(wanted - set(by_subject))
        if missing:
            raise DataError(str(path), f"no {missing[0]}_{split}.csv (subjects of {spec.name})")
        for subject, csv_path in by_subject.items():
            if wanted and subject not in wanted:
                continue
            with open(csv_path, newline="", encoding="utf-8") as fh:
                for i, cols in enumerate(csv.reader(fh)):
                    row = Row(i, f"{csv_path}:{i + 1}", None, {})
                    if len(cols) != 6:
                        raise DataError(
                            row.where,
                            f"expected 6 columns (question, A-D, answer), got {len(cols)}",
                        )
                    yield _mc_doc(
                        spec,
                        f"{subject}/{i}",
                        row,
                        _mmlu_values(subject, cols[0]),
                        cols[1:5],
                        cols[5],
                        group=subject,
                        label_field="answer",
                    )
        return
    for row in json_items(path):
        r, where = row.data, row.where
        subject = str(r.get("subject", "")) or "misc"
        if wanted and subject not in wanted:
            continue
        choices = [str(c) for c in require_field(r, "choices", where)]
        values = _mmlu_values(subject, str(require_field(r, "question", where)))
        yield _mc_doc(
            spec,
            f"{subject}/{r.get('id', row.position)}",
            row,
            values,
            choices,
            require_field(r, "answer", where),
            group=subject,
            label_field="answer",
        )


def load_rows(
    spec: DatasetSpec,
    path: Path,
    split: str,
    *,
    fields: Mapping[str, Any] | None = None,
    **_: Any,
) -> Iterator[Doc]:
    """Rows read through the spec's ``[fields]`` (or ``fields``, a hub copy's overrides)."""
    f = dict(spec.fields) if fields is None else dict(fields)
    where_key = spec.path.name if spec.path else spec.name

    def hint(role: str) -> str:
        return f"fields.{role} in {where_key}"

    def need(r: Record, role: str, where: str) -> Any:
        return require_field(r, f[role], where, hint(role))

    for row in json_items(path):
        r, where = row.data, row.where
        if f.get("id"):
            task_id = need(r, "id", where)
        else:
            task_id = (
                row.key if row.key is not None else r.get("id", r.get("task_id", row.position))
            )
        task_id = str(task_id)
        question = need(r, "question", where)
        values = {**r, "question": question}
        group = None
        if f.get("subject"):
            group = str(need(r, "subject", where))
            values.update(subject=group, subject_text=group.replace("_", " "))
        if spec.scorer == MULTIPLE_CHOICE:
            if spec.choice_texts:
                choices = list(spec.choice_texts)
            elif f.get("choice_fields"):
                choices = [
                    str(require_field(r, c, where, hint("choice_fields")))
                    for c in f["choice_fields"]
                ]
            else:
                raw = need(r, "choices", where)
                if isinstance(raw, dict):  # MedQA's {"A": ..., "B": ...}
                    choices = [str(raw[k]) for k in sorted(raw)]
                elif isinstance(raw, list):
                    choices = [str(c) for c in raw]
                else:
                    raise DataError(
                        where, f'field "{f["choices"]}" must be a list or an object {{"A": ...}}'
                    )
            yield _mc_doc(
                spec,
                task_id,
                row,
                values,
                choices,
                need(r, "label", where),
                base=int(f.get("label_base", 0)),
                group=group,
                label_field=f["label"],
            )
        elif spec.scorer == EXACT_MATCH:
            raw_answer = need(r, "answer", where)
            ref: dict[str, Any] = {"answer": gold_answer(raw_answer, f, where)}
            if f.get("answer_after"):
                ref["solution"] = str(raw_answer)
            if spec.extractions:
                ref["extractions"] = dict(spec.extractions)
            values["gold"] = ref["answer"]
            yield Doc(task_id, values, ref, group, where)
        else:
            test = str(need(r, "test", where))
            entry = str(need(r, "entry_point", where))
            yield Doc(task_id, values, code_reference(r, test, entry, True), group, where)


def gold_answer(raw: Any, fields: Mapping[str, Any], where: str) -> str:
    """The gold answer of an exact-match row: the text after ``answer_after`` when set
    (GSM8K's ``#### N``), stripped; without thousands separators when ``numeric_answer``."""
    text = str(raw)
    marker = fields.get("answer_after")
    if marker:
        at = text.find(marker)
        rest = text[at + len(marker) :].strip() if at >= 0 else ""
        if not rest:
            raise DataError(where, f'field "{fields["answer"]}": no "{marker} N" final answer')
        text = rest
    text = text.strip()
    return text.replace(",", "") if fields.get("numeric_answer") else text


FORMAT_LOADERS: dict[str, Callable[..., Iterator[Doc]]] = {
    "humaneval": load_humaneval,
    "mbpp": load_mbpp,
    "mmlu_csv": load_mmlu,
    "rows": load_rows,
}


def load(
    spec: DatasetSpec, path: Path, split: str | None = None, *, hub: bool = False, **kw: Any
) -> Iterator[Doc]:
    """The docs of ``split`` (default: the evaluated one) of ``spec`` from ``path``.

    ``hub``: the file is the hub's copy, read with the spec's ``[hub] fields`` overrides.
    """
    if hub and spec.hub is not None and spec.hub.fields:
        kw["fields"] = {**spec.fields, **spec.hub.fields}
    return FORMAT_LOADERS[spec.format](spec, path, split or spec.split, **kw)
