"""The sandbox: model-written code runs contained; its verdict is decided outside it.

By trust side (docs/sandbox.md has the design, the threat model and the limits):

* trusted, in eval-score: :mod:`~llmeval.sandbox.pool` keeps warm workers and an outer
  deadline;
* trusted, a worker process: :mod:`~llmeval.sandbox.worker` runs the dataset's tests in
  its own interpreter and calls the candidate across a pipe (:mod:`llmeval.codec`),
  :mod:`~llmeval.sandbox.predict` batches the calls a test will make;
* the box: :mod:`~llmeval.sandbox.zygote` builds it once per worker (namespaces and an
  allowlisted filesystem :mod:`~llmeval.sandbox.view`, else Landlock) and forks one
  candidate per program; :mod:`~llmeval.sandbox.kernel` holds the system calls,
  :mod:`~llmeval.sandbox.resources` the cgroup and the reserved uid;
* untrusted: :mod:`~llmeval.sandbox.candidate`, the forked process that runs the code.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmeval.sandbox.jobs import DETAIL_MAX, Limits, Program, Verdict, cap
    from llmeval.sandbox.pool import SandboxPool
    from llmeval.sandbox.resources import UID_BASE, UID_SPAN

_WHERE = {
    "DETAIL_MAX": "jobs",
    "Limits": "jobs",
    "Program": "jobs",
    "Verdict": "jobs",
    "cap": "jobs",
    "SandboxPool": "pool",
    "UID_BASE": "resources",
    "UID_SPAN": "resources",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: the zygote imports this package and must stay small (every
    # module it holds makes each fork dearer; docs/sandbox.md, "Speed").
    if name in _WHERE:
        return getattr(import_module(f"llmeval.sandbox.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DETAIL_MAX",
    "UID_BASE",
    "UID_SPAN",
    "Limits",
    "Program",
    "SandboxPool",
    "Verdict",
    "cap",
]
