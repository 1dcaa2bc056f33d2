"""Command-line conventions shared by the five stages (../STYLE.md).

stdout carries only JSONL; logs and progress go to stderr. Exit 2 for usage
errors (argparse), 1 for data or backend errors, each as one line
``PROG: error: ...`` on stderr; the traceback only with ``-v``.
``eval-x | head`` exits quietly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from llmeval.records import DataError

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2


class StageError(Exception):
    """An error the user can fix (bad data, missing dependency, backend failure): exit 1."""


class Parser(argparse.ArgumentParser):
    """argparse with the house style: epilog kept as written, usage errors exit 2."""

    def __init__(self, prog: str, description: str, epilog: str = "", **kw: object):
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,  # type: ignore[arg-type]
        )


def add_common(parser: argparse.ArgumentParser, *, output: bool = True, limit: bool = True) -> None:
    """The flags every stage shares: -v, and where they apply --limit and -o."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show tracebacks and debug logs"
    )
    if limit:
        parser.add_argument(
            "--limit", type=positive_int, metavar="N", help="stop after N input records"
        )
    if output:
        parser.add_argument(
            "-o",
            "--output",
            metavar="OUT",
            help="append records to OUT (resumable) instead of writing stdout",
        )


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the stages that write heartbeats and run records (eval-generate, eval-score)."""
    parser.add_argument("--run-dir", metavar="D", help="where the heartbeat and run record go")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar on stderr (default: when stderr is a terminal)",
    )


def progress_bar(flag: bool | None, *, unit: str, desc: str) -> Any:
    """A tqdm bar on stderr, or None when --no-progress or stderr is not a terminal."""
    if flag is False or (flag is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(
        total=None, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=0.5
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def log(prog: str, message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def check_stdin(prog: str, inputs: Sequence[str | None]) -> None:
    """Say so instead of hanging when stdin is a terminal and no FILE was given."""
    reads_stdin = not inputs or any(p in (None, "-") for p in inputs)
    if reads_stdin and sys.stdin is not None and sys.stdin.isatty():
        log(prog, "reading records from the terminal (stdin); pipe a file in or pass FILE")


def run(prog: str, body: Callable[[], int], verbose: bool) -> int:
    """Run a stage body, mapping failures onto exit codes and one stderr line."""
    # eval-x | head: die quietly on a closed pipe instead of a BrokenPipeError trace.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return body()
    except KeyboardInterrupt:
        log(prog, "interrupted")
        return 130
    except (DataError, StageError) as exc:
        if verbose:
            traceback.print_exc()
        log(prog, f"error: {exc}")
        return EXIT_DATA
    except BrokenPipeError:
        # Downstream closed: not our error. Silence the flush at interpreter exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a trace
        if verbose:
            traceback.print_exc()
        log(prog, f"error: {type(exc).__name__}: {exc} (run with -v for the traceback)")
        return EXIT_DATA


def missing_dependency(module: str, extra: str) -> StageError:
    """The one-line error for an optional dependency that is not installed."""
    return StageError(
        f"{module} is not installed: pip install 'llmeval[{extra}]' (or: pip install {module})"
    )
