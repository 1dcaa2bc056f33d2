"""The worker: the trusted tester. It runs each problem's tests in its own interpreter and
calls the candidate across a pipe; a pass is decided here and nowhere else.

Started by :class:`llmeval.sandbox.pool.SandboxPool` with an allowlisted
environment and ``/`` as its directory; its configuration is the first message on
stdin, then jobs; verdicts go to stdout (framed orjson). It sets up its sandbox
once (:mod:`llmeval.sandbox.zygote`), and dies with eval-score
(``PR_SET_PDEATHSIG``), taking the sandbox with it.
"""

from __future__ import annotations

import builtins
import contextlib
import marshal
import os
import random
import resource
import select
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llmeval.codec import decode, encode
from llmeval.sandbox import kernel, resources, wire, zygote
from llmeval.sandbox import view as views
from llmeval.sandbox.jobs import Limits, Program, Verdict, budget, cap
from llmeval.sandbox.predict import predict
from llmeval.sandbox.zygote import SANDBOX_UID, remove_tree
from llmeval.vocab import ERROR, FAIL, PASS, TIMEOUT

ISOLATION_NOTE = "LLMEVAL_SANDBOX=landlock"
STALL_AFTER = 5.0  # seconds past the pool's budget for a job before the worker ends itself
WORKER_MEMORY_MB = 4096  # the tester's own address space, over the candidate's limit
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class SetupError(RuntimeError):
    pass


@dataclass
class Setup:
    """What the worker decided about its sandbox; the zygote carries it out."""

    mode: str  # "namespaces" or "landlock"
    parent: int  # the worker's pid (the sandbox dies with it)
    view: views.View
    memory_mb: int
    output_bytes: int
    open_files: int
    processes: int
    tmp_mb: int = 64
    userns: bool = True  # namespace mode: through a user namespace (else as root directly)
    host_uid: int | None = None  # root: the reserved host uid candidates run as
    cgroup_procs: list[str] = field(default_factory=list)
    oom_protect: bool = False
    scratch: str = ""  # landlock mode: where candidates' directories go

    def message(self) -> dict[str, Any]:
        """The zygote's configuration, as plain data."""
        cfg = {k: v for k, v in asdict(self).items() if k != "view"}
        cfg.update(
            exposed=self.view.exposed,
            hidden=self.view.hidden,
            links=self.view.links,
            files=self.view.files,
            python_paths=views.python_paths(),
            import_path=[PACKAGE_ROOT, *views.site_dirs()],
        )
        return cfg


