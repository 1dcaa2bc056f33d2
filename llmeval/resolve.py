"""eval-resolve: dataset names (or files) -> one prompt record per task.

    eval-resolve humaneval gsm8k --limit 20 | eval-generate --model gemma3-270m

Records follow docs/records.md ("eval-resolve"). Datasets are specs
(:mod:`llmeval.datasets`, docs/datasets.md) whose files are searched along a
documented order; a plain JSONL/JSON/CSV/Parquet file is read with a field
mapping, or as a known dataset with ``--dataset NAME``. Prompts are zero-shot,
or ``--num-fewshot K`` with examples from the dataset's few-shot split
(:mod:`llmeval.prompts`); ``--system`` puts a system prompt first.
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
    Registry,
    Resolution,
    download_from_hub,
    locate,
    locate_fewshot,
    registry,
    unknown_dataset_message,
)
from llmeval.errors import DataError, StageError, UsageError
from llmeval.loaders import (
    Doc,
    choice_label,
    code_reference,
    json_items,
    load,
    mc_reference,
    sha256_file,
)
from llmeval.prompts import build_prompt, choose_examples, fewshot_id, fewshot_pools, messages
from llmeval.records import Record
from llmeval.specs import LETTERS, DatasetSpec, compile_template
from llmeval.vocab import CODE_EXEC, EXACT_MATCH, MULTIPLE_CHOICE, SCORERS

PROG = "eval-resolve"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".gz")

EPILOG = """\
examples:
  eval-resolve humaneval | wc -l                      # 164 prompt records
  eval-resolve --category coding --limit 10           # every coding dataset found here
  eval-resolve humaneval --shard 0/4                  # a quarter, stable across runs
  eval-resolve mmlu --num-fewshot 5                   # lm-eval's 5-shot MMLU prompts
  eval-resolve --category biomedical --system "You are a careful physician." --chat
  eval-resolve US/test.jsonl --dataset medqa_5options # a file, read as a known dataset
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


def mc_prompt(question: str, choices: list[str]) -> str:
    return "\n".join(
        [question.strip(), *(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)), "Answer:"]
    )


def _text_field(where: str, r: dict[str, Any], name: str, hint: str) -> str:
    """Field ``name`` of a custom row as text: a string or a number. Missing (a CSV row too
    short gives None), blank or structured (an object, a list) is a one-line error naming it."""
    value = r.get(name)
    if value is None:
        raise DataError(where, f'no field "{name}" ({hint})')
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(
            where, f'field "{name}" must be a string or a number, got {type(value).__name__}'
        )
    if not str(value).strip():
        raise DataError(where, f'field "{name}" is empty')
    return str(value)


def custom_docs(path: Path, fields: FieldMap) -> Iterator[Doc]:
    """Docs from a plain file, read through the field mapping (the prompt is the field as is)."""
    for row in json_items(path):
        where, r = row.where, row.data
        prompt = _text_field(where, r, fields.prompt, "set --prompt-field")
        task_id = r.get(fields.id) if fields.id else r.get("id", r.get("task_id", row.position))
        if task_id is None:
            raise DataError(where, f'no field "{fields.id}" (set --id-field)')
        reference: dict[str, Any]
        if fields.scorer == CODE_EXEC:
            hint = "code_exec needs a test and an entry point"
            test = _text_field(where, r, fields.test, hint)
            entry_point = _text_field(where, r, fields.entry_point, hint)
            reference = code_reference(r, test, entry_point, True)
        else:
            answer = _text_field(where, r, fields.answer, "set --answer-field")
            if not isinstance(r[fields.answer], str):
                answer = r[fields.answer]  # a number stays one (a choice index, say)
            if fields.scorer == MULTIPLE_CHOICE:
                choices = r.get(fields.choices)
                if choices is not None:
                    if not isinstance(choices, list):
                        raise DataError(where, f'field "{fields.choices}" must be a list')
                    choices = [str(c) for c in choices]
                    prompt = mc_prompt(prompt, choices)
                    label = choice_label(answer, len(choices), where)
                else:
                    label = choice_label(answer, len(LETTERS), where)
                reference = mc_reference(choices, label)
            else:
                reference = {"answer": str(answer).strip()}
        yield Doc(str(task_id), {"prompt": prompt}, reference, None, where)


