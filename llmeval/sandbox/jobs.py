"""What crosses between eval-score and its sandbox workers: limits, programs, verdicts."""

from __future__ import annotations

from dataclasses import dataclass

DETAIL_MAX = 2000  # characters of a verdict's detail (the rest is cut, with a marker)
GRACE = 5.0  # seconds past a program's time (twice its timeout: a re-run) before a kill


def budget(timeout: float) -> float:
    """Seconds a worker may take over one program before the pool kills it."""
    return 2 * timeout + GRACE


def cap(text: str, limit: int = DETAIL_MAX) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit} more characters cut]"


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds for one program, tests included
    memory_mb: int = 1024  # all of a candidate's processes together (see docs/sandbox.md)
    output_bytes: int = 1 << 20  # RLIMIT_FSIZE: output and any file it writes
    open_files: int = 64
    processes: int = 16  # processes and threads of one candidate
    tmp_mb: int = 64  # the candidate's own writable /tmp

    @property
    def cpu_seconds(self) -> int:
        return int(self.timeout) + 1


@dataclass
class Program:
    """One thing to test. ``code`` runs in the sandbox; ``trusted`` and ``test`` in the tester."""

    code: str
    entry_point: str
    test: str
    style: str = "humaneval"  # "humaneval": test defines check(candidate); "asserts": assert lines
    trusted: str = ""  # the problem's own code (prompt helpers, setup), run on the trusted side


@dataclass
class Verdict:
    status: str
    detail: str | None = None
    time_s: float = 0.0
    output: str = ""
    exit: str | None = None
