"""The command harness: what every llmeval command shares, defined once (STYLE.md).

A command is a :class:`Command` subclass (csvkit's utility base class): it
names itself, says which shared parts it uses, adds its own flags in
:meth:`Command.add_arguments` and does its work in :meth:`Command.run`. The
harness owns the rest:

* flags with one meaning each: ``-v/--verbose`` (tracebacks), ``--version``,
  ``-o/--output`` (where the command's output goes), ``--limit``,
  ``--run-dir`` and ``--progress`` (commands that write run records);
* inputs: FILE arguments, ``-`` or none for stdin, ``.gz`` read transparently,
  a hint on stderr when stdin is a terminal, missing files named;
* output: appended crash-safely (``/dev/null`` and ``.gz`` included), never
  onto one of the inputs, resumed by the command's record identity;
* the run record, the heartbeat, the progress bar and the summary line;
* exit codes and the one error line: 0 ok, 1 bad data or backend
  (``PROG: error: FILE:LINE: field "x" must be ...``), 2 usage, 130 interrupted;
  the traceback only with ``-v``. ``eval-x | head`` exits quietly.

stdout carries only the command's records; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import llmeval
from llmeval.errors import DataError, StageError, UsageError

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with the house style: epilog kept as written, usage errors exit 2."""

    def __init__(self, prog: str, description: str, epilog: str = "", **kw: Any):
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )


