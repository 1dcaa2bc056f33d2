"""The zygote: a process that has never seen a test, inside the box, forking one candidate
per program.

Namespace mode (root, or any user where unprivileged user namespaces exist)::

    worker W (host) ── fork ──> anchor A: joins the worker's cgroup, unshares a user
                                 namespace (W writes its uid map), then mount, PID, IPC,
                                 network and UTS namespaces; forks
                                   └─> zygote Z: PID 1 of the new PID namespace; pivots
                                       into a tmpfs root holding only the allowlisted trees
                                       (read-only), its own /proc, a few devices; installs
                                       the seccomp filter; then per program:
                                         mount a fresh tmpfs on /tmp, fork candidate C,
                                         wait for W's "done", kill everything else in the
                                         PID namespace (kill(-1) from its init), reap,
                                         unmount /tmp.

The chain dies with W: A and Z have ``PR_SET_PDEATHSIG``, and the death of Z (init)
kills every process of the namespace, so nothing survives eval-score's SIGKILL.
Root's candidates run as a reserved unprivileged host uid (mapped to uid 1000 inside);
an ordinary user's run as that user, mapped to uid 1000 and without capabilities, and
kept apart from the user's other processes by the PID namespace and seccomp.

Landlock mode (no user namespaces, not root): Z is a child subreaper confined by a
Landlock layer (read beneath the allowlisted trees, write only in its scratch
directory); each candidate adds a layer of its own (its directory; no signals or
abstract sockets outside it, on kernels that scope them) and a filter that forbids
new processes and sockets, so RLIMIT_AS bounds it as a whole.

Output is captured in a memfd opened before the candidate exists; nothing on the
trusted side ever opens a path the candidate could have made.
"""

from __future__ import annotations

import _socket  # not socket: its selectors, select and array would be in every fork
import contextlib
import gc
import os
import signal
import stat
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

from llmeval.sandbox import candidate, kernel
from llmeval.sandbox.wire import json_dumps

OUTPUT_KEEP = 2048  # bytes of a candidate's output kept for the verdict
SANDBOX_UID = 1000  # the candidate's uid inside its user namespace
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# What candidates commonly import, loaded once in the zygote. Every module here makes each
# fork dearer (more pages to map and copy), so only what HumanEval- and MBPP-style
# solutions import often; the rest is imported by the candidates that use it.
PRELOAD = (
    "typing", "math", "copy", "string", "collections", "re",
    "itertools", "functools", "operator",
)  # fmt: skip
OLD = "/oldroot"
WATCH_EVERY = 0.02  # seconds between two looks at a candidate's memory (no cgroup)

# How a worker starts its zygote: a fresh interpreter (a fork of the worker would carry
# every module the worker imported, and each fork per program would copy their pages),
# told its configuration over the socket it inherits.
BOOT = (
    "import sys, _socket, marshal; del sys.path[0]; "
    "s = _socket.socket(fileno=int(sys.argv[1])); s.send(b'boot'); "
    "c = marshal.loads(s.recv(1 << 24)); sys.path[:0] = c['import_path']; "
    "from llmeval.sandbox.zygote import boot; boot(s, c)"
)


def exec_zygote(sock: socket.socket, python: str) -> None:  # pragma: no cover - never returns
    """Replace this (forked) process with a fresh interpreter running :func:`boot`."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # never hold the worker's pipes to eval-score
        os.dup2(devnull, fd)
    keep = sock.fileno()
    os.set_inheritable(keep, True)
    os.closerange(3, keep)
    os.closerange(keep + 1, candidate.max_fd())
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    os.execve(python, [python, "-s", "-S", "-c", BOOT, str(keep)], env)


def boot(sock: socket.socket, cfg: dict[str, Any]) -> None:  # pragma: no cover - the zygote
    """The zygote's entry point after exec."""
    try:
        # The site directories are on sys.path (``import_path``); their .pth files are not
        # run: their paths outside those directories are not in the view, and their import
        # lines install hooks (editable installs' finders, setuptools' distutils shim) that
        # point outside it too, and each costs start-up time and zygote memory.
        for name in PRELOAD:  # what candidates commonly import is loaded once, here
            with contextlib.suppress(ImportError):
                __import__(name)
        sys.meta_path.insert(0, candidate.SeedRandomOnImport())  # not preloaded: see there
        candidate.rehearse()
    except Exception as exc:  # noqa: BLE001
        sock.send(json_dumps({"ok": False, "error": f"sandbox start: {exc}"}))
        os._exit(1)
    if cfg["mode"] == "namespaces":
        anchor(sock, cfg)
    else:
        _landlock_zygote(sock, cfg)
    os._exit(0)


