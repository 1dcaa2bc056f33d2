"""The pool: eval-score's side. Warm workers, jobs out, verdicts back, an outer deadline.

Workers start from an allowlisted environment (no API key or token of the
caller's reaches a worker, so none can reach a candidate's memory), with ``/``
as their directory (the caller's may be private, and is nobody's business), and
take their configuration on stdin (not in argv, which ``/proc`` shows).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from llmeval.sandbox import jobs, wire
from llmeval.sandbox.jobs import Limits, Program, Verdict
from llmeval.vocab import ERROR, TIMEOUT

ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONDONTWRITEBYTECODE")  # and LC_*
ISOLATION_ENV = "LLMEVAL_SANDBOX"  # auto (default), namespaces, landlock: to test the fallback
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_START = "import sys; del sys.path[0]; from llmeval.sandbox.worker import main; main()"


def worker_environment() -> dict[str, str]:
    """The environment a worker starts with: locale, PATH, a fixed hash seed, llmeval's path."""
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith("LC_")}
    paths = [_PACKAGE_ROOT] + [
        os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    ]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONHASHSEED"] = "0"  # set and dict order, hence verdicts, repeat from run to run
    return env


class SandboxPool:
    """Warm workers scoring programs in parallel (design: docs/sandbox.md)."""

    DEPTH = 2  # jobs queued per worker
    READ_AHEAD = 256  # jobs taken from the input while the workers start
    START_TIMEOUT = 120.0  # seconds for a worker to set up its sandbox

    def __init__(
        self,
        workers: int,
        limits: Limits,
        log: Any = None,
        *,
        hide: Iterable[str] = (),
        isolation: str | None = None,
        wait: bool = True,
        spawned: list[_Worker] | None = None,
    ):
        """Start the workers (or configure ``spawned`` ones, from :func:`spawn_workers`).
        With ``wait`` (the default), return once all are ready (or raise RuntimeError);
        else :meth:`map` waits for them while it reads its input ahead, and logs the
        sandbox's description when the first is ready."""
        self.limits = limits
        self.log = log or (lambda m: None)
        from llmeval.sandbox import view

        # Planned here, in eval-score's own environment (its cwd, $HOME, $LLMEVAL_HOME,
        # $LLMEVAL_DATA, $TMPDIR), which the workers do not inherit.
        plan = view.plan(os.path.abspath(p) for p in hide if p and p != "-")
        self.config: dict[str, Any] = {
            "parent": os.getpid(),
            "limits": asdict(limits),
            "view": asdict(plan),
            "isolation": isolation or os.environ.get(ISOLATION_ENV) or "auto",
            "tmp": tempfile.gettempdir(),
        }
        self.restarts = 0
        self.description = self.mode = ""
        self.workers: list[_Worker] = []
        try:
            if spawned:
                self.workers = list(spawned)
                for w in self.workers:
                    w.configure(self.config)
            for i in range(len(self.workers), max(1, workers)):  # they start in parallel
                self.workers.append(_Worker(self.config, i))
            if wait:
                for w in self.workers:
                    w.wait_ready()
                self._started(announce=False)
        except BaseException:
            self.kill()
            raise

    def _started(self, announce: bool = True) -> None:
        if not self.description:
            first = next(w for w in self.workers if w.ready)
            self.description, self.mode = first.isolation, first.mode
            if announce:
                self.log(self.description)

    def kill(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []

    def map(self, programs: Iterable[tuple[Any, Program]]) -> Iterator[tuple[Any, Verdict]]:
        """Score ``(tag, program)`` pairs; yield ``(tag, verdict)`` as they finish (any order).

        Each worker holds up to DEPTH jobs, so it never waits for eval-score between two
        programs; a worker that does not answer within its budget is killed and replaced,
        its job is a timeout and the jobs queued behind it go to its replacement. While
        workers start, the input is read ahead (up to READ_AHEAD jobs)."""
        todo = iter(programs)
        ahead: deque[tuple[Any, Program]] = deque()
        exhausted = False
        budget = jobs.budget(self.limits.timeout)  # a mispredicted test runs twice
        start_deadline = time.monotonic() + self.START_TIMEOUT
        while True:
            now = time.monotonic()
            for w in sorted((w for w in self.workers if w.ready), key=lambda w: len(w.inflight)):
                while len(w.inflight) < self.DEPTH:
                    item: tuple[Any, Program] | None = ahead.popleft() if ahead else None
                    if item is None and not exhausted:
                        item = next(todo, None)
                    if item is None:
                        exhausted = True
                        break
                    w.submit(item[0], item[1], now)
            starting = [w for w in self.workers if not w.ready]
            while starting and not exhausted and len(ahead) < self.READ_AHEAD:
                # Reading records and making their programs overlaps with the start-up.
                item = next(todo, None)
                if item is None:
                    exhausted = True
                    break
                ahead.append(item)
                if len(ahead) % 16 == 0 and select.select([w.stdout for w in starting], [], [], 0)[0]:
                    break
            active = [w for w in self.workers if w.inflight]
            if not active and not starting:
                return
            for w in active:
                w.flush()
            deadlines = [w.head_started + budget for w in active]
            if starting:
                deadlines.append(start_deadline)
            wait = max(0.0, min(deadlines) - time.monotonic())
            readable, writable, _ = select.select(
                [w.stdout for w in active + starting],
                [w.stdin for w in active if w.outbox],
                [],
                wait,
            )
            for w in starting:
                if w.stdout in readable or time.monotonic() >= start_deadline:
                    try:
                        w.wait_ready(start_deadline)
                    except BaseException:
                        self.kill()
                        raise
                    self._started()
            for w in list(active):
                if w.stdout in readable:
                    while True:
                        verdict = w.result()
                        if verdict is None:  # the worker died: replace it, the run goes on
                            tag, _ = w.inflight.popleft()
                            yield tag, Verdict(
                                ERROR, f"sandbox worker died ({w.exit_description()})"
                            )
                            self._replace(w)
                            break
                        tag, _ = w.inflight.popleft()
                        w.head_started = time.monotonic()
                        yield tag, verdict
                        if not (w.inflight and w.reader.pending()):
                            break
                elif w.head_started + budget <= time.monotonic():
                    tag, _ = w.inflight.popleft()
                    yield tag, Verdict(
                        TIMEOUT, f"killed after {budget:g} s: the sandbox worker did not answer"
                    )
                    self._replace(w)

    def _replace(self, w: _Worker) -> None:
        """A fresh worker in ``w``'s place, given the jobs that were queued behind."""
        w.kill()
        self.restarts += 1
        fresh = _Worker(self.config, w.index)
        self.workers[self.workers.index(w)] = fresh
        fresh.wait_ready()
        now = time.monotonic()
        for tag, program in w.inflight:
            fresh.submit(tag, program, now)
    def close(self) -> None:
        """Tell every worker the input ended (they take their sandboxes down side by side),
        then wait for each."""
        for w in self.workers:
            w.end_input()
        for w in self.workers:
            w.close()
        self.workers = []

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spawn_workers(n: int) -> list[_Worker]:
    """Worker processes, started (the interpreter and its imports) but not yet configured:
    give them to :class:`SandboxPool` (``spawned=``), or :func:`kill_workers`."""
    return [_Worker(None, i) for i in range(max(1, n))]


def kill_workers(workers: list[_Worker]) -> None:
    for w in workers:
        w.kill()


class _Worker:
    def __init__(self, config: dict[str, Any] | None, index: int):
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _START],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd="/",
            env=worker_environment(),
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        self.reader = wire.Reader(self.stdout)
        self.next_id = 0
        self.inflight: deque[tuple[Any, Program]] = deque()
        self.head_started = 0.0  # when the worker began the job at the head of inflight
        self.outbox = bytearray()
        self.ready = False
        self.isolation = self.mode = ""
        if config is not None:
            self.configure(config)

    def configure(self, config: dict[str, Any]) -> None:
        """Its configuration, the first message it reads: then it sets up its sandbox."""
        wire.send(self.stdin, {**config, "index": self.index})
        os.set_blocking(self.stdin, False)

    def wait_ready(self, deadline: float | None = None) -> None:
        try:
            hello = self.reader.recv(deadline or time.monotonic() + SandboxPool.START_TIMEOUT)
        except (TimeoutError, ValueError) as exc:
            self.kill()
            raise RuntimeError(f"sandbox worker failed to start ({exc})") from None
        if not hello or not hello.get("ready"):
            why = (hello or {}).get("error") or self.exit_description()
            self.kill()
            raise RuntimeError(f"sandbox worker failed to start: {why}")
        self.isolation = str(hello.get("isolation", ""))
        self.mode = str(hello.get("mode", ""))
        self.ready = True

    def submit(self, tag: Any, program: Program, now: float) -> None:
        """Queue a job (written as the worker's stdin pipe takes it: never blocks)."""
        self.next_id += 1
        if not self.inflight:
            self.head_started = now
        self.inflight.append((tag, program))
        data = orjson.dumps({"id": self.next_id, "program": program})  # a dataclass: as a dict
        self.outbox += len(data).to_bytes(4, "big") + data

    def flush(self) -> None:
        while self.outbox:
            try:
                written = os.write(self.stdin, self.outbox)
            except BlockingIOError:
                return
            except OSError:  # the worker is gone; its death is seen on stdout
                self.outbox.clear()
                return
            del self.outbox[:written]

    def result(self) -> Verdict | None:
        try:
            msg = self.reader.recv()
        except (ValueError, OSError):
            return None
        if not isinstance(msg, dict):
            return None
        msg.pop("id", None)
        try:
            return Verdict(**msg)
        except TypeError:
            return None

    def exit_description(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        return f"signal {-code}" if code < 0 else f"exit {code}"

    def kill(self) -> None:
        """SIGTERM first: the worker removes its cgroup and takes its sandbox down."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                continue
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def end_input(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()

    def close(self) -> None:
        try:
            self.end_input()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        self.kill()