def custom_spec(path: Path, fields: FieldMap) -> DatasetSpec:
    """The spec of a custom file: its prompt field is the prompt, no few-shot split."""
    return DatasetSpec(
        name=fields.name or path.name.split(".")[0],
        category=fields.category,
        scorer=fields.scorer,
        description=f"custom file {path}",
        format="custom",
        files=(),
        template=compile_template("{prompt}", "custom file"),
    )


def _is_path(arg: str) -> bool:
    p = Path(arg)
    return p.exists() or arg.endswith(DATA_SUFFIXES) or "/" in arg


def plan(
    names: list[str],
    categories: list[str],
    data_dirs: list[str] | None,
    reg: Registry | None = None,
) -> list[tuple[str, Any]]:
    """What to resolve: ("spec", DatasetSpec) or ("file", Path) entries, in order, deduplicated."""
    reg = reg or registry(data_dirs)
    items: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for name in names:
        if _is_path(name):
            path = Path(name)
            if not path.exists():
                raise DataError(name, "no such file")
            items.append(("file", path))
            continue
        spec = reg.get(name)
        if spec is None:
            raise StageError(unknown_dataset_message(name, data_dirs, reg))
        if spec.name not in seen:
            seen.add(spec.name)
            items.append(("spec", spec))
    known = reg.categories()
    for cat in categories:
        if cat not in known:
            raise StageError(f"unknown category {cat!r}; known: {', '.join(known)}")
        for spec in reg.specs.values():
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
    num_fewshot: int = 0,
    system: str | None = None,
    dataset: str | None = None,
    spec_paths: list[str] | None = None,
) -> Iterator[Record]:
    """Yield prompt records for datasets ``names`` and ``categories`` (docs/records.md).

    ``limit`` keeps the first N tasks of each dataset; ``shard=(i, n)`` then
    keeps the tasks whose id hashes to shard i, so n shards cover the
    (limited) set exactly once. Datasets pulled in by a category that are not
    available here are skipped with a ``warn`` call; named ones are errors.
    ``num_fewshot`` examples come from each dataset's few-shot split;
    ``system`` goes first (the system message with ``chat``). Files are read
    with ``fields``, or as the registered dataset ``dataset``; ``spec_paths``
    add spec files to the registry.
    """
    fields = fields or FieldMap()
    reg = registry(data_dirs, spec_paths)
    as_spec = None
    if dataset is not None:
        as_spec = reg.get(dataset)
        if as_spec is None:
            raise StageError(unknown_dataset_message(dataset, data_dirs, reg))
    for kind, item in plan(names, categories or [], data_dirs, reg):
        docs = None
        if kind == "file":
            path: Path = item
            if as_spec is not None:
                spec = as_spec
                found = Resolution(spec, path, "file", [])
            else:
                spec = custom_spec(path, fields)
                found = Resolution(spec, path, "file", [])
                docs = custom_docs(path, fields)
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
        yield from _records(spec, found, docs, data_dirs, limit, shard, chat, num_fewshot, system)