# ============================================================================ namespace mode


def anchor(sock: socket.socket, cfg: dict[str, Any]) -> None:  # pragma: no cover
    """Enter the namespaces, fork the zygote as PID 1 of the new PID namespace, wait for
    it. Started (fresh, by exec) before the user namespace exists: an exec inside it would
    take an unprivileged uid's capabilities away. Dies with the worker; the zygote with it."""
    try:
        kernel.set_name("llmeval-anchor")
        if os.getppid() != cfg["parent"]:
            os._exit(1)
        for procs in cfg["cgroup_procs"]:
            with open(procs, "w") as fh:
                fh.write("0")
        if cfg["oom_protect"]:  # best effort (needs CAP_SYS_RESOURCE); candidates ask for 1000
            with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("-1000")
        if cfg["userns"]:
            kernel.unshare(kernel.CLONE_NEWUSER)
            sock.send(json_dumps({"map": True, "pid": os.getpid()}))
            if sock.recv(64) != b"mapped":
                os._exit(1)
        kernel.unshare(
            kernel.CLONE_NEWNS
            | kernel.CLONE_NEWPID
            | kernel.CLONE_NEWIPC
            | kernel.CLONE_NEWNET
            | kernel.CLONE_NEWUTS
        )
    except OSError as exc:
        _setup_failed(sock, "namespaces", exc)
    pid = os.fork()
    if pid == 0:
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        _init(sock, cfg)
        os._exit(0)
    sock.close()
    os.closerange(3, candidate.max_fd())
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _init(sock: socket.socket, cfg: dict[str, Any]) -> None:  # pragma: no cover - PID 1
    root = cfg["host_uid"] is not None
    watch = not cfg["cgroup_procs"]  # without a memory cgroup, sum the processes ourselves
    try:
        kernel.set_name("llmeval-zygote")
        notes = _build_root(cfg)
        kernel.sethostname("sandbox")
        devnull = os.open("/dev/null", os.O_RDWR)
        _become_zygote(sock, devnull, cfg)
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        kernel.clear_bounding_set()
        own = kernel.build_filter(kernel.DENIED, no_namespaces=True)
        # Each candidate adds: sockets of the Unix family only (with no packet sent, the
        # network namespace's counters, which outlive it, stay as they were); limits and
        # scheduling of itself only (an ordinary user's zygote has the candidate's uid); no
        # memfd (its pages are in no process: a polled memory sum would not see them); no
        # inotify (instances are counted per user, across namespaces). Where memory is
        # polled, no socket at all and no pipe resized: their buffers belong to no process.
        per_candidate = kernel.build_filter(
            ["mount", "umount2", "memfd_create", "memfd_secret", "inotify_init", "inotify_init1"],
            unix_sockets_only=True,
            no_sockets=watch,
            self_only=True,
            deny_args=[("fcntl", 1, F_SETPIPE_SZ)] if watch else [],
        )
        own.install()
    except (OSError, ValueError) as exc:
        _setup_failed(sock, "sandbox setup", exc)
    how = _containment(
        cfg,
        # Counted per uid of this user namespace: the zygote and the anchor share the
        # candidate's uid unless root mapped them apart.
        processes=cfg["processes"] + (0 if root or not cfg["userns"] else 2),
        uid=SANDBOX_UID if (root and cfg["userns"]) else cfg["host_uid"],
        filter=per_candidate,
        reset_oom_score=cfg["oom_protect"],
        devnull=devnull,
    )
    # Each candidate gets the same pids (2, then 3, ... for its children): the namespace's
    # pid counter, which outlives a candidate, carries nothing to the next one.
    try:
        last_pid = os.open("/proc/sys/kernel/ns_last_pid", os.O_WRONLY)
        os.pwrite(last_pid, b"1", 0)
    except OSError as exc:  # a kernel without checkpoint/restore
        last_pid = -1
        notes.append(f"pids not reset between candidates ({exc.strerror})")
    cand_uid = SANDBOX_UID if cfg["userns"] else cfg["host_uid"]
    tmp_opts = f"size={cfg['tmp_mb']}m,nr_inodes=4096,mode=0700,uid={cand_uid},gid={cand_uid}"
    sock.send(json_dumps({"ok": True, "notes": notes}))

    def prepare() -> tuple[int, int, tuple[int, int]]:
        # A fresh tmpfs for every candidate, whatever the last one did: even a file it never
        # named (O_TMPFILE) moves the inode numbers the next one would see.
        kernel.mount("tmpfs", "/tmp", "tmpfs", TMP_FLAGS, tmp_opts)
        os.chdir("/tmp")  # inherited: cheaper here than in the child
        if last_pid >= 0:  # only this process is left in the namespace: pid 2 next
            os.pwrite(last_pid, b"1", 0)
        try:
            return _fork_candidate(sock, "", how)
        finally:
            os.chdir("/")

    def cleanup(pid: int) -> int:
        status = _kill_all(pid)
        kernel.umount("/tmp")
        return status

    _serve(sock, prepare, cleanup, (cfg["memory_mb"] << 20) if watch else 0)


