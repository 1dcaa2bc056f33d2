"""Dataset specs: a dataset is a small TOML file, not code (docs/datasets.md).

A spec names the dataset's published files and splits, how a row becomes a
prompt (template, few-shot examples, stop sequences), the scorer and its
reference, the choices of a multiple-choice question and how a log-likelihood
scorer continues the prompt with them, and the reference harness task whose
prompt format it follows. The built-in specs are ``llmeval/specs/*.toml``; a
user adds one by dropping a file in a data directory (``evaluation_data/``,
``--data-dir``, ``$LLMEVAL_DATA``; or their ``specs/``) or with
``eval-resolve --spec FILE``. Every key is checked: an unknown key, a wrong
type or a bad value is a :class:`SpecError` naming the file and the key, the
way presets report theirs (:func:`llmeval.presets.check_key`).

``inherits = "NAME"`` starts from another spec: tables merge key by key, the
child winning (MMLU's medical subjects are ``mmlu`` with other ``subjects``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from llmeval.errors import StageError
from llmeval.extract import REFERENCE_EXTRACTIONS
from llmeval.presets import Key, check_key
from llmeval.vocab import CODE_EXEC, EXACT_MATCH, MULTIPLE_CHOICE, SCORERS

#: How a format's published files are read (one loader each, :mod:`llmeval.loaders`).
FORMATS = ("humaneval", "mbpp", "mmlu_csv", "rows")
#: lm-evaluation-harness's names: generate text, or rank the choices by log-likelihood.
GENERATE_UNTIL = "generate_until"
MULTIPLE_CHOICE_LL = "multiple_choice"
OUTPUT_TYPES = (GENERATE_UNTIL, MULTIPLE_CHOICE_LL)
#: first_n: the first K of the split (MMLU's dev set); random: K seeded per task.
SAMPLERS = ("first_n", "random")
#: What a choice is called in answers and continuations: its letter, or its text.
CHOICE_ANSWERS = ("letter", "text")
LETTERS = "ABCDEFGHIJ"


class SpecError(StageError):
    """A dataset spec that cannot be used; the message names the file and the key."""


_S, _B = Key(str), Key(bool)
_STRS = Key(list, items=str)
SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "name": Key(str, help="the dataset's name (default: the file name)"),
        "inherits": Key(str, help="start from this spec"),
        "description": _S,
        "category": Key(str, help="coding, math, knowledge, biomedical, or a new one"),
        "scorer": Key(str, choices=SCORERS),
        "output_type": Key(str, choices=OUTPUT_TYPES, help="lm-eval's: how the model answers"),
        "loglikelihood": Key(bool, help="same as output_type = multiple_choice"),
        "aliases": _STRS,
    },
    "source": {
        "format": Key(str, choices=FORMATS),
        "files": Key(list, items=str, help="published names, relative, {split} allowed"),
        "split": Key(str, help="the evaluated split (default test)"),
        "subjects": Key(list, items=str, help="mmlu_csv: only these subjects"),
        "package": Key(str, help="a Python package that ships the file"),
        "package_file": Key(str, help="the file, relative to the package"),
    },
    "fields": {
        "id": _S,
        "question": _S,
        "answer": _S,
        "answer_after": Key(str, help="the gold answer is the text after this marker"),
        "numeric_answer": Key(bool, help="drop thousands separators from the gold answer"),
        "choices": Key(str, help="a field holding a list, or an object {A: ..}"),
        "choice_fields": Key(list, items=str, help="one field per choice"),
        "label": _S,
        "label_base": Key(int, 0, 1, help="first index of a numeric label"),
        "subject": _S,
        "test": _S,
        "entry_point": _S,
    },
    "choices": {
        "texts": Key(list, items=str, help="the same choices for every question"),
        "count": Key(int, 2, len(LETTERS)),
        "answer": Key(str, choices=CHOICE_ANSWERS),
    },
    "prompt": {
        "template": _S,
        "description": _S,
        "target": _S,
        "target_delimiter": _S,
        "fewshot_delimiter": _S,
        "stop": _STRS,
        "chat_instruction": _S,
    },
    "fewshot": {
        "split": _S,
        "files": _STRS,
        "sampler": Key(str, choices=SAMPLERS),
        "seed": Key(int, 0),
    },
    "scoring": {"extractions": Key(dict, help="metric name -> extraction")},
    "hub": {
        "id": _S,
        "config": _S,
        "split": _S,
        "fewshot_split": _S,
        "fields": Key(dict, help="[fields] keys that differ in the hub's copy"),
    },
    "reference_harness": {
        "name": _S,
        "task": _S,
        "version": _S,
        "file": _S,
        "commit": _S,
        "notes": _S,
    },
}

#: Metric names eval-aggregate gives its own numbers (an extraction may not take one).
RESERVED_METRICS = frozenset(
    {
        "accuracy",
        "acc",
        "acc_norm",
        "error_rate",
        "timeout_rate",
        "no_answer_rate",
        "mean_completion_tokens",
    }
)
#: Template variables each fixed format provides (``rows`` also passes every field of a row).
FORMAT_VARS: dict[str, frozenset[str]] = {
    "humaneval": frozenset({"prompt", "entry_point", "task_id"}),
    "mbpp": frozenset({"text", "tests", "code", "task_id"}),
    "mmlu_csv": frozenset({"question", "subject", "subject_text"}),
}
#: Variables computed for every multiple-choice question.
CHOICE_VARS = frozenset({"choice_lines", "label", "label_text"})
#: Variables computed for every exact-match question.
ANSWER_VARS = frozenset({"gold"})


# --------------------------------------------------------------------------- templates

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Template:
    """A prompt template: text with ``{name}`` placeholders (``{{``/``}}`` for braces)."""

    source: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, then the name to insert or None)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n for _, n in self.parts if n is not None)

    def render(self, values: Mapping[str, Any]) -> str:
        """The text with each name's value: lists one item a line, None as empty text.

        A name ``values`` lacks raises KeyError with it (callers name the row).
        """
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(_text(values[name]))
        return "".join(out)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value)
    return str(value)


def compile_template(text: str, where: str) -> Template:
    """Parse ``text`` once (linear scan); a stray brace or a bad name is a SpecError at ``where``."""
    parts: list[tuple[str, str | None]] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif ch == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif ch == "{":
            end = text.find("}", i + 1)
            name = text[i + 1 : end] if end >= 0 else ""
            if end < 0 or not _NAME.match(name):
                shown = text[i : (end + 1 if end >= 0 else i + 20)]
                raise SpecError(
                    f"{where}: bad placeholder {shown!r} (write {{field}}, or {{{{ for a brace)"
                )
            parts.append(("".join(literal), name))
            literal = []
            i = end + 1
        elif ch == "}":
            raise SpecError(f"{where}: single '}}' at offset {i} (write }}}} for a brace)")
        else:
            literal.append(ch)
            i += 1
    parts.append(("".join(literal), None))
    return Template(text, tuple(parts))


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Hub:
    """Where the Hugging Face hub has the dataset (used when no local copy is found)."""

    id: str
    config: str | None
    split: str
    fewshot_split: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, as its spec file says (see the module docstring and docs/datasets.md)."""

    name: str
    category: str
    scorer: str
    description: str
    format: str
    files: tuple[str, ...]
    template: Template
    split: str = "test"
    output_type: str = GENERATE_UNTIL
    subjects: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    choice_texts: tuple[str, ...] = ()
    choice_count: int | None = None
    choice_answer: str = "letter"
    prompt_description: Template = field(default_factory=lambda: compile_template("", ""))
    target: Template | None = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    stop: tuple[str, ...] = ()
    chat_instruction: str = ""
    fewshot_split: str | None = None
    fewshot_files: tuple[str, ...] = ()
    fewshot_sampler: str = "random"
    fewshot_seed: int = 1234
    extractions: Mapping[str, str] = field(default_factory=dict)
    package: str | None = None
    package_file: str | None = None
    hub: Hub | None = None
    reference_harness: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    path: Path | None = None  # the spec file (None: built in code, e.g. a custom file)
    source_owner: str = ""  # the spec whose [source] files these are (inherited ones share)
    source_category: str = ""

    @property
    def loglikelihood(self) -> bool:
        """The reference harness ranks the choices by log-likelihood (lm-eval's multiple_choice)."""
        return self.output_type == MULTIPLE_CHOICE_LL

    def where(self, key: str) -> str:
        """``FILE: key K`` for messages about this spec."""
        return f"{self.path or self.name}: key {key}"