def _records(
    spec: DatasetSpec,
    found: Resolution,
    docs: Iterator[Doc] | None,
    data_dirs: list[str] | None,
    limit: int | None,
    shard: tuple[int, int] | None,
    chat: bool,
    num_fewshot: int,
    system: str | None,
) -> Iterator[Record]:
    assert found.path is not None
    path = found.path
    pools = None
    if num_fewshot > 0:
        if spec.format == "custom":
            raise DataError(
                str(path),
                "a custom file has no few-shot split: read it as a dataset with --dataset NAME",
            )
        fs = locate_fewshot(spec, found, data_dirs)
        assert fs.path is not None
        pools = fewshot_pools(load(spec, fs.path, spec.fewshot_split, hub=fs.hub))
    if system and not chat and spec.scorer == CODE_EXEC:
        raise StageError(
            f"--system without --chat would put the system prompt into {spec.name}'s programs "
            "(the prompt is code): add --chat"
        )
    digest = dataset_hash(path)
    source = str(path)
    if docs is None:
        docs = load(spec, path, hub=found.hub)
    for count, doc in enumerate(docs):
        if limit is not None and count >= limit:
            break
        rid = f"{spec.name}/{doc.task_id}"
        if shard is not None and shard_of(rid, shard[1]) != shard[0]:
            continue
        examples = choose_examples(spec, doc, pools, num_fewshot) if pools is not None else []
        prompt = build_prompt(spec, doc, examples, None if chat else system)
        rec: Record = {
            "id": rid,
            "dataset": spec.name,
            "task_id": doc.task_id,
            "category": spec.category,
            "prompt": prompt,
            "messages": messages(spec, prompt, system) if chat else None,
            "stop": [] if chat else list(spec.stop),
            "scorer": spec.scorer,
            "reference": doc.reference,
            "dataset_hash": digest,
            "source": source,
        }
        if num_fewshot > 0:
            rec["num_fewshot"] = num_fewshot
            rec["fewshot_ids"] = [fewshot_id(spec, ex) for ex in examples]
        yield rec


def list_datasets(
    data_dirs: list[str] | None, spec_paths: list[str] | None = None
) -> Iterator[Record]:
    """One record per known dataset: where it resolves here, or why it does not."""
    for spec in registry(data_dirs, spec_paths).specs.values():
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
            "spec": str(spec.path) if spec.path else None,
            "aliases": list(spec.aliases),
            "output_type": spec.output_type,
            "fewshot_split": spec.fewshot_split,
            "reference_harness": dict(spec.reference_harness) or None,
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
            "datasets",
            nargs="*",
            metavar="NAME|PATH",
            help="registered dataset names or data files",
        )
        p.add_argument(
            "--category",
            action="append",
            default=[],
            metavar="C",
            help=f"add every dataset of category C ({', '.join(CATEGORIES)}); repeatable",
        )
        p.add_argument(
            "--shard",
            type=parse_shard,
            metavar="I/N",
            help="keep shard I of N (stable hash of the id)",
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
            "--chat",
            action="store_true",
            help="emit chat messages (template applied at generation)",
        )
        p.add_argument(
            "--num-fewshot",
            type=cli.nonneg_int,
            default=0,
            metavar="K",
            help="K examples from the dataset's few-shot split before each question (default 0)",
        )
        p.add_argument(
            "--system",
            metavar="TEXT",
            help="a system prompt: the system message with --chat, else the start of the prompt",
        )
        p.add_argument(
            "--spec",
            action="append",
            default=[],
            metavar="FILE|DIR",
            help="dataset spec files (TOML) to add to the known datasets; repeatable",
        )
        g = p.add_argument_group("custom files")
        g.add_argument(
            "--dataset",
            metavar="NAME",
            help="read the FILE arguments as the known dataset NAME (its format, prompt, scorer)",
        )
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
            rows = list(list_datasets(args.data_dir, args.spec))
            if sys.stdout.isatty() and args.output is None:
                _print_table(rows)
            else:
                for row in rows:
                    self.write(row)
            return 0
        if not args.datasets and not args.category:
            raise UsageError("name a dataset, a file or --category (see --list)")
        if args.dataset and not any(_is_path(d) for d in args.datasets):
            raise UsageError("--dataset NAME reads FILE arguments as NAME: give a file")
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
            num_fewshot=args.num_fewshot,
            system=args.system,
            dataset=args.dataset,
            spec_paths=args.spec,
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
    width = max([4, *(len(r["name"]) for r in rows)])
    print(f"{'NAME':<{width}} {'CATEGORY':<11} {'SCORER':<16} WHERE")
    for r in rows:
        where = f"{r['path']} ({r['source']})" if r["resolves"] else f"not found: {r['problem']}"
        print(f"{r['name']:<{width}} {r['category']:<11} {r['scorer']:<16} {where}")


if __name__ == "__main__":
    sys.exit(main())