def _serve(sock: socket.socket, prepare: Any, cleanup: Any, watch_limit: int) -> None:
    """The zygote's loop. Each candidate is forked ahead of need (its fork and set-up
    overlap with the worker reporting the previous verdict), its channel handed to the
    worker; then the worker's word ("done", or "info" for how it ended), the clean-up."""
    gc.collect()
    gc.freeze()
    while True:
        try:
            pid, output, ends = prepare()
        except OSError as exc:
            with contextlib.suppress(OSError):
                sock.send(b"fail:" + str(exc).encode()[:1000])
            os._exit(1)
        try:  # its output too: the worker reads it (no round trip for how a program failed)
            fds = struct.pack("3i", *ends, output)
            sock.sendmsg([b"next"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        except OSError:
            cleanup(pid)
            os._exit(0)
        for fd in ends:
            os.close(fd)
        over = _wait_done(sock, watch_limit) if watch_limit else False
        try:
            done = sock.recv(16) if over is not None else b""
        except OSError:
            done = b""
        status = cleanup(pid)
        if done == b"info":
            _send_info(sock, status, output, memory=bool(over))
        os.close(output)
        if done not in (b"done", b"info"):
            os._exit(0)


TMP_FLAGS = kernel.MS_NOSUID | kernel.MS_NODEV | 1024  # MS_NOATIME: reading leaves no trace


def _fork_candidate(
    sock: socket.socket, workdir: str, how: candidate.Containment, in_child: Any = None
) -> tuple[int, int, tuple[int, int]]:
    """Fork a candidate wired to two new pipes and a new output memfd; (pid, output fd,
    the worker's pipe ends)."""
    call_r, call_w = os.pipe()
    result_r, result_w = os.pipe()
    output = os.memfd_create("output", 0)
    how.parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the candidate
        sock.close()
        gc.enable()
        if in_child is not None:
            in_child(how)
        candidate.start(call_r, result_w, output, workdir, how)
    os.close(call_r)
    os.close(result_w)
    return pid, output, (call_w, result_r)


def _setup_failed(sock: socket.socket, stage: str, exc: Exception) -> None:
    """Tell the worker what did not bind, and go."""
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    sock.send(json_dumps({"ok": False, "error": f"{stage}: {exc.args[-1]}{where}"}))
    os._exit(1)


def _containment(cfg: dict[str, Any], **how: Any) -> candidate.Containment:
    return candidate.Containment(
        memory_mb=cfg["memory_mb"],
        output_bytes=cfg["output_bytes"],
        open_files=cfg["open_files"],
        **how,
    )


def _wait_done(sock: socket.socket, limit: int) -> bool | None:
    """Wait for the tester's word, looking every WATCH_EVERY seconds at the memory of all
    the candidate's processes together; kill them all when it passes ``limit``. True when
    that happened (the word is still to read); None when the socket failed."""
    import select

    over = False
    while True:
        try:
            ready = select.select([sock], [], [], WATCH_EVERY)[0]
        except OSError:
            return None
        if ready:
            return over
        if not over and _memory_in_use() > limit:
            over = True
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)


F_SETPIPE_SZ = 1031


def _memory_in_use() -> int:
    """The proportional set size (Pss) of every process of this PID namespace but init,
    summed: each page counted once over the processes sharing it, shared memory
    (MAP_SHARED) included, whoever maps it."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == "1":
            continue
        try:
            with open(f"/proc/{name}/smaps_rollup", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) << 10
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def _kill_all(pid: int | None) -> int:
    """As init of the PID namespace: SIGKILL every other process in it, reap them all;
    the wait status of ``pid``. Killing before each wait also catches a process forked
    while the previous kill was under way."""
    status = 0
    while True:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        try:
            p, st = os.waitpid(-1, 0)
        except ChildProcessError:
            return status
        except InterruptedError:
            continue
        if p == pid:
            status = st


def _send_info(sock: socket.socket, status: int, output: int, memory: bool = False) -> None:
    try:
        head = os.pread(output, OUTPUT_KEEP, 0)
        size = os.fstat(output).st_size
    except OSError:
        head, size = b"", 0
    sock.send(
        json_dumps(
            {
                "status": status,
                "output": head.decode("utf-8", "replace"),
                "output_size": size,
                "memory": memory,
            }
        )
    )


def _mountpoint(path: str, directory: bool) -> None:
    """Create ``path`` (and its parents) in the sandbox's own tmpfs as a mount point."""
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    if directory:
        os.makedirs(path, exist_ok=True)
    elif not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _mounts_under(prefixes: list[str]) -> list[str]:
    import re

    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
                points.append(point)
    return points


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _build_root(cfg: dict[str, Any]) -> list[str]:  # pragma: no cover - runs in the zygote
    """pivot_root into a fresh tmpfs holding only the view; the old root is detached.
    Returns notes on what could not be set up (said on stderr)."""
    exposed, hidden = cfg["exposed"], cfg["hidden"]
    notes = []
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    kernel.mount("tmpfs", "/tmp", "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=0755,size=8m")
    os.chdir("/tmp")
    os.mkdir("oldroot")
    kernel.pivot_root(".", "oldroot")
    os.chdir("/")
    for path in exposed:
        src = OLD + path
        _mountpoint(path, os.path.isdir(src))
        kernel.mount(src, path, None, kernel.MS_BIND | kernel.MS_REC)
    for link, target in sorted(cfg["links"].items()):
        if not _inside(link, exposed) and not os.path.lexists(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(target, link)
    empty = "/.empty"
    os.close(os.open(empty, os.O_CREAT | os.O_WRONLY, 0o444))
    for path in hidden:
        if os.path.isdir(path) and not os.path.islink(path):
            kernel.mount("tmpfs", path, "tmpfs", kernel.MS_RDONLY, "size=4k,nr_inodes=1,mode=0555")
        elif os.path.lexists(path):
            kernel.mount(empty, path, None, kernel.MS_BIND)
    _mountpoint("/proc", True)
    try:  # refused where the host's /proc is partly covered (some containers)
        # hidepid=2: a candidate sees only processes it may trace, its own; not the zygote,
        # whose counters (children's CPU time and faults) add up over the candidates it reaped.
        kernel.mount(
            "proc", "/proc", "proc", kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC, "hidepid=2"
        )
    except OSError as exc:
        notes.append(f"no /proc for candidates ({exc.args[-1]})")
    for dev in DEVICES:
        if os.path.exists(OLD + dev):
            _mountpoint(dev, False)
            kernel.mount(OLD + dev, dev, None, kernel.MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("shm", "/tmp"),
    ):
        os.symlink(target, f"/dev/{name}")
    _mountpoint("/tmp", True)
    for path, text in cfg["files"].items():
        if not _inside(path, exposed):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text)
    kernel.umount(OLD)
    os.rmdir(OLD)
    # Read-only everywhere but /tmp (each candidate's own tmpfs) and the devices.
    for point in _mounts_under([*exposed, *hidden]):
        kernel.remount_readonly(point)
    kernel.mount(
        None, "/", None, kernel.MS_REMOUNT | kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV
    )
    return notes


def _become_zygote(sock: socket.socket, devnull: int, cfg: dict[str, Any]) -> None:
    """What every candidate inherits, done once: descriptors, environment, signals,
    streams, a module path without the worker's directories."""
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    low, high = sorted((sock.fileno(), devnull))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, candidate.max_fd())
    os.environ.clear()
    os.environ.update(
        PATH="/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8", HOME="/tmp", TMPDIR="/tmp",
        USER="sandbox", LOGNAME="sandbox",
    )  # fmt: skip
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)  # no handler: as PID 1, candidates cannot reach it
    # sys.stdin/stdout/stderr already sit on fds 0-2 (/dev/null since exec); each candidate
    # points 1 and 2 at its output, so its prints land there (stdout buffered, as usual).
    exposed = set(cfg["python_paths"])
    sys.path[:] = [p for p in sys.path if p in exposed]  # not llmeval's checkout
    sys.path_importer_cache.clear()
    kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
    gc.collect()
    gc.disable()


