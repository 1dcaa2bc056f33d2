"""eval-resolve: dataset names (or files) -> one prompt record per task.

    eval-resolve humaneval gsm8k --limit 20 | eval-generate --model gemma3-270m

Records follow docs/records.md ("eval-resolve"). Datasets come from the
registry in :mod:`llmeval.datasets`, searched along its documented order, or
from a plain JSONL/JSON/CSV/Parquet file with a field mapping.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmeval import cli
from llmeval.datasets import (
    CATEGORIES,
    REGISTRY,
    DatasetSpec,
    download_from_hub,
    locate,
    unknown_dataset_message,
)
from llmeval.errors import DataError, StageError, UsageError
from llmeval.loaders import LETTERS, Task, choice_label, json_items, mc_prompt, sha256_file
from llmeval.records import Record
from llmeval.vocab import CODE_EXEC, EXACT_MATCH, MULTIPLE_CHOICE, SCORERS

PROG = "eval-resolve"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".gz")

EPILOG = """\
examples:
  eval-resolve humaneval | wc -l                      # 164 prompt records
  eval-resolve --category coding --limit 10           # every coding dataset found here
  eval-resolve humaneval --shard 0/4                  # a quarter, stable across runs
  eval-resolve my.jsonl --prompt-field question --answer-field answer --scorer exact_match
  eval-resolve --list                                 # known datasets and where they resolve
  eval-resolve humaneval --limit 4 | eval-generate --model gemma3-270m | eval-score | eval-aggregate
"""


@dataclass(frozen=True)
class FieldMap:
    """How to read a custom dataset file (--prompt-field and friends)."""

    prompt: str = "prompt"
    answer: str = "answer"
    id: str | None = None
    scorer: str = EXACT_MATCH
    choices: str = "choices"
    test: str = "test"
    entry_point: str = "entry_point"
    category: str = "custom"
    name: str | None = None


def shard_of(record_id: str, count: int) -> int:
    """The shard (0..count-1) a record id belongs to: a stable hash, not the input order."""
    digest = hashlib.sha256(record_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def dataset_hash(path: Path) -> str:
    """sha256 of the source file, or of a directory's files (names and bytes, sorted)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        h.update(sha256_file(f).encode())
    return "sha256:" + h.hexdigest()


def custom_tasks(path: Path, fields: FieldMap) -> Iterator[Task]:
    """Tasks from a plain file, read through the field mapping."""
    for i, row in json_items(path):
        where = f"{path}:{i + 1}"
        if fields.prompt not in row:
            raise DataError(where, f'no field "{fields.prompt}" (set --prompt-field)')
        task_id = row.get(fields.id) if fields.id else row.get("id", row.get("task_id", i))
        if task_id is None:
            raise DataError(where, f'no field "{fields.id}" (set --id-field)')
        prompt = str(row[fields.prompt])
        reference: dict[str, Any]
        if fields.scorer == CODE_EXEC:
            for f in (fields.test, fields.entry_point):
                if f not in row:
                    raise DataError(
                        where, f'no field "{f}" (code_exec needs a test and an entry point)'
                    )
            test = str(row[fields.test])
            reference = {
                "style": "humaneval" if "def check(" in test else "asserts",
                "prompt_is_code": True,
                "entry_point": str(row[fields.entry_point]),
                "test": test,
                "setup": "",
                "canonical_solution": row.get("canonical_solution"),
            }
        else:
            if fields.answer not in row:
                raise DataError(where, f'no field "{fields.answer}" (set --answer-field)')
            answer = row[fields.answer]
            if fields.scorer == MULTIPLE_CHOICE:
                choices = row.get(fields.choices)
                if choices is not None:
                    if not isinstance(choices, list):
                        raise DataError(where, f'field "{fields.choices}" must be a list')
                    prompt = mc_prompt(prompt, [str(c) for c in choices])
                    label = choice_label(answer, len(choices), where)
                else:
                    label = choice_label(answer, len(LETTERS), where)
                reference = {"choices": choices, "label": label}
            else:
                reference = {"answer": str(answer).strip()}
        yield str(task_id), prompt, reference