# --------------------------------------------------------------------------- reading files


@dataclass
class RawSpec:
    """A spec file's checked contents, before ``inherits`` is applied."""

    path: Path
    name: str
    data: dict[str, Any]


def read_spec(path: Path) -> RawSpec:
    """Read and check one spec file (types and known keys; completeness comes after merging)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: invalid TOML ({exc})") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SCHEMA[""]:
            out[key] = check_key(path, None, key, value, SCHEMA[""][key], SpecError)
        elif key in SCHEMA:
            if not isinstance(value, dict):
                raise SpecError(f"{path}: key {key}: expected a table [{key}]")
            out[key] = {
                sub: _check_sub(path, key, sub, subvalue) for sub, subvalue in value.items()
            }
        else:
            known = ", ".join(sorted([*SCHEMA[""], *(k for k in SCHEMA if k)]))
            raise SpecError(f"{path}: unknown key {key} (known: {known})")
    name = out.get("name", path.stem)
    if not _NAME.match(name.replace("-", "_")):
        raise SpecError(f"{path}: key name: {name!r} is not a dataset name (letters, digits, _ -)")
    return RawSpec(path, name.lower(), out)


def declares_dataset(path: Path) -> bool:
    """Whether a TOML file found among data files is a spec: it has a ``[source]``, a
    ``[prompt]``, a ``scorer`` or an ``inherits`` (or does not parse: its reader says why)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return True
    except OSError:
        return False
    return any(k in data for k in ("source", "prompt", "scorer", "inherits"))