class Zygote:
    """The worker's handle on its zygote: start it, ask for candidates, learn how they ended."""

    def __init__(self, setup: Setup, *, wait: bool = True):
        """Fork the zygote; with ``wait``, also see it through its set-up (else
        :meth:`configure`, then :meth:`wait_started`: several boot side by side)."""
        self.setup = setup
        self.cfg = setup.message()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            parent.close()
            try:
                kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)  # kept across exec
                if os.getppid() == setup.parent:
                    zygote.exec_zygote(child, sys.executable)
            finally:
                os._exit(70)
        child.close()
        self.pid, self.sock = pid, parent
        self.configured = False
        self.hello: dict[str, Any] = {}
        if wait:
            self.wait_started()

    def configure(self) -> None:
        """Send the configuration once the fresh interpreter asks for it (its imports and
        set-up then run while the worker attends to another zygote)."""
        if not self.configured:
            self._handshake(until_configured=True)

    def wait_started(self) -> None:
        self.hello = self._handshake()

    def _handshake(self, until_configured: bool = False) -> dict[str, Any]:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                why = self._exit()
                self.close()
                raise SetupError(f"the sandbox failed to start ({why})")
            if data == b"boot":
                self.sock.send(marshal.dumps(self.cfg))
                self.configured = True
                if until_configured:
                    return {}
                continue
            msg = orjson.loads(data)
            if msg.get("map"):
                self._write_maps(msg["pid"])
                self.sock.send(b"mapped")
                continue
            if not msg.get("ok"):
                self.close()
                raise SetupError(msg.get("error", "the sandbox failed to start"))
            return msg

    def _write_maps(self, pid: int) -> None:
        """Map the anchor's new user namespace (only a process outside it may map a uid
        other than its own: root's candidates get the reserved host uid)."""
        proc = f"/proc/{pid}"
        if self.setup.host_uid is not None:
            uid = gid = self.setup.host_uid
            maps = (f"0 0 1\n{SANDBOX_UID} {uid} 1\n", f"0 0 1\n{SANDBOX_UID} {gid} 1\n")
        else:
            with open(f"{proc}/setgroups", "w") as fh:
                fh.write("deny")
            maps = (f"{SANDBOX_UID} {os.geteuid()} 1\n", f"{SANDBOX_UID} {os.getegid()} 1\n")
        for name, text in zip(("uid_map", "gid_map"), maps):
            with open(f"{proc}/{name}", "w") as fh:
                fh.write(text)

    def _exit(self) -> str:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "gone"
        self.pid = 0
        return f"exit status {os.waitstatus_to_exitcode(status)}"

    def channel(self) -> tuple[int, int, int]:
        """The next candidate's ends (write calls, read replies, its output): the zygote
        forked it already, while the previous verdict was being reported."""
        data, fds, _, _ = socket.recv_fds(self.sock, 4096, 3)
        if data != b"next" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            why = data[5:].decode(errors="replace") if data.startswith(b"fail:") else "gone"
            raise OSError(f"the zygote could not fork a candidate ({why})")
        return fds[0], fds[1], fds[2]

    def finish(self, info: bool) -> dict[str, Any] | None:
        """Tell the zygote the candidate is done; with ``info``, its wait status and output."""
        self.sock.send(b"info" if info else b"done")
        if not info:
            return None
        data = self.sock.recv(1 << 16)
        return orjson.loads(data) if data else None

    def close(self, grace: float = 2.0) -> None:
        """Closing the socket tells the zygote to kill its last candidate and exit; the
        anchor follows. Whatever is still there after ``grace`` seconds is killed."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if not self.pid:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    self.pid = 0
                    return
            except ChildProcessError:
                self.pid = 0
                return
            time.sleep(0.002)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.pid = 0


class _Deadline(BaseException):
    """The program's wall-clock time is up (BaseException: test code cannot swallow it)."""


class _Died(BaseException):
    """The candidate went away or spoke garbage: that record fails, nothing else."""


class _Broken(BaseException):
    """The sandbox itself failed (setup in the candidate, the zygote): that record errs."""


class _Mispredicted(BaseException):
    """The test made a call other than the next predicted one: run it again, call by call."""


class _LoadError(BaseException):
    pass


