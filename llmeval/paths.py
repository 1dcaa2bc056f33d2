"""Where llmeval keeps things: ``$LLMEVAL_HOME`` and every path derived from it.

=====================  =====================================  ==========================
what                   environment (first wins)               default
=====================  =====================================  ==========================
home                   ``$LLMEVAL_HOME``                      ``$XDG_CACHE_HOME/llmeval``
                                                              or ``~/.cache/llmeval``
generation cache       ``--cache-dir``, ``$LLMEVAL_CACHE``    ``HOME/cache``
converted models       ``$LLMEVAL_MODELS``                    ``HOME/models``
hub dataset downloads                                         ``HOME/datasets``
run records, heartbeats of runs without ``-o``                ``HOME/runs/<run_id>/``
bundled data and presets of this checkout                     ``evaluation_data/``, ``presets/``
=====================  =====================================  ==========================

Functions, not constants: the environment is read when a path is needed, so a
test (or a SLURM task) that sets ``$LLMEVAL_HOME`` is obeyed.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout (or installed tree) llmeval runs from.
REPO_ROOT = Path(__file__).resolve().parent.parent
EVALUATION_DATA = REPO_ROOT / "evaluation_data"
PRESETS_DIR = REPO_ROOT / "presets"


def home() -> Path:
    """``$LLMEVAL_HOME``, else ``$XDG_CACHE_HOME/llmeval``, else ``~/.cache/llmeval``."""
    env = os.environ.get("LLMEVAL_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "llmeval"


def cache_dir() -> Path:
    """The shared generation cache: ``$LLMEVAL_CACHE``, else ``HOME/cache``."""
    env = os.environ.get("LLMEVAL_CACHE")
    return Path(env) if env else home() / "cache"


def models_dir() -> Path:
    """Converted models (the embedded alias): ``$LLMEVAL_MODELS``, else ``HOME/models``."""
    env = os.environ.get("LLMEVAL_MODELS")
    return Path(env) if env else home() / "models"


def datasets_dir() -> Path:
    """Datasets downloaded from the hub: ``HOME/datasets``."""
    return home() / "datasets"


def runs_dir() -> Path:
    """Run records and heartbeats of runs that write to stdout: ``HOME/runs``."""
    return home() / "runs"