def _check_sub(path: Path, section: str, key: str, value: Any) -> Any:
    spec = SCHEMA[section].get(key)
    if spec is None:
        known = ", ".join(sorted(SCHEMA[section]))
        raise SpecError(f"{path}: unknown key {section}.{key} (known in [{section}]: {known})")
    value = check_key(path, section, key, value, spec, SpecError)
    if section == "scoring" and key == "extractions":
        for name, what in value.items():
            if not isinstance(what, str):
                raise SpecError(
                    f"{path}: key scoring.extractions.{name}: expected str, got {type(what).__name__}"
                )
    if section == "hub" and key == "fields":
        value = {sub: _check_sub(path, "fields", sub, v) for sub, v in value.items()}
    return value


def merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: tables key by key, everything else replaced."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def build_registry(files: Iterable[Path]) -> dict[str, DatasetSpec]:
    """Specs by name (and alias) from ``files``, highest priority first.

    A later file with a name already taken is shadowed (a user's spec over a
    built-in one); ``inherits`` of a spec that shadows its own name reaches
    the one it shadows. Two files of one directory with the same name, or an
    alias taken twice, are errors naming both files.
    """
    raws: list[RawSpec] = []
    first: dict[str, RawSpec] = {}
    for path in files:
        raw = read_spec(path)
        other = first.get(raw.name)
        if other is not None and other.path.parent.resolve() == path.parent.resolve():
            raise SpecError(f"{path}: key name: {raw.name!r} is also the name of {other.path}")
        first.setdefault(raw.name, raw)
        raws.append(raw)
    merged: dict[int, dict[str, Any]] = {}

    def resolved(i: int, chain: tuple[int, ...] = ()) -> dict[str, Any]:
        if i in merged:
            return merged[i]
        raw = raws[i]
        if i in chain:
            names = " -> ".join(raws[j].name for j in (*chain, i))
            raise SpecError(f"{raw.path}: key inherits: inheritance cycle ({names})")
        data = dict(raw.data)
        parent_name = data.get("inherits")
        if parent_name is not None:
            parent_name = parent_name.lower()
            # the spec it inherits from: the first of that name, except itself and,
            # when it shadows its own name, the ones it shadows come after it
            candidates = [
                j
                for j, r in enumerate(raws)
                if r.name == parent_name and j != i and (parent_name != raw.name or j > i)
            ]
            if not candidates:
                known = ", ".join(sorted({r.name for r in raws}))
                raise SpecError(
                    f"{raw.path}: key inherits: no spec named {parent_name!r} (known: {known})"
                )
            parent = resolved(candidates[0], (*chain, i))
            owner = parent["_source_owner"] if "files" not in data.get("source", {}) else None
            data = merge(parent, data)
            data["_source_owner"] = owner or raw.name
            data["_source_category"] = (
                parent["_source_category"] if owner else data.get("category", "")
            )
        else:
            data["_source_owner"] = raw.name
            data["_source_category"] = data.get("category", "")
        data["name"] = raw.name
        merged[i] = data
        return data

    registry: dict[str, DatasetSpec] = {}
    for i, raw in enumerate(raws):
        if first[raw.name] is raw:
            spec = _build(raw.path, resolved(i))
            registry[spec.name] = spec
    for spec in list(registry.values()):
        for alias in spec.aliases:
            taken = registry.get(alias)
            if taken is not None:
                raise SpecError(f"{spec.path}: key aliases: {alias!r} is taken by {taken.path}")
            registry[alias] = spec
    return registry