# ============================================================================ landlock mode


def split_around(root: str, hidden: list[str]) -> tuple[list[str], list[str]]:
    """``root``'s subtree as (subtrees to read, directories to list only) that avoid every
    hidden path: Landlock can only add rights, so a hidden directory is left out by granting
    its siblings. Listing a directory on the way (names, not contents) stays possible, as
    imports need it."""
    inside = [h for h in hidden if _inside(h, [root])]
    if not inside:
        return [root], []
    if root in inside or not os.path.isdir(root) or os.path.islink(root):
        return [], []
    read, listed = [], [root]
    try:
        names = os.listdir(root)
    except OSError:
        return [], []
    for name in names:
        r, lst = split_around(os.path.join(root, name), inside)
        read += r
        listed += lst
    return read, listed


def _landlock_zygote(sock: socket.socket, cfg: dict[str, Any]) -> None:  # pragma: no cover
    """The fallback: no namespaces; Landlock, seccomp and rlimits, one process per candidate."""
    scratch = cfg["scratch"]
    # RLIMIT_NPROC counts every task of the user: the user's tasks now, and room for the
    # candidate's threads (it may not fork), so that a candidate cannot run the host out of
    # pids with threads (taken before Landlock hides the other processes).
    threads_cap = _user_tasks() + cfg["processes"] + NPROC_MARGIN
    try:
        kernel.set_name("llmeval-zygote")
        kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)  # before Landlock and seccomp, unprivileged
        devnull = os.open("/dev/null", os.O_RDWR)
        abi = kernel.landlock_abi()
        if abi:
            layer = kernel.Landlock(abi, scope=False)
            read = kernel.FS_EXECUTE | kernel.FS_READ_FILE | kernel.FS_READ_DIR
            for root in cfg["exposed"]:
                subtrees, listed = split_around(root, cfg["hidden"])
                for path in subtrees:
                    layer.allow(path, read)
                for path in listed:
                    layer.allow(path, kernel.FS_READ_DIR)
            for dev in DEVICES:
                if os.path.exists(dev):
                    layer.allow(dev, kernel.FS_READ_FILE | kernel.FS_WRITE_FILE)
            layer.allow(scratch, layer.fs_all)
            # Its own children list, to kill orphans where seccomp cannot forbid them (only
            # that file: the rest of its /proc entry lists the host's sockets, its mounts...).
            layer.allow(f"/proc/{os.getpid()}/task/{os.getpid()}/children", kernel.FS_READ_FILE)
            layer.restrict_self()
        _become_zygote(sock, devnull, cfg)
        os.environ.update(HOME=scratch, TMPDIR=scratch)
        seccomp = True
        try:
            own = kernel.build_filter([*kernel.DENIED, "mount", "umount2"], no_namespaces=True)
            own.install()
        except OSError:
            seccomp = False
    except (OSError, ValueError) as exc:
        _setup_failed(sock, "sandbox setup", exc)
    how = _containment(
        cfg,
        landlock_abi=abi,
        devnull=devnull,
        processes=threads_cap,
    )
    sock.send(json_dumps({"ok": True, "landlock": abi, "seccomp": seccomp, "notes": []}))
    count = 0
    workdir = ""

    def prepare() -> tuple[int, int, tuple[int, int]]:
        nonlocal count, workdir
        count += 1
        workdir = os.path.join(scratch, f"c{count}")
        os.mkdir(workdir, 0o700)
        return _fork_candidate(sock, workdir, how, child_filter if seccomp else None)

    def child_filter(how: candidate.Containment) -> None:
        how.extra_env = {"HOME": workdir, "TMPDIR": workdir}
        how.filter = kernel.build_filter(
            [*kernel.METADATA_CALLS, "memfd_create", "memfd_secret", "inotify_init", "inotify_init1"],
            no_processes=True,
            no_sockets=True,
            self_only=True,
            signal_only=os.getpid(),
        )

    janitor = _janitor(sock, devnull)

    def cleanup(pid: int) -> int:
        status = _kill_children(pid, janitor[0])
        trash = os.path.join(scratch, f"trash{count}")
        try:  # whatever it left (a tree of any size) goes away later, off the next one's path
            os.rename(workdir, trash)
            os.write(janitor[1], trash.encode() + b"\n")
        except OSError:
            remove_tree(workdir)
        return status

    _serve(sock, prepare, cleanup, 0)