def _is_path(arg: str) -> bool:
    p = Path(arg)
    return p.exists() or arg.endswith(DATA_SUFFIXES) or "/" in arg


def plan(
    names: list[str], categories: list[str], data_dirs: list[str] | None
) -> list[tuple[str, Any]]:
    """What to resolve: ("spec", DatasetSpec) or ("file", Path) entries, in order, deduplicated."""
    items: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for name in names:
        if _is_path(name):
            path = Path(name)
            if not path.exists():
                raise DataError(name, "no such file")
            items.append(("file", path))
            continue
        spec = REGISTRY.get(name.lower())
        if spec is None:
            raise StageError(unknown_dataset_message(name, data_dirs))
        if spec.name not in seen:
            seen.add(spec.name)
            items.append(("spec", spec))
    for cat in categories:
        if cat not in CATEGORIES:
            raise StageError(f"unknown category {cat!r}; known: {', '.join(CATEGORIES)}")
        for spec in REGISTRY.values():
            if spec.category == cat and spec.name not in seen:
                seen.add(spec.name)
                items.append(("category", spec))
    return items


def resolve(
    names: list[str],
    *,
    categories: list[str] | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    data_dirs: list[str] | None = None,
    chat: bool = False,
    fields: FieldMap | None = None,
    warn: Any = None,
) -> Iterator[Record]:
    """Yield prompt records for datasets ``names`` and ``categories`` (docs/records.md).

    ``limit`` keeps the first N tasks of each dataset; ``shard=(i, n)`` then
    keeps the tasks whose id hashes to shard i, so n shards cover the
    (limited) set exactly once. Datasets pulled in by a category that are not
    available here are skipped with a ``warn`` call; named ones are errors.
    """
    fields = fields or FieldMap()
    for kind, item in plan(names, categories or [], data_dirs):
        if kind == "file":
            path: Path = item
            name = fields.name or path.name.split(".")[0]
            spec = DatasetSpec(
                name=name,
                category=fields.category,
                scorer=fields.scorer,
                description=f"custom file {path}",
                files=(),
                load=lambda p: custom_tasks(p, fields),
            )
        else:
            spec = item
            found = locate(spec, data_dirs)
            if found.path is None and found.problem is None:
                found.path = download_from_hub(spec)
            if found.path is None:
                msg = f"dataset {spec.name!r} not found ({found.problem}); searched {', '.join(found.searched)}"
                if kind == "category":
                    if warn:
                        warn(f"skipping {msg}")
                    continue
                raise DataError(spec.name, msg)
            path = found.path
        yield from _records(spec, path, limit, shard, chat)


def _records(
    spec: DatasetSpec, path: Path, limit: int | None, shard: tuple[int, int] | None, chat: bool
) -> Iterator[Record]:
    digest = dataset_hash(path)
    source = str(path)
    for count, (task_id, prompt, reference) in enumerate(spec.load(path)):
        if limit is not None and count >= limit:
            break
        rid = f"{spec.name}/{task_id}"
        if shard is not None and shard_of(rid, shard[1]) != shard[0]:
            continue
        messages = [{"role": "user", "content": spec.chat_instruction + prompt}] if chat else None
        yield {
            "id": rid,
            "dataset": spec.name,
            "task_id": task_id,
            "category": spec.category,
            "prompt": prompt,
            "messages": messages,
            "stop": [] if chat else list(spec.stop),
            "scorer": spec.scorer,
            "reference": reference,
            "dataset_hash": digest,
            "source": source,
        }


def list_datasets(data_dirs: list[str] | None) -> Iterator[Record]:
    """One record per registered dataset: where it resolves here, or why it does not."""
    for spec in REGISTRY.values():
        found = locate(spec, data_dirs, allow_hub=False)
        yield {
            "name": spec.name,
            "category": spec.category,
            "scorer": spec.scorer,
            "description": spec.description,
            "resolves": found.path is not None,
            "path": str(found.path) if found.path else None,
            "source": found.source or None,
            "problem": None if found.path else found.problem,
            "searched": found.searched,
        }


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, e.g. 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= I < N")
    return i, n


