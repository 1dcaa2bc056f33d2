"""The untrusted side: a process forked by the zygote for one program.

It finishes its own containment (descriptors, session, rlimits, identity,
capabilities, its part of the seccomp filter and, in the Landlock fallback, its
own Landlock layer), then loads the program and answers the tester's calls with
plain data (:mod:`llmeval.codec`). Everything here runs after ``fork`` inside
the sandbox's filesystem view, so it uses only modules the zygote preloaded.
Nothing it sends decides a verdict: the tester judges what comes back.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any

from llmeval.codec import Unencodable, decode, encode
from llmeval.sandbox import kernel, wire

CALL_FD, RESULT_FD = 3, 4
MESSAGE_KEEP = 1000  # characters of an exception message sent back


class Containment:
    """How the zygote contains each candidate (prepared once, applied after every fork).

    A plain class: the zygote imports as little as it can (every module it holds makes
    each fork dearer)."""

    def __init__(
        self,
        *,
        memory_mb: int,
        output_bytes: int,
        open_files: int,
        processes: int = 0,  # RLIMIT_NPROC (counted per user namespace); 0: not set
        uid: int | None = None,  # switch to this uid (root); None: drop capabilities only
        filter: Any = None,  # a kernel.Filter added on top of the zygote's
        landlock_abi: int = 0,  # > 0: add a Landlock layer of its own (fallback mode)
        reset_oom_score: bool = False,
        devnull: int = -1,
    ):
        self.memory_mb, self.output_bytes, self.open_files = memory_mb, output_bytes, open_files
        self.processes, self.uid, self.filter = processes, uid, filter
        self.landlock_abi, self.reset_oom_score, self.devnull = landlock_abi, reset_oom_score, devnull
        self.extra_env: dict[str, str] = {}
        self.parent = 0  # the zygote's pid, set before each fork


RANDOM_SEED = 0


class SeedRandomOnImport:
    """A meta path finder: ``random``, when a candidate first imports it, comes seeded with
    RANDOM_SEED, so a program's random draws repeat from run to run.

    Not preloaded in the zygote: ``random`` registers a hook that reseeds it from the OS
    in every fork (and a candidate would then seed it again), which every candidate would
    pay for; few programs import it. Installed once in the zygote, inherited."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "random":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        load = getattr(loader, "exec_module", None)
        if load is None:
            return spec

        def exec_module(module: Any) -> None:
            load(module)
            module.seed(RANDOM_SEED)

        loader.exec_module = exec_module  # type: ignore[method-assign,union-attr]  # this import's own
        return spec


def max_fd() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return hard if 0 < hard < 1 << 20 else 1 << 20


def start(
    call_r: int, result_w: int, output: int, workdir: str, how: Containment
) -> None:  # pragma: no cover - runs in the forked child; never returns
    """Contain this process, then wait for a program and serve it; exits when the tester
    is done. Forked ahead of need: the program, and its CPU time limit, come later."""
    try:
        # Dies with its zygote, whatever kills it (a zygote killed by the worker never gets
        # to its clean-up): then nothing of it runs while the worker removes its files.
        kernel.prctl(kernel.PR_SET_PDEATHSIG, 9)
        if os.getppid() != how.parent:  # the zygote died before that: go too
            os._exit(70)
        # Park the channel high (fd numbers may collide with 0-4; the zygote's own are few
        # and low, so 100-102 are free), set up 0-4, close the rest. (os.dup2, not fcntl's
        # F_DUPFD: one module less in every fork of the zygote.)
        call_r, result_w, output = (os.dup2(fd, 100 + i) for i, fd in enumerate((call_r, result_w, output)))
        os.dup2(how.devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.dup2(call_r, CALL_FD)
        os.dup2(result_w, RESULT_FD)
        os.closerange(RESULT_FD + 1, max_fd())
        os.setpgid(0, 0)  # its own group (setsid would also make a scheduler autogroup: slow)
        if how.reset_oom_score:  # the zygote protects itself; the candidate is the OOM victim
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")
            os.close(fd)
        if workdir:  # else the zygote's directory, its /tmp
            os.chdir(workdir)
        if how.extra_env:
            os.environ.update(how.extra_env)
        setrl = resource.setrlimit
        mem = how.memory_mb << 20
        setrl(resource.RLIMIT_AS, (mem, mem))
        setrl(resource.RLIMIT_FSIZE, (how.output_bytes, how.output_bytes))
        setrl(resource.RLIMIT_NOFILE, (how.open_files, how.open_files))
        setrl(resource.RLIMIT_CORE, (0, 0))
        if how.processes:
            setrl(resource.RLIMIT_NPROC, (how.processes, how.processes))
        if how.uid is not None:  # leaving uid 0 drops every capability
            os.setgroups([])
            os.setresgid(how.uid, how.uid, how.uid)
            os.setresuid(how.uid, how.uid, how.uid)
        else:
            kernel.drop_capabilities()
        # Its own /proc/self as anywhere else (the zygote is not dumpable, and a uid change
        # clears the flag): only itself and its children can look at it.
        kernel.prctl(kernel.PR_SET_DUMPABLE, 1)
        kernel.set_name("llmeval-cand")  # for ps and top
        if how.landlock_abi:
            layer = kernel.Landlock(how.landlock_abi)
            layer.allow("/", kernel.FS_EXECUTE | kernel.FS_READ_FILE | kernel.FS_READ_DIR)
            layer.allow(workdir, layer.fs_all)
            layer.allow("/dev/null", kernel.FS_READ_FILE | kernel.FS_WRITE_FILE)
            layer.restrict_self()
        if how.filter is not None:
            how.filter.install()
    except BaseException as exc:  # noqa: BLE001 - reported to the tester, then gone
        try:
            wire.send(
                result_w, ["setup_error", f"{type(exc).__name__}: {exc}"[:MESSAGE_KEEP]], wire.json_dumps
            )
        finally:
            os._exit(70)
    try:
        # Contained, before the program is even read: what the program writes later cannot
        # pass for a failure of the sandbox (the tester takes "setup_error" only before this).
        wire.send_all(RESULT_FD, [["contained"]], wire.json_dumps)
        serve()
    finally:  # a tester that stopped listening (EPIPE) is the usual way out
        os._exit(0)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)[:MESSAGE_KEEP]
    except BaseException:  # noqa: BLE001 - a __str__ that raises
        return "<unprintable>"