def _need(path: Path, data: dict[str, Any], section: str, key: str) -> Any:
    table = data if section == "" else data.get(section, {})
    if key not in table:
        raise SpecError(f"{path}: missing key {section + '.' if section else ''}{key}")
    return table[key]


def _build(path: Path, data: dict[str, Any]) -> DatasetSpec:
    """A checked :class:`DatasetSpec` from a merged spec; the rules across keys are here."""
    name = data["name"]
    category = _need(path, data, "", "category")
    scorer = _need(path, data, "", "scorer")
    source, fields_ = data.get("source", {}), dict(data.get("fields", {}))
    prompt, choices = data.get("prompt", {}), data.get("choices", {})
    fewshot, hub = data.get("fewshot", {}), data.get("hub")
    fmt = _need(path, data, "source", "format")
    files = tuple(_need(path, data, "source", "files"))
    split = source.get("split", "test")
    output_type = data.get("output_type", GENERATE_UNTIL)
    if data.get("loglikelihood"):
        output_type = MULTIPLE_CHOICE_LL
    if output_type == MULTIPLE_CHOICE_LL and scorer != MULTIPLE_CHOICE:
        raise SpecError(
            f"{path}: key output_type: multiple_choice (log-likelihood) needs scorer = "
            f'"multiple_choice", not {scorer!r}'
        )
    if data["_source_owner"] == name:  # checked where they are written, not in heirs
        for pattern in files:
            _check_file_pattern(path, name, data.get("aliases", []), pattern, "source.files")
    if not files and not source.get("package"):
        raise SpecError(f"{path}: key source.files: name at least one file")
    if fmt == "rows":
        _check_rows_fields(path, scorer, fields_, choices)
    elif fields_:
        raise SpecError(f"{path}: key fields: only the rows format maps fields ({fmt} is fixed)")
    if source.get("subjects") and fmt != "mmlu_csv":
        raise SpecError(f"{path}: key source.subjects: only the mmlu_csv format has subjects")
    texts = tuple(choices.get("texts", ()))
    answer = choices.get("answer", "text" if texts else "letter")
    if scorer != MULTIPLE_CHOICE and choices:
        raise SpecError(f"{path}: key choices: only a multiple_choice dataset has choices")
    count = choices.get("count", len(texts) or (4 if fmt == "mmlu_csv" else None))
    if texts and count != len(texts):
        raise SpecError(f"{path}: key choices.count: {count} but choices.texts has {len(texts)}")
    if fmt == "mmlu_csv" and count != 4:
        raise SpecError(f"{path}: key choices.count: MMLU's CSV rows have 4 choices, not {count}")

    template = compile_template(
        _need(path, data, "prompt", "template"), f"{path}: key prompt.template"
    )
    description = compile_template(prompt.get("description", ""), f"{path}: key prompt.description")
    target = (
        compile_template(prompt["target"], f"{path}: key prompt.target")
        if "target" in prompt
        else None
    )
    known = FORMAT_VARS.get(fmt)
    if known is not None:
        known = known | (CHOICE_VARS if scorer == MULTIPLE_CHOICE else ANSWER_VARS)
        for key, tpl in (("template", template), ("description", description), ("target", target)):
            unknown = sorted(tpl.names - known) if tpl is not None else []
            if unknown:
                raise SpecError(
                    f"{path}: key prompt.{key}: unknown field {{{unknown[0]}}} "
                    f"(the {fmt} format gives: {', '.join(sorted(known))})"
                )

    fewshot_split = fewshot.get("split")
    if fewshot and fewshot_split is None:
        raise SpecError(f"{path}: missing key fewshot.split")
    if fewshot_split is not None and fewshot_split == split:
        raise SpecError(
            f"{path}: key fewshot.split: {fewshot_split!r} is the evaluated split; "
            "few-shot examples never come from it"
        )
    for pattern in fewshot.get("files", ()):
        _check_file_pattern(path, name, data.get("aliases", []), pattern, "fewshot.files")
    if fewshot_split is not None and target is None and scorer == CODE_EXEC:
        raise SpecError(f"{path}: key prompt.target: a code dataset with few-shot needs one")

    extractions = dict(data.get("scoring", {}).get("extractions", {}))
    if extractions:
        if scorer != EXACT_MATCH:
            raise SpecError(f"{path}: key scoring.extractions: only exact_match has extractions")
        for metric, what in extractions.items():
            if metric in RESERVED_METRICS or metric.startswith("pass@"):
                raise SpecError(
                    f"{path}: key scoring.extractions.{metric}: {metric!r} is one of "
                    "eval-aggregate's own metrics; name it after the extraction"
                )
            if what not in REFERENCE_EXTRACTIONS:
                raise SpecError(
                    f"{path}: key scoring.extractions.{metric}: unknown extraction {what!r} "
                    f"(known: {', '.join(sorted(REFERENCE_EXTRACTIONS))})"
                )
    hub_spec = None
    if hub:
        hub_spec = Hub(
            id=_need(path, data, "hub", "id"),
            config=hub.get("config"),
            split=hub.get("split", split),
            fewshot_split=hub.get("fewshot_split", fewshot_split),
            fields=dict(hub.get("fields", {})),
        )
    if source.get("package") and not source.get("package_file"):
        raise SpecError(f"{path}: missing key source.package_file")
    return DatasetSpec(
        name=name,
        category=category,
        scorer=scorer,
        description=data.get("description", ""),
        format=fmt,
        files=files,
        template=template,
        split=split,
        output_type=output_type,
        subjects=tuple(source.get("subjects", ())),
        fields=fields_,
        choice_texts=texts,
        choice_count=count,
        choice_answer=answer,
        prompt_description=description,
        target=target,
        target_delimiter=prompt.get("target_delimiter", " "),
        fewshot_delimiter=prompt.get("fewshot_delimiter", "\n\n"),
        stop=tuple(prompt.get("stop", ())),
        chat_instruction=prompt.get("chat_instruction", ""),
        fewshot_split=fewshot_split,
        fewshot_files=tuple(fewshot.get("files", ())),
        fewshot_sampler=fewshot.get("sampler", "random"),
        fewshot_seed=fewshot.get("seed", 1234),
        extractions=extractions,
        package=source.get("package"),
        package_file=source.get("package_file"),
        hub=hub_spec,
        reference_harness=dict(data.get("reference_harness", {})),
        aliases=tuple(a.lower() for a in data.get("aliases", ())),
        path=path,
        source_owner=data["_source_owner"],
        source_category=data["_source_category"] or category,
    )


