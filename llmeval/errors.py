"""The error types every module raises, and what each means at the command line.

Library code raises these; only the command harness (:mod:`llmeval.cli`)
turns them into exit codes and the one ``PROG: error: ...`` line on stderr:

* :class:`DataError`: malformed input, named by where it is (``FILE:LINE``), exit 1;
* :class:`StageError`: anything else the user can fix (a missing dependency, a
  backend that refuses, a bad preset), exit 1;
* :class:`UsageError`: a command line that cannot work as given, exit 2.
"""

from __future__ import annotations


class LlmevalError(Exception):
    """Base of the errors a user can act on (never a bug of llmeval's)."""


class DataError(LlmevalError):
    """Malformed input: reported as ``WHERE: reason`` (``FILE:LINE: field "x" must be ...``)."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class StageError(LlmevalError):
    """An error the user can fix (missing dependency, backend failure, bad settings): exit 1."""


class UsageError(StageError):
    """A command line that cannot work as given (e.g. ``-o`` onto an input): exit 2."""


def missing_dependency(module: str, extra: str) -> StageError:
    """The one-line error for an optional dependency that is not installed."""
    return StageError(
        f"{module} is not installed: pip install 'llmeval[{extra}]' (or: pip install {module})"
    )