def _write(fd: int, data: bytes, deadline: float) -> None:
    """Write all of ``data`` to a non-blocking pipe, waiting no later than ``deadline``."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise _Deadline from None
        except (BrokenPipeError, ConnectionError):
            raise _Died("the candidate process exited") from None


def _frame(obj: Any) -> bytes:
    data = orjson.dumps(obj)
    return len(data).to_bytes(4, "big") + data


class Tester:
    """The trusted end of one candidate's channel."""

    def __init__(self, call_w: int, result_r: int, deadline: float, opening: bytes = b""):
        self.call_w, self.deadline = call_w, deadline
        self.opening = opening  # the program, sent with the predicted calls in one write
        self.reader = wire.Reader(result_r, wire.MAX_REPLY)
        self.predicted: list[bytes] = []  # orjson of [name, args, kwargs] of each predicted call
        self.next_predicted = 0
        self.loaded = False
        self.calls = 0
        # The first of the tester's own exceptions (_Deadline, _Died, _Broken, _Mispredicted).
        # They are BaseExceptions, but a test's bare ``except:`` still catches them: every
        # later call raises it again, and Trial.run raises it when the test returns.
        self.fault: BaseException | None = None
        self.answers: list[tuple[str, Any]] = []  # (kind, value) of each predicted call

    def _reply(self) -> list[Any]:
        try:
            msg = self.reader.recv(self.deadline)
        except TimeoutError:
            raise _Deadline from None
        except wire.Oversized as exc:
            raise _Died(f"the candidate sent {exc}") from None
        except (ValueError, OSError, MemoryError, RecursionError):
            raise _Died("the candidate sent a malformed message") from None
        if msg is None:
            raise _Died("the candidate process exited")
        if type(msg) is not list or not msg:
            raise _Died("the candidate sent a malformed message")
        return msg

    def wait_loaded(self) -> None:
        if self.loaded:
            return
        # The candidate says "contained" (or "setup_error") before it reads the program, so
        # nothing the program writes can pass for the sandbox failing.
        msg = self._reply()
        if msg[0] == "setup_error" and len(msg) == 2:
            raise _Broken(f"sandbox setup failed: {cap(str(msg[1]), 500)}")
        if msg != ["contained"]:
            raise _Died("the candidate sent a malformed message")
        msg = self._reply()
        if msg[0] == "ready" and len(msg) == 1:
            self.loaded = True
            return
        if msg[0] == "load_error" and len(msg) == 3:
            raise _LoadError(f"{cap(str(msg[1]), 100)}: {cap(str(msg[2]), 1000)}")
        raise _Died("the candidate sent a malformed message")

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if self.fault is not None:
            raise self.fault
        try:
            return self._call(name, args, kwargs)
        except (_Deadline, _Died, _Broken, _Mispredicted) as exc:
            self.fault = exc
            raise

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        self.calls += 1
        enc_args, enc_kwargs = encode(list(args)), encode(kwargs)
        if self.next_predicted < len(self.predicted):
            # Its answer is in already: the call must be exactly the predicted one.
            if orjson.dumps([name, enc_args, enc_kwargs]) != self.predicted[self.next_predicted]:
                raise _Mispredicted
            kind, value = self.answers[self.next_predicted]
            self.next_predicted += 1
            if kind == "ok":
                return value
            raise value
        _write(self.call_w, _frame(["call", name, enc_args, enc_kwargs]), self.deadline)
        return self._answer(self._reply())

    def _answer(self, msg: list[Any]) -> Any:
        """The value of one reply, or the candidate's exception raised."""
        if msg[0] == "ok" and len(msg) == 2:
            try:
                return decode(msg[1])
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError):
                raise _Died("the candidate sent a malformed value") from None
            except MemoryError:
                raise _Died("the candidate sent a value too large to hold") from None
        if msg[0] == "exc" and len(msg) == 3:
            raise _exception(cap(str(msg[1]), 100), cap(str(msg[2]), 1000))
        raise _Died("the candidate sent a malformed message")

    def collect(self) -> None:
        """Read and decode the answers to every predicted call before the test runs (until
        one fails to come: the deadline, the candidate gone). What the candidate can see of
        the tester (how fast its answers are read, when it is ended) then does not depend
        on which answer is wrong: were the test run answer by answer, a candidate still alive
        (or read on) after its first answers would know they passed, and could leave that
        where a later sample of the same problem finds it (the moment it dies, the page
        cache). The verdict is still the test's, in its order: the first failure."""
        self.answers = []
        for _ in self.predicted:
            try:
                self.answers.append(("ok", self._answer(self._reply())))
            except (_Deadline, _Died) as exc:
                self.answers.append(("fault", exc))
                return
            except Exception as exc:  # noqa: BLE001 - the candidate's exception, for its call
                self.answers.append(("exc", exc))

    def proxy(self, name: str) -> Any:
        def candidate(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, args, kwargs)

        candidate.__name__ = name
        return candidate


