"""Host resources a sandbox worker holds: a memory (and pids) cgroup, a sandbox uid.

* **cgroup**: one per worker, holding the zygote and every candidate it forks,
  so memory binds for all of a candidate's processes together. cgroup v2 is
  used where this process may create a child cgroup with the memory controller
  enabled; else cgroup v1's ``memory`` and ``pids`` hierarchies where writable
  (root); else none, and the caller says so.
* **uid** (root only): an unprivileged host uid per worker for its candidates,
  reserved with ``flock`` on a file in a fixed root-owned directory
  (``/run/llmeval-sandbox``), never under ``$TMPDIR``: every run on the host,
  whatever its environment, sees the same locks. The kernel drops a lock when its
  holder dies, so a dead run's uids are free again, and nothing is ever killed
  by uid (candidates are killed through their PID namespace), so a uid reused
  after a crash cannot hurt anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path

# Host uids for the candidates of root runs: [UID_BASE, UID_BASE + UID_SPAN). Anything
# running as such a uid may signal a candidate, so the range is one nothing else uses: not
# llmeval's old 61000-61999 (whose runs killed by uid), not systemd's dynamic users
# (61184-65519) or its container ranges (up to 1879048191), not /etc/subuid's defaults,
# and under 2**31 (tools that keep uids in a signed int).
UID_BASE = 2_100_000_000
UID_SPAN = 1000
LOCK_DIR = Path("/run/llmeval-sandbox")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "llmeval-"


class UidLock:
    """A reserved sandbox uid, held until :meth:`release` or this process's death."""

    def __init__(self, uid: int, fd: int):
        self.uid, self.fd = uid, fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _lock_dir() -> Path:
    """The lock directory, created root-owned and private; refused if anyone else made it."""
    LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(LOCK_DIR)
    if not (st.st_uid == 0 and (st.st_mode & 0o777) == 0o700 and LOCK_DIR.is_dir()):
        raise PermissionError(f"{LOCK_DIR} is not a private directory of root")
    return LOCK_DIR


def reserve_uid() -> UidLock:
    """The first free uid of the range; raises RuntimeError when every one is held."""
    directory = _lock_dir()
    for uid in range(UID_BASE, UID_BASE + UID_SPAN):
        fd = os.open(
            directory / f"uid-{uid}",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return UidLock(uid, fd)
    raise RuntimeError(f"no free sandbox uid in {UID_BASE}-{UID_BASE + UID_SPAN - 1}")


def uid_is_reserved(uid: int) -> bool:
    """Whether some live process holds ``uid``'s lock (for tests and diagnostics)."""
    try:
        fd = os.open(_lock_dir() / f"uid-{uid}", os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ============================================================================ cgroups


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _v2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup2":
            return Path(fields[4])
    return None


def _sweep(parent: Path) -> None:
    """Remove cgroups of dead llmeval processes (left when a run was SIGKILLed)."""
    with contextlib.suppress(OSError):
        for d in parent.iterdir():
            m = re.fullmatch(rf"{PREFIX}(\d+)-w\d+[ab]?", d.name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                with contextlib.suppress(OSError):
                    d.rmdir()


class Cgroup:
    """A worker's cgroup(s): ``procs`` files the zygote joins, limits set, OOM kills counted."""

    def __init__(self, version: int, dirs: list[Path], events: Path):
        self.version, self.dirs, self.events = version, dirs, events
        self.procs = [str(d / "cgroup.procs") for d in dirs]

    def oom_kills(self) -> int:
        """Processes the kernel killed in this cgroup for want of memory, so far."""
        try:
            text = self.events.read_text()
        except OSError:
            return 0
        m = re.search(r"^oom_kill (\d+)", text, re.M)
        return int(m.group(1)) if m else 0

    def remove(self) -> None:
        """rmdir each (retrying briefly while the last processes are reaped)."""
        for d in self.dirs:
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def create_cgroup(tag: str, memory_mb: int, processes: int) -> tuple[Cgroup | None, str]:
    """A cgroup for one worker limited to ``memory_mb`` (all its candidate's processes
    together) and a few more than ``processes`` tasks; and a phrase saying what binds."""
    name = f"{PREFIX}{os.getpid()}-{tag}"
    limit = (memory_mb << 20) + (32 << 20)  # the zygote's own pages written after fork
    own = _own_cgroups()
    reasons = []
    v2 = _v2_mount()
    if v2 is not None and "" in own:
        parent = v2 / own[""].lstrip("/")
        try:
            if "memory" not in (parent / "cgroup.controllers").read_text().split():
                raise PermissionError("no memory controller")
            _sweep(parent)
            d = parent / name
            d.mkdir()
            try:
                _write(parent / "cgroup.subtree_control", "+memory +pids")
                _write(d / "memory.max", str(limit))
                with contextlib.suppress(OSError):
                    _write(d / "memory.swap.max", "0")
                with contextlib.suppress(OSError):
                    _write(d / "pids.max", str(processes + 8))
            except OSError:
                d.rmdir()
                raise
            return Cgroup(2, [d], d / "memory.events"), f"cgroup v2 memory.max {memory_mb} MB"
        except OSError as exc:
            reasons.append(f"cgroup v2: {exc.strerror or exc}")
    if "memory" in own and (CGROUP_ROOT / "memory").is_dir():
        mem_parent = CGROUP_ROOT / "memory" / own["memory"].lstrip("/")
        try:
            _sweep(mem_parent)
            d = mem_parent / name
            d.mkdir()
            try:
                _write(d / "memory.limit_in_bytes", str(limit))
                with contextlib.suppress(OSError):
                    _write(d / "memory.memsw.limit_in_bytes", str(limit))
            except OSError:
                d.rmdir()
                raise
            dirs = [d]
            if "pids" in own and (CGROUP_ROOT / "pids").is_dir():
                pids_parent = CGROUP_ROOT / "pids" / own["pids"].lstrip("/")
                with contextlib.suppress(OSError):
                    _sweep(pids_parent)
                    p = pids_parent / name
                    p.mkdir()
                    _write(p / "pids.max", str(processes + 8))
                    dirs.append(p)
            return (
                Cgroup(1, dirs, d / "memory.oom_control"),
                f"cgroup v1 memory.limit_in_bytes {memory_mb} MB",
            )
        except OSError as exc:
            reasons.append(f"cgroup v1: {exc.strerror or exc}")
    return None, "; ".join(reasons) or "no cgroup hierarchy"