class Resolve(cli.Command):
    prog = PROG
    description = "Resolve dataset names or files into prompt records (JSONL on stdout)."
    epilog = EPILOG
    inputs = None  # dataset names, not record files
    output_help = "append records to OUT instead of stdout; a re-run adds only ids not in OUT"
    limit = "keep the first N tasks of each dataset"

    def identity(self, record: Record) -> Any:
        return record.get("id") if "id" in record else record.get("name")

    def add_arguments(self, p: cli.Parser) -> None:
        p.add_argument(
            "datasets", nargs="*", metavar="NAME|PATH", help="registered dataset names or data files"
        )
        p.add_argument(
            "--category",
            action="append",
            default=[],
            metavar="C",
            help=f"add every dataset of category C ({', '.join(CATEGORIES)}); repeatable",
        )
        p.add_argument(
            "--shard", type=parse_shard, metavar="I/N", help="keep shard I of N (stable hash of the id)"
        )
        p.add_argument(
            "--list", action="store_true", help="list known datasets and where they resolve"
        )
        p.add_argument(
            "--data-dir",
            action="append",
            default=[],
            metavar="DIR",
            help="search DIR first; repeatable",
        )
        p.add_argument(
            "--chat", action="store_true", help="emit chat messages (template applied at generation)"
        )
        g = p.add_argument_group("custom files")
        g.add_argument(
            "--prompt-field",
            default="prompt",
            metavar="F",
            help="field holding the prompt (default: prompt)",
        )
        g.add_argument(
            "--answer-field",
            default="answer",
            metavar="F",
            help="field holding the gold answer (default: answer)",
        )
        g.add_argument(
            "--id-field",
            metavar="F",
            help="field holding the task id (default: id, task_id, or the row number)",
        )
        g.add_argument(
            "--choices-field",
            default="choices",
            metavar="F",
            help="multiple choice options (default: choices)",
        )
        g.add_argument(
            "--scorer",
            choices=SCORERS,
            default=EXACT_MATCH,
            help="scorer for custom files (default: exact_match)",
        )
        g.add_argument(
            "--name", metavar="NAME", help="dataset name for a custom file (default: the file name)"
        )

    def run(self) -> int:
        args = self.args
        if args.list:
            rows = list(list_datasets(args.data_dir))
            if sys.stdout.isatty() and args.output is None:
                _print_table(rows)
            else:
                for row in rows:
                    self.write(row)
            return 0
        if not args.datasets and not args.category:
            raise UsageError("name a dataset, a file or --category (see --list)")
        fields = FieldMap(
            prompt=args.prompt_field,
            answer=args.answer_field,
            id=args.id_field,
            scorer=args.scorer,
            choices=args.choices_field,
            name=args.name,
        )
        done = self.done()
        written = skipped = 0
        for rec in resolve(
            args.datasets,
            categories=[c for arg in args.category for c in arg.split(",") if c],
            limit=args.limit,
            shard=args.shard,
            data_dirs=args.data_dir,
            chat=args.chat,
            fields=fields,
            warn=lambda m: self.log(f"warning: {m}"),
        ):
            if rec["id"] in done:
                skipped += 1
                continue
            self.write(rec)
            written += 1
        self.finish()
        if skipped:
            self.log(f"{written} records written, {skipped} already in {args.output}")
        return 0


def main(argv: list[str] | None = None) -> int:
    return Resolve().main(argv)


def _print_table(rows: list[Record]) -> None:
    print(f"{'NAME':<11} {'CATEGORY':<11} {'SCORER':<16} WHERE")
    for r in rows:
        where = f"{r['path']} ({r['source']})" if r["resolves"] else f"not found: {r['problem']}"
        print(f"{r['name']:<11} {r['category']:<11} {r['scorer']:<16} {where}")


if __name__ == "__main__":
    sys.exit(main())