def _exception(name: str, message: str) -> BaseException:
    """A candidate's exception on the trusted side: the same builtin type, else RuntimeError."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        try:
            return cls(message)
        except Exception:  # noqa: BLE001
            pass
    return RuntimeError(f"{name}: {message}")


_COMPILED: dict[tuple[str, str], Any] = {}
_PREDICTED: dict[tuple[str, str, tuple], list[bytes] | None] = {}


def _compiled(source: str, name: str) -> Any:
    key = (source, name)
    code = _COMPILED.get(key)
    if code is None:
        if len(_COMPILED) > 4096:
            _COMPILED.clear()
        # optimize=0: asserts are the tests, whatever -O the interpreter runs with
        code = _COMPILED[key] = compile(source, name, "exec", dont_inherit=True, optimize=0)
    return code


def _referenced_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _referenced_names(const)
    return names


def _failed_assert_line(tb: Any, test: str) -> str:
    """The test's line where the assertion failed (the innermost frame of the test's code).
    Walked by hand: traceback.extract_tb reads source files through linecache."""
    lineno = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<test>":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    if lineno:
        lines = test.splitlines()
        if 0 < lineno <= len(lines):
            return lines[lineno - 1].strip()[:300]
    return ""


def _predicted(program: Program, names: dict[str, str]) -> list[bytes]:
    key = (program.test, program.style, tuple(sorted(names.items())))
    if key not in _PREDICTED:
        if len(_PREDICTED) > 4096:
            _PREDICTED.clear()
        try:
            _PREDICTED[key] = [
                orjson.dumps([n, encode(list(a)), encode(k)])
                for n, a, k in predict(program.test, program.style, names)
            ]
        except (TypeError, ValueError, RecursionError):  # a literal the codec cannot carry
            _PREDICTED[key] = []
    return _PREDICTED[key] or []


class Trial:
    """One program's tests, made ready before its candidate is (the problem's own code run,
    the test compiled, its calls predicted), then run against the candidate."""

    def __init__(self, program: Program, *, speculate: bool = True):
        self.program = program
        self.ns: dict[str, Any] = {"__name__": "__main__"}
        self.failed: tuple[str, str] | None = None
        self.predicted: list[bytes] = []
        self.names: dict[str, str] = {}
        try:
            if program.trusted:
                exec(_compiled(program.trusted, "<problem>"), self.ns)
            self.test_code = _compiled(program.test, "<test>")
        except Exception as exc:  # noqa: BLE001 - the dataset's own code: a harness error
            detail = cap(f"the problem's own code fails: {type(exc).__name__}: {exc}", 500)
            self.failed = (ERROR, detail)
            return
        if program.style == "humaneval":
            # As in the reference harness, the entry point's name means the candidate too
            # (HumanEval/33's test calls sort_third by name); the prompt's helpers stay its own.
            self.names = {program.entry_point: program.entry_point}
        else:
            self.names = {
                n: n
                for n in _referenced_names(self.test_code)
                if n not in self.ns and not hasattr(builtins, n)
            }
            self.names[program.entry_point] = program.entry_point
        if speculate:
            self.predicted = _predicted(program, self.names)

    def run(self, tester: Tester) -> tuple[str, str | None]:
        """(status, detail) of the tests against the candidate behind ``tester``."""
        if self.failed:
            return self.failed
        program, ns = self.program, self.ns
        tester.predicted = self.predicted
        batch = b""
        if self.predicted:
            batch = b"".join([b'["batch",[', b",".join(self.predicted), b"]]"])
            batch = len(batch).to_bytes(4, "big") + batch
        _write(tester.call_w, tester.opening + batch, tester.deadline)
        for name in self.names:
            ns[name] = tester.proxy(name)
        try:
            tester.wait_loaded()
        except _LoadError as exc:
            return FAIL, f"the code does not load: {exc}"
        tester.collect()
        random.seed(0)  # tests that draw random inputs draw the same ones every run
        outcome: tuple[str, str | None] = (PASS, None)
        try:
            exec(self.test_code, ns)
            if program.style == "humaneval":
                check = ns.get("check")
                if not callable(check):
                    return ERROR, "the test defines no check(candidate)"
                check(ns[program.entry_point])
        except AssertionError as exc:
            line = _failed_assert_line(exc.__traceback__, program.test)
            outcome = FAIL, f"assertion failed: {line}" if line else "assertion failed"
        except Exception as exc:  # noqa: BLE001 - the candidate's exception, re-raised here
            outcome = FAIL, cap(f"{type(exc).__name__}: {exc}", 500)
        if tester.fault is not None:  # the test swallowed it (a bare except): it still decides
            raise tester.fault
        return outcome


def run_tests(program: Program, tester: Tester, *, speculate: bool = True) -> tuple[str, str | None]:
    """Run the problem's tests against the candidate proxy; (status, detail)."""
    return Trial(program, speculate=speculate).run(tester)


