"""The sandbox: model-written code runs contained; its verdict is decided outside it.

Three kinds of process (docs/sandbox.md has the full design and its limits):

* the **pool** (in eval-score) keeps ``workers`` warm worker processes, sends
  each a program, and enforces an outer wall-clock deadline: a worker that does
  not answer in time is killed with its whole process group and every process
  of its sandbox uid, then replaced;
* a **worker** (trusted, ``python -m llmeval.sandbox``) is the *tester*: it
  runs the dataset's tests in its own interpreter and calls the candidate
  function across a pipe, exchanging plain data (:mod:`llmeval.codec`). It
  forks, once, a **zygote** that has never seen a test, and asks it for one
  fresh child per program;
* the **candidate** (untrusted) is forked by the zygote: its own session and
  process group, a private temporary cwd, stdin from /dev/null, output to a
  size-capped file, rlimits on address space, CPU time, file size, open files
  and processes, a scrubbed environment, and, when running as root, an
  unprivileged uid of its own (so RLIMIT_NPROC binds, it cannot signal or
  ptrace the harness, and every process it leaves behind is killed by uid) and
  no network (the worker lives in a new network namespace).

A pass is decided only in the worker, when the test code returns without an
exception; nothing the candidate prints, returns as an object, or does to its
own interpreter (frames, trace hooks, patched builtins, ``sys.exit``) can make
the tests pass.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llmeval.vocab import ERROR, FAIL, PASS, TIMEOUT

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
UID_BASE = 61000  # sandbox uids are taken from [UID_BASE, UID_BASE + UID_SPAN)
UID_SPAN = 1000
OUTPUT_KEEP = 2048  # bytes of the candidate's output kept in the verdict
MAX_MESSAGE = 64 << 20
MAX_FD = (
    resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] > 0
    else 1 << 20
)


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds for one program, tests included
    memory_mb: int = 1024  # RLIMIT_AS of the candidate
    output_bytes: int = 1 << 20  # RLIMIT_FSIZE: output file and any file it writes
    open_files: int = 64
    processes: int = 16  # RLIMIT_NPROC under the sandbox uid

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
    extra: dict[str, Any] = field(default_factory=dict)


# ============================================================================ framing


def _send(fd: int, obj: Any) -> None:
    """One framed message: 4-byte big-endian length, then orjson bytes."""
    data = orjson.dumps(obj)
    view = memoryview(struct.pack("!I", len(data)) + data)
    while view:  # a pipe may take a large message in parts
        view = view[os.write(fd, view) :]


class _Reader:
    """Framed messages from one fd, read in large chunks (one read usually holds a message)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""

    def _fill(self, need: int, deadline: float | None) -> bool:
        while len(self.buf) < need:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(self.fd, max(65536, need - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv(self, deadline: float | None = None) -> Any:
        """One message, None on EOF; raises TimeoutError, ValueError (garbage)."""
        if not self._fill(4, deadline):
            return None
        (size,) = struct.unpack("!I", self.buf[:4])
        if size > MAX_MESSAGE:
            raise ValueError(f"message of {size} bytes is over the limit")
        if not self._fill(4 + size, deadline):
            return None
        body, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
        return orjson.loads(body)


# ============================================================================ isolation


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def isolate_network() -> str:
    """Move this process into a new, empty network namespace; say what happened."""
    libc = _libc()
    if os.geteuid() == 0:
        if libc.unshare(CLONE_NEWNET) == 0:
            return "network namespace"
    elif libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return "user+network namespace"
    return f"NO network isolation (unshare failed: {os.strerror(ctypes.get_errno())})"


def expose_python() -> str:
    """Let an unprivileged sandbox uid read the interpreter and its packages.

    Python often lives under a directory only root may enter (``/root/.pyenv``).
    In a private mount namespace, each such directory on the way to a path the
    interpreter needs is covered with an empty tmpfs into which only the needed
    subtrees are bind-mounted back. The candidate can import the standard library
    and installed packages, and sees nothing else of that directory (no
    ``/root/.ssh``). The host's mount table is not touched.
    """
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        return f"no mount namespace ({os.strerror(ctypes.get_errno())}): imports outside the preloaded set fail"
    libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    need: set[Path] = {
        Path(p).resolve()
        for p in [
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            *sys.path,
            str(Path(__file__).parent.parent),
        ]
        if p and os.path.exists(p)
    }
    covers: dict[Path, set[str]] = {}
    for path in need:
        for ancestor in [*reversed(path.parents), path]:
            if ancestor == path:
                break
            if not os.stat(ancestor).st_mode & 0o001:  # others may not enter
                child = path.relative_to(ancestor).parts[0]
                covers.setdefault(ancestor, set()).add(child)
                break
    for top, children in sorted(covers.items(), key=lambda kv: -len(kv[0].parts)):
        stage = tempfile.mkdtemp(prefix="llmeval-expose-")
        staged = []
        for child in sorted(children):
            dest = os.path.join(stage, child)
            os.mkdir(dest)
            if (
                libc.mount(str(top / child).encode(), dest.encode(), None, MS_BIND | MS_REC, None)
                != 0
            ):
                return f"could not expose {top / child} ({os.strerror(ctypes.get_errno())})"
            staged.append((dest, child))
        if libc.mount(b"tmpfs", str(top).encode(), b"tmpfs", 0, b"mode=0755") != 0:
            return f"could not cover {top} ({os.strerror(ctypes.get_errno())})"
        for dest, child in staged:
            target = top / child
            target.mkdir()
            libc.mount(dest.encode(), str(target).encode(), None, MS_MOVE, None)
            os.rmdir(dest)
        os.rmdir(stage)
    covered = ", ".join(f"{t} (only {', '.join(sorted(c))})" for t, c in covers.items())
    return f"private mount namespace{': covered ' + covered if covered else ''}"


def kill_uid(uid: int) -> None:
    """SIGKILL every process running as ``uid`` (from a throwaway child that becomes ``uid``)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal; never the caller
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def allocate_uids(count: int) -> tuple[list[int], list[Any]]:
    """Reserve ``count`` sandbox uids for this process (lock files; several runs may share a host)."""
    lock_dir = Path(tempfile.gettempdir()) / "llmeval-sandbox-uids"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    uids, locks = [], []
    for uid in range(UID_BASE, UID_BASE + UID_SPAN):
        fh = open(lock_dir / str(uid), "w")  # noqa: SIM115 - held for the pool's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        uids.append(uid)
        locks.append(fh)
        if len(uids) == count:
            break
    return uids, locks


def remove_candidate_dirs(uid: int) -> None:
    """Remove the temp dirs of candidates that ran as ``uid`` (left when a zygote was killed).

    Safe while this process holds ``uid``'s lock: no other pool can be using it.
    """
    import glob

    for d in glob.glob(os.path.join(tempfile.gettempdir(), f"llmeval-cand-{uid}-*")):
        shutil.rmtree(d, ignore_errors=True)


def describe_isolation(limits: Limits, root: bool, network: str) -> str:
    procs = (
        f"own uid per worker, RLIMIT_NPROC={limits.processes}"
        if root
        else "NO process cap that binds reliably (not root: RLIMIT_NPROC counts all your processes)"
    )
    return (
        f"sandbox: fork per program from a warm zygote; {procs}; {network}; rlimits "
        f"AS={limits.memory_mb}MB CPU={limits.cpu_seconds}s FSIZE={limits.output_bytes}B "
        f"NOFILE={limits.open_files}; wall timeout {limits.timeout:g}s"
    )


# ============================================================================ candidate


def _candidate(
    code: str, entry: str, call_r: int, result_w: int, tmp: str, uid: int | None, limits: Limits
) -> None:  # pragma: no cover - runs in the forked child
    """The untrusted child: contain, load the code, then answer calls. Never returns.

    What is the same for every candidate (scrubbed environment, default signal
    handlers, unbuffered stdout) was set up once in the zygote, so a fork
    inherits it for free.
    """
    try:
        # Park the channel high first (the zygote has no stdin, so it may hold fd 0), set up
        # 0-2, bring the channel down to 3 and 4, and close everything else in one syscall.
        call_r = fcntl.fcntl(call_r, fcntl.F_DUPFD, 100)
        result_w = fcntl.fcntl(result_w, fcntl.F_DUPFD, 100)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        out = os.open(os.path.join(tmp, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if uid is not None:
            os.fchown(out, uid, uid)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(call_r, 3)
        os.dup2(result_w, 4)
        call_r, result_w = 3, 4
        os.closerange(5, MAX_FD)
        os.chdir(tmp)
        os.environ["HOME"] = os.environ["TMPDIR"] = tmp
        setrl = resource.setrlimit
        mem = limits.memory_mb << 20
        setrl(resource.RLIMIT_AS, (mem, mem))
        setrl(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        setrl(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
        setrl(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        setrl(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            setrl(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
    except BaseException as exc:
        _send(result_w, ["setup_error", f"{type(exc).__name__}: {exc}"])
        os._exit(70)
    _serve_calls(code, entry, call_r, result_w)
    os._exit(0)


def _serve_calls(code: str, entry: str, call_r: int, result_w: int) -> None:  # pragma: no cover
    from llmeval.codec import Unencodable, decode, encode

    namespace: dict[str, Any] = {}
    try:
        exec(compile(code, "<candidate>", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - any failure to load is the candidate's
        _send(result_w, ["load_error", type(exc).__name__, str(exc)[:1000]])
        return
    if not callable(namespace.get(entry)):
        _send(result_w, ["load_error", "NameError", f"the code does not define {entry}()"])
        return
    objects: dict[int, Any] = {}

    def handle(obj: Any) -> int:
        objects[id(obj)] = obj
        return id(obj)

    def resolve(h: int) -> Any:
        if h not in objects:
            raise ValueError("unknown handle")
        return objects[h]

    _send(result_w, ["ready"])
    calls = _Reader(call_r)
    while True:
        try:
            msg = calls.recv()
        except BaseException:  # noqa: BLE001
            return
        if msg is None:
            return
        _, name, args, kwargs = msg
        try:
            fn = namespace.get(name)
            if not callable(fn):
                raise NameError(f"name {name!r} is not defined")
            value = fn(*decode(args, resolve), **decode(kwargs, resolve))
            reply = ["ok", encode(value, handle)]
        except Unencodable as exc:
            reply = ["exc", "TypeError", str(exc)]
        except BaseException as exc:  # noqa: BLE001 - reported, judged by the tester
            try:
                message = str(exc)[:1000]
            except BaseException:  # noqa: BLE001 - a __str__ that raises
                message = "<unprintable>"
            reply = ["exc", type(exc).__name__, message]
        try:
            _send(result_w, reply)
        except (Unencodable, TypeError, ValueError, OverflowError) as exc:
            _send(result_w, ["exc", "TypeError", f"unencodable result: {exc}"])


# ============================================================================ zygote


_LIBC: Any = None


def _zygote(sock: socket.socket, uid: int | None, limits: Limits) -> None:  # pragma: no cover
    """Fork one candidate per request; clean up after it. Never sees tests.

    Protocol (SOCK_SEQPACKET): request = code and entry point, with the two
    pipe ends as SCM_RIGHTS; then ``done`` (or ``done+info`` when the tester
    needs the exit status and output, which is answered before the clean-up).
    The clean-up (kill by uid, reap, remove the temp dir) runs while the tester
    reports its verdict, before the next request is read.
    """
    import gc

    global _LIBC
    _LIBC = _libc()
    _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # What every candidate needs, done once: a scrubbed environment (no API keys or
    # tokens reach model code), default signal dispositions, an unbuffered stdout.
    os.environ.clear()
    os.environ.update(PATH="/usr/bin:/bin", LANG="C.UTF-8")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    # Children must not touch the zygote's objects: a collector walk in a fresh child
    # would copy every page on write. Freeze what exists; children collect as usual.
    gc.disable()
    gc.freeze()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 24, 4)
        except OSError:
            data = b""
        if not data:
            _reap_all(uid)
            os._exit(0)
        req = orjson.loads(data)
        call_r, result_w = fds
        tmp = tempfile.mkdtemp(prefix=f"llmeval-cand-{uid if uid is not None else os.getpid()}-")
        if uid is not None:
            os.chown(tmp, uid, uid)
        pid = os.fork()
        if pid == 0:
            sock.close()
            gc.enable()
            _candidate(req["code"], req["entry"], call_r, result_w, tmp, uid, limits)
        os.close(call_r)
        os.close(result_w)
        done = sock.recv(64)  # the tester is finished with this candidate
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        if done == b"done+info":
            _, status = os.waitpid(pid, 0)
            output = b""
            try:
                with open(os.path.join(tmp, ".output"), "rb") as fh:
                    output = fh.read(OUTPUT_KEEP)
            except OSError:
                pass
            sock.sendall(
                orjson.dumps({"status": status, "output": output.decode("utf-8", "replace")})
            )
        else:
            os.waitpid(pid, 0)
        _reap_all(uid)
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            os._exit(0)


def _kill_own_uid(uid: int) -> None:  # pragma: no cover - zygote only
    """Become ``uid`` for a moment (saved uid stays root) and SIGKILL all its processes."""
    os.setresuid(uid, uid, 0)
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.setresuid(0, 0, 0)


def _reap_all(uid: int | None) -> None:  # pragma: no cover - zygote only
    """Kill what the candidate left (by uid) and reap every child, orphans included.

    The zygote is a child subreaper, so descendants that left the candidate's
    session end up as its children. Killing by uid is repeated while any remain,
    which also catches a process forked while the previous kill was under way.
    """
    deadline = time.monotonic() + 5.0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children left
        if pid:
            continue
        if uid is not None:
            _kill_own_uid(uid)
        if time.monotonic() > deadline:
            return
        time.sleep(0.0005)


# ============================================================================ tester (worker)


class _Deadline(BaseException):
    """The program's wall-clock time is up (BaseException: test code cannot swallow it)."""


class _Died(BaseException):
    """The candidate process went away or spoke garbage."""


class _Tester:
    def __init__(self, call_w: int, result_r: int, deadline: float):
        self.call_w, self.deadline = call_w, deadline
        self.reader = _Reader(result_r)
        self.calls = 0

    def wait_ready(self) -> None:
        msg = self._reply()
        if msg[0] == "ready":
            return
        if msg[0] == "load_error":
            raise _LoadError(f"{msg[1]}: {msg[2]}")
        raise _Died(f"sandbox setup failed: {msg[1]}")

    def _reply(self) -> Any:
        try:
            msg = self.reader.recv(self.deadline)
        except TimeoutError:
            raise _Deadline from None
        except (ValueError, orjson.JSONDecodeError):
            raise _Died("the candidate sent a malformed message") from None
        if msg is None:
            raise _Died("the candidate process exited")
        if not isinstance(msg, list) or not msg:
            raise _Died("the candidate sent a malformed message")
        return msg

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        from llmeval.codec import decode, encode

        self.calls += 1
        try:
            _send(self.call_w, ["call", name, encode(list(args)), encode(kwargs)])
        except BrokenPipeError:
            raise _Died("the candidate process exited") from None
        msg = self._reply()
        if msg[0] == "ok" and len(msg) == 2:
            try:
                return decode(msg[1])
            except (ValueError, TypeError, KeyError, IndexError, OverflowError):
                raise _Died("the candidate sent a malformed value") from None
        if msg[0] == "exc" and len(msg) == 3:
            raise _exception(str(msg[1]), str(msg[2]))
        raise _Died("the candidate sent a malformed message")

    def proxy(self, name: str) -> Any:
        def candidate(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, args, kwargs)

        candidate.__name__ = name
        return candidate


class _LoadError(Exception):
    pass


def _exception(name: str, message: str) -> BaseException:
    """Re-raise a candidate's exception on the trusted side: same builtin type, else RuntimeError."""
    import builtins

    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        try:
            return cls(message)
        except Exception:  # noqa: BLE001
            pass
    return RuntimeError(f"{name}: {message}")


_COMPILED: dict[tuple[str, str], Any] = {}


def _compiled(source: str, name: str) -> Any:
    key = (source, name)
    code = _COMPILED.get(key)
    if code is None:
        if len(_COMPILED) > 4096:
            _COMPILED.clear()
        code = _COMPILED[key] = compile(source, name, "exec")
    return code


def _referenced_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _referenced_names(const)
    return names


def _failed_assert_line(tb: Any, test: str) -> str:
    import traceback

    frames = [f for f in traceback.extract_tb(tb) if f.filename == "<test>"]
    if frames and frames[-1].lineno:
        lines = test.splitlines()
        if 0 < frames[-1].lineno <= len(lines):
            return lines[frames[-1].lineno - 1].strip()[:300]
    return ""


def run_tests(program: Program, tester: _Tester) -> tuple[str, str | None]:
    """Run the problem's tests against the candidate proxy; (status, detail)."""
    import builtins

    try:
        tester.wait_ready()
    except _LoadError as exc:
        return FAIL, f"the code does not load: {exc}"
    ns: dict[str, Any] = {}
    try:
        if program.trusted:
            exec(_compiled(program.trusted, "<problem>"), ns)
        test_code = _compiled(program.test, "<test>")
    except Exception as exc:  # noqa: BLE001 - the dataset's own code: a harness error
        return ERROR, f"the problem's own code fails: {type(exc).__name__}: {exc}"
    try:
        if program.style == "humaneval":
            # As in the reference harness, the entry point's name means the candidate too
            # (HumanEval/33's test calls sort_third by name); the prompt's helpers stay its own.
            ns[program.entry_point] = tester.proxy(program.entry_point)
            exec(test_code, ns)
            check = ns.get("check")
            if not callable(check):
                return ERROR, "the test defines no check(candidate)"
            check(ns[program.entry_point])
        else:
            for name in _referenced_names(test_code):
                if name not in ns and not hasattr(builtins, name):
                    ns[name] = tester.proxy(name)
            ns[program.entry_point] = tester.proxy(program.entry_point)
            exec(test_code, ns)
    except AssertionError as exc:
        line = _failed_assert_line(exc.__traceback__, program.test)
        return FAIL, f"assertion failed: {line}" if line else "assertion failed"
    except Exception as exc:  # noqa: BLE001 - the candidate's exception, re-raised here
        return FAIL, f"{type(exc).__name__}: {exc}"[:500]
    return PASS, None


def serve(uid: int | None, limits: Limits) -> None:  # pragma: no cover - the worker process
    """Worker main loop: jobs on stdin, verdicts on stdout (framed orjson)."""
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    network = isolate_network()
    if uid is not None:
        network += "; " + expose_python()
    # Warm the zygote: what candidates commonly import is already loaded when they fork.
    import collections  # noqa: E401,F401

    import llmeval.codec  # noqa: F401

    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zpid = os.fork()
    if zpid == 0:
        parent_sock.close()
        os.close(0)
        _zygote(child_sock, uid, limits)
    child_sock.close()
    _send(1, {"ready": True, "network": network, "uid": uid})
    jobs = _Reader(0)
    while True:
        job = jobs.recv()
        if job is None:
            break
        verdict = _run_job(job, parent_sock, limits)
        _send(1, {"id": job["id"], **asdict(verdict)})
    parent_sock.close()
    os.waitpid(zpid, 0)


def _run_job(job: dict[str, Any], sock: socket.socket, limits: Limits) -> Verdict:
    start = time.monotonic()
    timeout = float(job.get("timeout") or limits.timeout)
    deadline = start + timeout
    program = Program(**job["program"])
    call_r, call_w = os.pipe()
    result_r, result_w = os.pipe()
    socket.send_fds(
        sock,
        [orjson.dumps({"code": program.code, "entry": program.entry_point})],
        [call_r, result_w],
    )
    os.close(call_r)
    os.close(result_w)
    tester = _Tester(call_w, result_r, deadline)
    status, detail = ERROR, None
    try:
        status, detail = run_tests(program, tester)
    except _Deadline:
        status, detail = TIMEOUT, f"no verdict within {timeout:g} s (wall clock)"
    except _Died as exc:
        status, detail = FAIL, str(exc)
    finally:
        os.close(call_w)
        os.close(result_r)
    if status == PASS:
        sock.send(b"done")  # nothing more to learn from the candidate
        return Verdict(status, detail, round(time.monotonic() - start, 4))
    sock.send(b"done+info")
    info = orjson.loads(sock.recv(1 << 16))
    status_word = info["status"]
    exit_desc = None
    if os.WIFSIGNALED(status_word):
        sig = os.WTERMSIG(status_word)
        exit_desc = (
            signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        )
        if status == FAIL and detail and "exited" in detail:
            if sig == signal.SIGXCPU:
                status, detail = TIMEOUT, f"CPU time limit ({limits.cpu_seconds} s)"
            elif sig == signal.SIGXFSZ:
                detail = f"output limit ({limits.output_bytes} bytes) exceeded"
            else:
                detail = f"the candidate process was killed by {exit_desc}"
    elif os.WIFEXITED(status_word):
        exit_desc = f"exit {os.WEXITSTATUS(status_word)}"
        if status == FAIL and detail == "the candidate process exited":
            detail = f"the candidate process exited ({exit_desc}) before the tests finished"
    return Verdict(
        status, detail, round(time.monotonic() - start, 4), info.get("output", ""), exit_desc
    )


# ============================================================================ pool


class SandboxPool:
    """Warm workers scoring programs in parallel; see the module docstring."""

    GRACE = 5.0  # seconds past a program's timeout before its worker is killed

    def __init__(self, workers: int, limits: Limits, log: Any = None):
        self.limits = limits
        self.root = os.geteuid() == 0
        self.log = log or (lambda m: None)
        self.locks: list[Any] = []
        if self.root:
            self.uids, self.locks = allocate_uids(workers)
            if len(self.uids) < workers:
                raise RuntimeError("no free sandbox uids (another llmeval holds them all)")
            for uid in self.uids:  # processes and temp dirs a crashed earlier run left behind
                kill_uid(uid)
                remove_candidate_dirs(uid)
        else:
            self.uids = [None] * workers  # type: ignore[list-item]
        self.workers: list[_Worker] = []
        for uid in self.uids:
            self.workers.append(_Worker(uid, limits))
        self.network = self.workers[0].network if self.workers else ""
        self.description = describe_isolation(limits, self.root, self.network)
        self.restarts = 0

    def map(self, programs: Iterable[tuple[Any, Program]]) -> Iterator[tuple[Any, Verdict]]:
        """Score ``(tag, program)`` pairs; yield ``(tag, verdict)`` as they finish (any order)."""
        todo = iter(programs)
        busy: dict[int, tuple[_Worker, Any, float]] = {}
        idle = list(self.workers)
        exhausted = False
        while True:
            while idle and not exhausted:
                item = next(todo, None)
                if item is None:
                    exhausted = True
                    break
                tag, program = item
                w = idle.pop()
                w.submit(program)
                busy[w.stdout] = (w, tag, time.monotonic() + self.limits.timeout + self.GRACE)
            if not busy:
                return
            now = time.monotonic()
            wait = max(0.0, min(d for _, _, d in busy.values()) - now)
            ready, _, _ = select.select(list(busy), [], [], wait)
            for fd in ready:
                w, tag, _ = busy.pop(fd)
                verdict = w.result()
                if verdict is None:  # the worker died: replace it
                    verdict = Verdict(ERROR, f"sandbox worker died ({w.exit_description()})")
                    w = self._replace(w)
                idle.append(w)
                yield tag, verdict
            now = time.monotonic()
            for fd in [fd for fd, (_, _, d) in busy.items() if d <= now]:
                w, tag, _ = busy.pop(fd)
                w = self._replace(w)
                idle.append(w)
                yield (
                    tag,
                    Verdict(
                        TIMEOUT,
                        f"killed after {self.limits.timeout + self.GRACE:g} s: "
                        "the sandbox worker did not answer",
                    ),
                )

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        self.restarts += 1
        fresh = _Worker(w.uid, self.limits)
        self.workers[self.workers.index(w)] = fresh
        return fresh

    def close(self) -> None:
        for w in self.workers:
            w.close()
        for fh in self.locks:
            fh.close()
        self.workers = []

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Worker:
    def __init__(self, uid: int | None, limits: Limits):
        import subprocess

        self.uid = uid
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmeval.sandbox",
                "--serve",
                str(uid if uid is not None else -1),
                orjson.dumps(asdict(limits)).decode(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    [
                        str(Path(__file__).resolve().parent.parent),
                        *filter(None, [os.environ.get("PYTHONPATH")]),
                    ]
                ),
            },
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        self.reader = _Reader(self.stdout)
        hello = self.reader.recv(time.monotonic() + 60)
        if not hello or not hello.get("ready"):
            raise RuntimeError("sandbox worker failed to start")
        self.network = hello["network"]
        self.next_id = 0

    def submit(self, program: Program) -> None:
        self.next_id += 1
        _send(self.stdin, {"id": self.next_id, "program": asdict(program)})

    def result(self) -> Verdict | None:
        try:
            msg = self.reader.recv()
        except (ValueError, OSError):
            return None
        if msg is None:
            return None
        msg.pop("id", None)
        return Verdict(**msg)

    def exit_description(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        return f"signal {-code}" if code < 0 else f"exit {code}"

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if self.uid is not None:
            kill_uid(self.uid)
        self.proc.wait()
        if self.uid is not None:
            remove_candidate_dirs(self.uid)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        self.kill()


def main(argv: list[str]) -> int:  # pragma: no cover - worker entry point
    if len(argv) == 3 and argv[0] == "--serve":
        uid = int(argv[1])
        serve(None if uid < 0 else uid, Limits(**orjson.loads(argv[2])))
        return 0
    print("usage: python -m llmeval.sandbox --serve UID LIMITS_JSON (internal)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