# ---------------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = nonneg_float(text)
    if value == 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A level or mass strictly between 0 and 1 (``--ci-level``, ``--alpha``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


# ---------------------------------------------------------------------------- small helpers


def log(prog: str, message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def progress_bar(flag: bool | None, *, unit: str, desc: str, total: int | None = None) -> Any:
    """A tqdm bar on stderr, or None when --no-progress or stderr is not a terminal."""
    if flag is False or (flag is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=0.5
    )


def available_cpus() -> int:
    """CPUs this process may use: the SLURM allocation or affinity mask, not the whole node."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def reads_stdin(inputs: Sequence[str | None]) -> bool:
    return not inputs or any(p in (None, "-") for p in inputs)


def check_stdin(prog: str, inputs: Sequence[str | None]) -> None:
    """Say so instead of hanging when stdin is a terminal and no FILE was given."""
    if reads_stdin(inputs) and sys.stdin is not None and sys.stdin.isatty():
        log(prog, "reading records from the terminal (stdin); pipe a file in or pass FILE")


def check_inputs_exist(inputs: Sequence[str | None]) -> None:
    """Name a missing input before anything is started or written."""
    for path in inputs:
        if path not in (None, "-") and not os.path.exists(path):
            raise DataError(path, "no such file")


def refuse_output_onto_input(output: str | None, inputs: Sequence[str | None]) -> None:
    """A ``-o`` that is also an input would read what it appends (or truncate what it reads)."""
    if not output or output == "-" or not os.path.exists(output):
        return
    try:
        out = os.stat(output)
    except OSError:
        return
    if not stat.S_ISREG(out.st_mode):  # /dev/null, a FIFO: nothing to protect
        return
    for path in inputs:
        try:
            st = os.fstat(0) if path in (None, "-") else os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino):
            name = "stdin" if path in (None, "-") else path
            raise UsageError(
                f"-o {output} is also an input ({name}); write the output to another file"
            )


def count_input_lines(inputs: Sequence[str | None], limit: int | None = None) -> int | None:
    """Lines of the input files, when every input is a plain file (a total for progress)."""
    if reads_stdin(inputs):
        return None
    total = 0
    for path in inputs:
        assert path is not None
        if path.endswith(".gz") or not os.path.isfile(path):
            return None
        last = b""
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                total += block.count(b"\n")
                last = block
        if last and not last.endswith(b"\n"):
            total += 1
    return min(total, limit) if limit else total


# ---------------------------------------------------------------------------- the harness


class Command:
    """One llmeval command. Subclasses set the class attributes and implement :meth:`run`.

    ``inputs``: ``"records"`` (FILE arguments of JSONL records, stdin by
    default), or None when the command takes its own positionals.
    ``output``: ``"append"`` (``-o OUT`` appended, resumable by
    :meth:`identity`), ``"replace"`` (``-o OUT`` written whole, atomically), or
    None. ``limit``: the help text of ``--limit``, or None for no ``--limit``.
    ``stage``: the run-record stage name for commands that write run records
    and heartbeats (``--run-dir``, ``--progress``), else None.
    """

    prog = "eval-?"
    description = ""
    epilog = ""
    inputs: str | None = "records"
    inputs_help = "records (default: stdin; .gz ok)"
    output: str | None = "append"
    output_help = "append records to OUT (resumable) instead of writing stdout"
    limit: str | None = "stop after N input records"
    stage: str | None = None
    unit = "record"

    def __init__(self) -> None:
        self.args: Any = None
        self.run_record: dict[str, Any] | None = None
        self.heartbeat: Any = None
        self.bar: Any = None
        self.writer: Any = None
        self.started = time.monotonic()

    # -- what subclasses provide

    def add_arguments(self, parser: Parser) -> None:
        """Add the command's own flags."""

    def identity(self, record: dict[str, Any]) -> Any:
        """What makes an output record unique (resume); None is never an identity."""
        return record.get("key")

    def run(self) -> int:
        raise NotImplementedError

    # -- parser

    def parser(self) -> Parser:
        p = Parser(self.prog, self.description, self.epilog)
        if self.inputs == "records":
            p.add_argument("inputs", nargs="*", metavar="FILE", help=self.inputs_help)
        self.add_arguments(p)
        if self.stage:
            p.add_argument("--run-dir", metavar="D", help="where the heartbeat and run record go")
            p.add_argument(
                "--progress",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="progress bar on stderr (default: when stderr is a terminal)",
            )
        if self.limit:
            p.add_argument("--limit", type=positive_int, metavar="N", help=self.limit)
        if self.output:
            p.add_argument("-o", "--output", metavar="OUT", help=self.output_help)
        p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
        p.add_argument(
            "--version", action="version", version=f"%(prog)s (llmeval) {llmeval.__version__}"
        )
        return p

    # -- entry point

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv``, run, and map failures onto exit codes and one stderr line."""
        # eval-x | head: die quietly on a closed pipe instead of a BrokenPipeError trace.
        if hasattr(signal, "SIGPIPE"):
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        self.args = self.parser().parse_args(argv)
        verbose = bool(getattr(self.args, "verbose", False))
        try:
            if self.inputs == "records":
                check_inputs_exist(self.input_paths())
            if self.output == "append":
                refuse_output_onto_input(self.args.output, self.input_paths())
            return self.run()
        except KeyboardInterrupt:
            self.log("interrupted")
            return EXIT_INTERRUPTED
        except UsageError as exc:
            if verbose:
                traceback.print_exc()
            self.log(f"error: {exc}")
            return EXIT_USAGE
        except (DataError, StageError) as exc:
            if verbose:
                traceback.print_exc()
            self.log(f"error: {exc}")
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
            self.log(f"error: {type(exc).__name__}: {exc} (run with -v for the traceback)")
            return EXIT_DATA
        finally:
            self.close()

    # -- services for run()

    def log(self, message: str) -> None:
        log(self.prog, message)

    def input_paths(self) -> list[str | None]:
        return list(getattr(self.args, "inputs", None) or []) or [None]

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(FILE:LINE, record)`` for every input record, up to ``--limit``."""
        from llmeval.records import read_many_numbered

        inputs = list(getattr(self.args, "inputs", None) or [])
        check_stdin(self.prog, inputs)
        numbered: Iterator[tuple[str, dict[str, Any]]] = read_many_numbered(inputs)
        limit = getattr(self.args, "limit", None)
        return islice(numbered, limit) if limit else numbered

    def done(self) -> set[Any]:
        """Identities already in ``-o OUT`` (resume)."""
        from llmeval.records import existing_values

        return existing_values(getattr(self.args, "output", None), self.identity)

    def open_output(self) -> Any:
        """The writer for ``-o OUT`` (appending, healed) or stdout."""
        from llmeval.records import AppendWriter

        if self.writer is None:
            self.writer = AppendWriter(getattr(self.args, "output", None))
        return self.writer

    def write(self, record: dict[str, Any]) -> None:
        self.open_output().write(record)

    def start_run(
        self,
        *,
        preset: dict[str, Any] | None = None,
        seed: int | None = None,
        extra: dict[str, Any] | None = None,
        gpus: bool = True,
        info: dict[str, Any] | None = None,
        total: int | None = None,
    ) -> dict[str, Any]:
        """Write the run record, start the heartbeat and the progress bar; return the record."""
        from llmeval import provenance, telemetry

        assert self.stage, "start_run() is for commands with a stage"
        output = getattr(self.args, "output", None)
        run = provenance.run_record(
            self.stage, preset=preset, seed=seed, extra=extra, gpus=gpus
        )
        inputs = list(getattr(self.args, "inputs", None) or []) or ["-"]
        self.heartbeat = telemetry.start_run(
            run,
            output,
            getattr(self.args, "run_dir", None),
            {"output": output, "input": inputs, "total": total, **(info or {})},
        )
        self.run_record = run
        self.bar = progress_bar(
            getattr(self.args, "progress", None), unit=self.unit, desc=self.prog, total=total
        )
        self.started = time.monotonic()
        return run

    def progress(
        self, *, done: int, total: int | None = None, postfix: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Update the heartbeat (``done``, ``total`` and any ``fields``) and the progress bar."""
        if self.heartbeat is not None:
            counts = {"done": done, **fields}
            if total is not None:
                counts["total"] = total
            self.heartbeat.update(**counts)
        if self.bar is not None:
            if total is not None:
                self.bar.total = total
            self.bar.n = done
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def finish(self, state: str = "finished", **fields: Any) -> None:
        """Close the output, the bar and the heartbeat (with its final ``state``)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.heartbeat is not None:
            if fields:
                self.heartbeat.state.update(fields)
            self.heartbeat.finish(state)
            self.heartbeat = None

    def close(self) -> None:
        """Whatever :meth:`run` left open (after an error: the heartbeat says ``failed``)."""
        try:
            self.finish("failed")
        except Exception:  # noqa: BLE001 - closing must not hide the error being reported
            pass