# ============================================================================ the worker


class Box:
    """One zygote with its own namespaces, cgroup and scratch directory."""

    def __init__(self, setup: Setup, cgroup: resources.Cgroup | None, zygote: Zygote | None = None):
        self.setup, self.cgroup = setup, cgroup
        self.zygote: Zygote | None = zygote or Zygote(setup)
        self.oom_seen = cgroup.oom_kills() if cgroup else 0

    def oom_since_last_look(self) -> bool:
        if self.cgroup is None:
            return False
        seen = self.cgroup.oom_kills()
        new, self.oom_seen = seen > self.oom_seen, seen
        return new

    def restart(self) -> None:
        """A fresh zygote after the old one failed (the worker itself is fine). One that
        cannot start leaves the box without a zygote: the next program tries again."""
        if self.zygote is not None:
            self.zygote.close(grace=0)
        self.zygote = None
        with contextlib.suppress(SetupError, OSError):
            self.zygote = Zygote(self.setup)

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        if self.setup.scratch:
            remove_tree(self.setup.scratch)


SCRATCH_PREFIX = "llmeval-sandbox-"  # then the worker's pid: llmeval-sandbox-<pid>-<random>


def sweep_scratch(tmp: str) -> list[str]:
    """Remove the fallback's scratch directories of workers that are gone (a worker killed
    with SIGKILL, by the pool or with eval-score, could not): this user's, whose worker pid
    runs no more. The removed paths."""
    removed: list[str] = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    for name in names:
        pid = name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not name.startswith(SCRATCH_PREFIX) or not pid.isdigit():
            continue
        path = os.path.join(tmp, name)
        try:
            if os.lstat(path).st_uid != os.geteuid():
                continue
            os.kill(int(pid), 0)
            continue  # its worker (or whoever has that pid now) is alive: leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue
        if remove_tree(path):
            removed.append(path)
    return removed


def _discard(setup: Setup, cgroup: resources.Cgroup | None) -> None:
    if cgroup is not None:
        cgroup.remove()
    if setup.scratch:
        remove_tree(setup.scratch)