#: File names too generic to be claimed by a dataset outside a folder of its own:
#: a bare ``test.jsonl`` belongs to no dataset (``--dataset NAME`` says which).
GENERIC_STEMS = frozenset(
    {"test", "train", "dev", "val", "valid", "validation", "data", "dataset", "eval", "all"}
)


def _check_file_pattern(path: Path, name: str, aliases: list[str], pattern: str, key: str) -> None:
    where = f"{path}: key {key}"
    if not pattern or pattern.startswith("/") or ".." in Path(pattern).parts:
        raise SpecError(f"{where}: {pattern!r} must be a relative path inside a data directory")
    try:
        compile_template(pattern, where)
    except SpecError:
        raise SpecError(f"{where}: {pattern!r}: only {{split}} may be written in braces") from None
    if compile_template(pattern, where).names - {"split"}:
        raise SpecError(f"{where}: {pattern!r}: only {{split}} may be written in braces")
    if "/" not in pattern:
        stem = pattern.replace("{split}", "test").split(".")[0].lower()
        own = {name.lower(), *(a.lower() for a in aliases)}
        if stem in GENERIC_STEMS or not any(
            o.replace("_", "") in stem.replace("_", "").replace("-", "") for o in own
        ):
            raise SpecError(
                f"{where}: {pattern!r} is not this dataset's own name: a bare file must carry "
                f"the dataset's name (e.g. {name}.jsonl), others go in a folder ({name}/test.jsonl)"
            )


def _check_rows_fields(
    path: Path, scorer: str, fields_: dict[str, Any], choices: dict[str, Any]
) -> None:
    def need(key: str) -> None:
        if key not in fields_:
            raise SpecError(f"{path}: missing key fields.{key} (the rows format needs it)")

    need("question")
    if scorer == EXACT_MATCH:
        need("answer")
    elif scorer == MULTIPLE_CHOICE:
        need("label")
        given: list[str] = [k for k in ("choices", "choice_fields") if k in fields_]
        if "texts" in choices:
            given.append("choices.texts")
        if len(given) != 1:
            raise SpecError(
                f"{path}: key fields.choices: say where the choices are in exactly one way "
                f"(fields.choices, fields.choice_fields or choices.texts; got {', '.join(given) or 'none'})"
            )
    else:
        need("test")
        need("entry_point")