def _flush() -> None:
    for stream in (sys.__stdout__, sys.__stderr__):
        try:  # what the program printed reaches the output before the tester looks
            stream.flush()  # type: ignore[union-attr]
        except BaseException:  # noqa: BLE001
            pass


def _reply(msg: list[Any], greeting: list[Any] | None = None) -> None:
    """Send ``msg`` (after ``greeting``, in the same write, when there is one)."""
    _flush()
    first = [greeting] if greeting else []
    try:
        wire.send_all(RESULT_FD, [*first, msg], wire.json_dumps)
    except (Unencodable, TypeError, ValueError, OverflowError, RecursionError) as exc:
        msg = ["exc", "TypeError", f"unencodable result: {_message(exc)}"]
        wire.send_all(RESULT_FD, [*first, msg], wire.json_dumps)


def serve() -> None:  # pragma: no cover - the candidate's loop
    """Load the program sent first, then answer calls (one reply each, in order)."""
    calls = wire.Reader(CALL_FD, loads=json.loads)
    try:
        msg = calls.recv()
    except BaseException:  # noqa: BLE001
        return
    if not msg or msg[0] != "load":
        return
    _, code, entry, cpu = msg
    del msg
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # before any of its code runs
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(code, "<candidate>", "exec", dont_inherit=True, optimize=0), namespace)
        if not callable(namespace.get(entry)):
            raise NameError(f"the code does not define {entry}()")
    except BaseException as exc:  # noqa: BLE001 - any failure to load is the candidate's
        _reply(["load_error", type(exc).__name__, _message(exc)])
        return
    del code
    # "ready" goes out with the first answer when a call is already waiting: one wake-up of
    # the tester instead of two (a first call that never returns is a timeout either way).
    greeting: list[Any] | None = ["ready"]
    if not calls.pending():
        _reply(["ready"])
        greeting = None
    objects: dict[int, Any] = {}

    def handle(obj: Any) -> int:
        objects[id(obj)] = obj
        return id(obj)

    def resolve(h: int) -> Any:
        if h not in objects:
            raise ValueError("unknown handle")
        return objects[h]

    def answer(name: str, args: Any, kwargs: Any) -> list[Any]:
        try:
            fn = namespace.get(name)
            if not callable(fn):
                raise NameError(f"name {name!r} is not defined")
            value = fn(*decode(args, resolve), **decode(kwargs, resolve))
            return ["ok", encode(value, handle)]
        except Unencodable as exc:
            return ["exc", "TypeError", _message(exc)]
        except BaseException as exc:  # noqa: BLE001 - reported, judged by the tester
            return ["exc", type(exc).__name__, _message(exc)]

    while True:
        try:
            msg = calls.recv()
        except BaseException:  # noqa: BLE001
            return
        if msg is None:
            return
        if msg[0] == "call":
            calls_now = [(msg[1], msg[2], msg[3])]
        elif msg[0] == "batch":  # calls predicted from the test: answered in order, at once
            calls_now = msg[1]
        else:
            continue
        for name, args, kwargs in calls_now:
            _reply(answer(name, args, kwargs), greeting)
            greeting = None


REHEARSAL = """
from typing import Dict, List, Optional, Tuple
import math


def f(xs: List[int], k: int = 2, name: Optional[str] = None) -> Tuple[int, float]:
    total = sum(x * k for x in xs if x % 2 == 0)
    return total, math.sqrt(abs(total)) / (len(xs) or 1)
"""


def rehearse(rounds: int = 10) -> None:  # pragma: no cover - runs in the zygote
    """Run the candidate's code paths in the zygote before it forks any: Python specializes
    bytecode and fills caches on first use, writes that would otherwise dirty (copy) the
    same pages in every forked candidate."""
    r, w = os.pipe()
    try:
        for _ in range(rounds):
            namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(compile(REHEARSAL, "<candidate>", "exec", dont_inherit=True, optimize=0), namespace)
            for args in ([[1, 2, 3], 3], [[], 1]):
                value = namespace["f"](*decode(encode(args)), **decode(encode({"name": "x"})))
                wire.send_all(w, [["ok", encode(value)], ["exc", "E", _message(ValueError())]], wire.json_dumps)
                reader = wire.Reader(r, loads=json.loads)
                reader.recv()
                reader.pending()
                reader.recv()
            _flush()
    finally:
        os.close(r)
        os.close(w)