class Worker:
    """Two boxes, used in turn, and the tester loop around them.

    While one box's candidate runs, the other's zygote has cleaned up after the
    previous program and forked the next candidate: no program waits for a fork or a
    clean-up. The two boxes share nothing a candidate can reach (each its own PID,
    mount, IPC and network namespaces, tmpfs and cgroup), so a candidate still dying
    in one cannot touch the one starting in the other."""

    BOXES = 2

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.limits = Limits(**config["limits"])
        self.root = os.geteuid() == 0
        self.uid_lock: resources.UidLock | None = None
        self.boxes: list[Box] = []
        self.turn = 0
        self.mispredicted = 0
        self.notes: list[str] = []
        self.view = views.View(**config["view"]) if "view" in config else views.plan()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.setup = self.boxes[0].setup

    # ------------------------------------------------------------------ set-up

    def _setup(self, mode: str, userns: bool, cgroup: resources.Cgroup | None) -> Setup:
        lim = self.limits
        return Setup(
            mode=mode,
            parent=os.getpid(),
            view=self.view,
            memory_mb=lim.memory_mb,
            output_bytes=lim.output_bytes,
            open_files=lim.open_files,
            processes=lim.processes if mode == "namespaces" else 1,
            tmp_mb=lim.tmp_mb,
            userns=userns,
            host_uid=self.uid_lock.uid if self.uid_lock and mode == "namespaces" else None,
            cgroup_procs=cgroup.procs if cgroup else [],
            oom_protect=self.root and cgroup is not None,
            scratch=(
                tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=self.config.get("tmp"))
                if mode == "landlock"
                else ""
            ),
        )

    def _boxes(self, mode: str, userns: bool = True) -> str:
        """Make the boxes (same kind each); a phrase on their memory bound."""
        lim, index = self.limits, self.config.get("index", 0)
        note = ""
        # The zygotes boot side by side: each is forked and configured before any is
        # waited for (start-up is part of every run's wall time).
        starting: list[tuple[Setup, resources.Cgroup | None, Zygote]] = []
        try:
            for n in range(self.BOXES):
                cgroup = None
                if mode == "namespaces":
                    cgroup, note = resources.create_cgroup(
                        f"w{index}{'ab'[n]}", lim.memory_mb, lim.processes
                    )
                setup = self._setup(mode, userns, cgroup)
                try:
                    starting.append((setup, cgroup, Zygote(setup, wait=False)))
                except BaseException:
                    _discard(setup, cgroup)
                    raise
            for _, _, zygote in starting:
                zygote.configure()
            while starting:
                setup, cgroup, zygote = starting[0]
                zygote.wait_started()
                self.boxes.append(Box(setup, cgroup, zygote))
                starting.pop(0)
        except BaseException:
            for setup, cgroup, zygote in starting:
                zygote.close(grace=0)
                _discard(setup, cgroup)
            raise
        if mode == "landlock":
            return f"memory {lim.memory_mb} MB (RLIMIT_AS of its one process)"
        if self.boxes[0].cgroup is not None:
            return f"memory {lim.memory_mb} MB for all of a candidate's processes ({note})"
        return f"memory {lim.memory_mb} MB per process and, polled, for all together ({note})"

    def _start(self) -> None:
        """The strongest sandbox this host allows, tried in order; says what it got."""
        mode = self.config.get("isolation", "auto")
        errors = []
        if mode in ("auto", "namespaces"):
            if self.root:
                self.uid_lock = resources.reserve_uid()
            for userns in (True, False) if self.root else (True,):  # root: without if need be
                try:
                    self.memory_note = self._boxes("namespaces", userns)
                    return
                except SetupError as exc:
                    errors.append(str(exc))
                    self._close_boxes()
            if self.uid_lock:
                self.uid_lock.release()
                self.uid_lock = None
        if mode in ("auto", "landlock"):
            try:
                sweep_scratch(self.config.get("tmp") or tempfile.gettempdir())
                self.memory_note = self._boxes("landlock")
            except SetupError as exc:
                errors.append(str(exc))
                self._close_boxes()
            else:
                if mode == "landlock":
                    self.notes.append(f"namespaces not tried ({ISOLATION_NOTE})")
                elif errors:
                    self.notes.append(f"no namespaces ({'; '.join(errors)})")
                return
        raise SetupError("; ".join(errors) or f"unknown isolation mode {mode!r}")

    def describe(self) -> str:
        """One line for stderr: what holds in this sandbox, and what does not."""
        s, lim = self.setup, self.limits
        zyg = self.boxes[0].zygote
        hello = zyg.hello if zyg else {}
        notes = [*self.notes, *hello.get("notes", [])]
        if s.mode == "namespaces":
            who = (
                f"host uid {s.host_uid} (reserved)"
                if s.host_uid is not None
                else "your uid without capabilities"
            )
            ns = "user, " if s.userns else ""
            parts = [
                f"namespaces ({ns}pid, mount, ipc, net, uts)",
                f"candidate as uid {views.SANDBOX_UID if s.userns else s.host_uid} = {who}",
                f"filesystem: {len(s.view.exposed)} read-only trees, {len(s.view.hidden)} "
                "hidden inside them, own /tmp",
                self.memory_note,
                f"{lim.processes} processes",
                f"seccomp ({len(kernel.DENIED)} calls denied)",
            ]
        else:
            abi = hello.get("landlock", 0)
            parts = [
                "NO namespaces",
                f"Landlock ABI {abi}" if abi else "NO Landlock: the filesystem is NOT protected",
                "signals outside the sandbox scoped" if abi >= 6 else "signals filtered by seccomp",
                self.memory_note,
                "seccomp: no new processes, no sockets" if hello.get("seccomp") else "NO seccomp",
            ]
        parts.append(f"wall timeout {lim.timeout:g} s")
        return "sandbox: " + "; ".join(parts + notes)

    # ------------------------------------------------------------------ jobs

    def timeout(self, job: dict[str, Any]) -> float:
        """A job's wall-clock seconds for its program."""
        return float(job.get("timeout") or self.limits.timeout)

    def run(self, job: dict[str, Any]) -> Verdict:
        program = Program(**job["program"])
        timeout = self.timeout(job)
        start = time.monotonic()
        verdict = self._attempt(program, timeout, speculate=True)
        if verdict is None:  # mispredicted: the same program again, call by call
            self.mispredicted += 1
            verdict = self._attempt(program, timeout, speculate=False)
            assert verdict is not None
        verdict.time_s = round(time.monotonic() - start, 4)
        return verdict

    def _attempt(self, program: Program, timeout: float, speculate: bool) -> Verdict | None:
        box = self.boxes[self.turn]
        self.turn = (self.turn + 1) % len(self.boxes)
        if box.zygote is None:
            box.restart()
            if box.zygote is None:
                return Verdict(ERROR, "the sandbox failed: its zygote could not start again")
        cpu = int(timeout) + 1
        trial = Trial(program, speculate=speculate)
        try:
            call_w, result_r, output = box.zygote.channel()
        except OSError as exc:
            box.restart()
            return Verdict(ERROR, f"the sandbox failed: {exc}")
        # The box's previous candidate is dead and reaped (its zygote forked this one since):
        # memory kills from now on are this program's, whatever the last verdict was.
        box.oom_since_last_look()
        try:
            return self._test(box, trial, program, timeout, cpu, (call_w, result_r, output))
        finally:
            for fd in (call_w, result_r, output):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _test(
        self, box: Box, trial: Trial, program: Program, timeout: float, cpu: int, fds: tuple[int, int, int]
    ) -> Verdict | None:
        """Run ``trial`` against the candidate behind ``fds``; the caller closes them, after the
        zygote has the word: a candidate never sees its channel close while it still runs
        (that would tell it, before it is killed, that an answer failed)."""
        call_w, result_r, output = fds
        assert box.zygote is not None
        deadline = time.monotonic() + timeout  # from now: the zygote's pace is not its own
        os.set_blocking(call_w, False)
        opening = _frame(["load", program.code, program.entry_point, cpu])
        tester = Tester(call_w, result_r, deadline, opening)
        status, detail = ERROR, None
        try:
            status, detail = trial.run(tester)
        except _Mispredicted:
            status = ""
        except _Deadline:
            status, detail = TIMEOUT, f"no verdict within {timeout:g} s (wall clock)"
        except _Died as exc:
            status, detail = FAIL, str(exc)
        except _Broken as exc:
            status, detail = ERROR, str(exc)
        # How it ended matters only if it died: then the zygote, which reaps it, says how.
        died = status == FAIL and "exited" in str(detail)
        text = ""
        if status not in (PASS, ""):
            with contextlib.suppress(OSError):  # its output: a memfd, read from the start
                text = os.pread(output, zygote.OUTPUT_KEEP, 0).decode("utf-8", "replace")
        try:
            info = box.zygote.finish(info=died)
        except OSError:
            box.restart()
            if status in (PASS, ""):
                return None if status == "" else Verdict(PASS)
            return Verdict(ERROR, "the sandbox failed (its zygote died)")
        if status == "":
            return None
        if status == PASS:
            return Verdict(status, detail)
        if died and info is None:
            box.restart()
            return Verdict(ERROR, "the sandbox failed (its zygote died)")
        return self._explain(status, detail, info or {}, cpu, text, box.oom_since_last_look())

    def _explain(
        self,
        status: str,
        detail: str | None,
        info: dict[str, Any],
        cpu: int,
        output: str,
        oom: bool,
    ) -> Verdict:
        """Refine a non-pass verdict with how the candidate ended (when it died)."""
        word = int(info["status"]) if "status" in info else None
        oom = oom or bool(info.get("memory"))
        exit_desc = None
        died = status == FAIL and bool(detail) and "exited" in str(detail)
        if word is None:
            pass
        elif os.WIFSIGNALED(word):
            sig = os.WTERMSIG(word)
            exit_desc = (
                signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            )
            if died:
                if sig == signal.SIGXCPU:
                    status, detail = TIMEOUT, f"CPU time limit ({cpu} s)"
                elif sig == signal.SIGXFSZ:
                    detail = f"output limit ({self.limits.output_bytes} bytes) exceeded"
                elif oom:
                    detail = (
                        f"memory limit ({self.limits.memory_mb} MB, all processes) exceeded"
                    )
                else:
                    detail = f"the candidate process was killed by {exit_desc}"
        elif os.WIFEXITED(word):
            exit_desc = f"exit {os.WEXITSTATUS(word)}"
            if status == FAIL and detail == "the candidate process exited":
                detail = f"the candidate process exited ({exit_desc}) before the tests finished"
        if oom and status in (FAIL, TIMEOUT) and detail and "memory" not in detail:
            detail = f"{detail} (memory limit of {self.limits.memory_mb} MB reached)"
        return Verdict(status, cap(detail) if detail else detail, 0.0, output, exit_desc)

    def _close_boxes(self) -> None:
        for box in self.boxes:
            box.close()
        self.boxes = []

    def close(self) -> None:
        self._close_boxes()
        if self.uid_lock is not None:
            self.uid_lock.release()
            self.uid_lock = None