NPROC_MARGIN = 256  # tasks the user may start elsewhere while the fallback runs


def _user_tasks() -> int:
    """Tasks (threads included) whose real uid is this process's: what RLIMIT_NPROC counts."""
    uid, count = str(os.getuid()), 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [uid]:
            count += int(fields.get("Threads", "1"))
    return count


def _janitor(sock: socket.socket, devnull: int) -> tuple[int, int]:  # pragma: no cover
    """A child that deletes the directories it is told of, one per line; (pid, pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        kernel.set_name("llmeval-janitor")
        os.close(w)
        sock.close()
        with os.fdopen(r, "rb") as lines:
            for line in lines:
                remove_tree(line.rstrip(b"\n").decode())
        os._exit(0)
    os.close(r)
    return pid, w


def _kill_children(pid: int, keep: int = 0) -> int:
    """Kill the candidate (its process group too) and reap every child but ``keep``,
    orphans included (the zygote is their subreaper); the candidate's wait status."""
    for target in (-pid, pid):
        with contextlib.suppress(OSError):
            os.kill(target, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 0
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # only where seccomp could not forbid new processes
        try:
            if os.waitpid(-1, os.WNOHANG)[0]:
                continue
        except ChildProcessError:
            break
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as fh:
                children = [int(c) for c in fh.read().split()]
        except OSError:
            children = []
        if not [c for c in children if c != keep]:
            break
        for child in children:
            if child != keep:
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGKILL)
        time.sleep(0.001)
    return status


def remove_tree(path: str) -> bool:
    """Delete ``path`` and everything in it, never following a symlink, holding one
    directory open at a time (a tree of any depth), never raising; True when it is gone.

    For the fallback's scratch directories, which a candidate filled: it is dead when this
    runs, so nothing moves underneath; each step works from an open directory, not a path."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            os.chmod(path, 0o700)  # its owner may have locked it
    try:
        fd = os.open(path, flags)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return not os.path.lexists(path)
    names: list[str] = []  # from ``path`` down to the directory open in fd
    # (device, inode) of each directory from ``path`` down: a directory moved while this
    # runs (a candidate still alive) must not lead ".." above ``path``.
    ids: list[tuple[int, int]] = []
    stuck: set[tuple[int, int]] = set()  # directories that could not be emptied: left once
    try:
        top = os.fstat(fd)
        ids.append((top.st_dev, top.st_ino))
        while True:
            try:
                entries = os.listdir(fd)
            except OSError:
                entries = []
            descended = False
            for name in entries:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=fd)
                    continue
                if (st.st_dev, st.st_ino) in stuck:
                    continue
                if st.st_mode & 0o700 != 0o700:  # a candidate may have locked itself out
                    with contextlib.suppress(OSError):  # (a directory, not a link: lstat said)
                        os.chmod(name, 0o700, dir_fd=fd)
                try:
                    child = os.open(name, flags, dir_fd=fd)
                except OSError:
                    stuck.add((st.st_dev, st.st_ino))
                    continue
                opened = os.fstat(child)
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):  # swapped meanwhile
                    os.close(child)
                    stuck.add((st.st_dev, st.st_ino))
                    continue
                os.close(fd)
                fd, descended = child, True
                names.append(name)
                ids.append((st.st_dev, st.st_ino))
                break
            if descended:
                continue
            if not names:
                break
            done = ids.pop()  # the directory open in fd (checked when it was entered)
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            up = os.fstat(fd)
            if (up.st_dev, up.st_ino) != ids[-1]:  # moved: ".." is no longer where we came from
                return False
            name = names.pop()
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                stuck.add(done)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)
    return not os.path.lexists(path)