def main() -> None:  # pragma: no cover - the worker process
    jobs = wire.Reader(0)
    config = jobs.recv()
    if not isinstance(config, dict):
        os._exit(2)
    worker: Worker | None = None

    def parent_died(*_: Any) -> None:
        if worker is not None:
            worker.close()
        os._exit(0)

    kernel.set_name("llmeval-worker")
    signal.signal(signal.SIGTERM, parent_died)
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGTERM)  # cleans up, then goes
    if os.getppid() != config["parent"]:
        os._exit(0)
    mem = max(WORKER_MEMORY_MB, int(config["limits"].get("memory_mb", 0)) + 512) << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    try:
        worker = Worker(config)
    except (SetupError, OSError, RuntimeError) as exc:
        wire.send(1, {"ready": False, "error": str(exc)})
        os._exit(1)
    wire.send(1, {"ready": True, "isolation": worker.describe(), "mode": worker.setup.mode})
    try:
        while True:
            job = jobs.recv()
            if job is None:
                break
            # Trusted code stalled on a candidate's data inside one C call (a set of values
            # crafted to share a hash) runs no signal handler, not even the SIGTERM that
            # eval-score's death sends. Past the pool's budget for the job (the pool kills
            # the worker first while eval-score lives), SIGALRM's default action ends it.
            signal.setitimer(signal.ITIMER_REAL, budget(worker.timeout(job)) + STALL_AFTER)
            verdict = worker.run(job)
            signal.setitimer(signal.ITIMER_REAL, 0)
            wire.send(1, {"id": job["id"], **vars(verdict)})  # flat: asdict would deep-copy
    finally:
        worker.close()


if __name__ == "__main__":  # pragma: no cover
    main()
