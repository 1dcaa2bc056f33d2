"""Linux primitives the sandbox needs, through ctypes (no compiled helper, no libseccomp).

Namespaces and mounts (``unshare``, ``mount``, ``pivot_root``), process
attributes (``prctl``), capabilities (``capset``), seccomp filters written as
classic BPF, and Landlock rulesets. Every call raises :class:`OSError` with the
call's name on failure, so a caller can say on stderr exactly what did not bind.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
CLONE_NEW_ANY = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
# statvfs f_flag bits -> the mount flags a remount must keep (in a user namespace the
# kernel refuses a remount that drops a locked flag such as nodev).
_ST_TO_MS = {1: 1, 2: 2, 4: 4, 8: 8, 16: 16, 64: 64, 1024: 1024, 2048: 2048, 4096: 1 << 21}

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4

_libc: Any = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
ARCH = os.uname().machine


def _fail(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise _fail(what)
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    if _libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        raise _fail(f"mount {target}")


def umount(target: str, flags: int = MNT_DETACH) -> None:
    if _libc.umount2(target.encode(), ctypes.c_int(flags)) != 0:
        raise _fail(f"umount {target}")


def mount_flags(path: str) -> int:
    """The mount flags in force at ``path`` (what a read-only remount must keep)."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if f_flag & st)


def remount_readonly(path: str) -> None:
    mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | mount_flags(path))


_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(ARCH)
    if nr is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown architecture {ARCH}")
    _check(_libc.syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    data = name.encode()
    _check(_libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return _check(
        _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0),
        f"prctl({option})",
    )


def set_name(name: str) -> None:
    """The process name ps and top show (15 bytes)."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (and the ambient set)."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)  # two {effective, permitted, inheritable} u32 triples, all zero
    _check(_libc.capset(header, data), "capset")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before 4.3: none


def clear_bounding_set() -> None:
    """Nothing can be gained at execve either (needs CAP_SETPCAP; done by the zygote)."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:  # past the last capability this kernel has
                return
            raise _fail("prctl(PR_CAPBSET_DROP)")


# ============================================================================ seccomp

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
AF_UNIX = 1
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
               "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
               "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429,
               "open_tree": 428, "mount_setattr": 442, "unshare": 272, "setns": 308, "clone": 56,
               "clone3": 435, "fork": 57, "vfork": 58, "bpf": 321, "perf_event_open": 298,
               "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
               "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249,
               "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
               "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163,
               "syslog": 103, "quotactl": 179, "quotactl_fd": 443, "lookup_dcookie": 212,
               "open_by_handle_at": 304, "name_to_handle_at": 303, "fanotify_init": 300,
               "iopl": 172, "ioperm": 173, "settimeofday": 164, "clock_settime": 227,
               "clock_adjtime": 305, "adjtimex": 159, "sethostname": 170, "setdomainname": 171,
               "shmget": 29, "shmat": 30, "shmdt": 67, "shmctl": 31, "semget": 64, "semop": 65,
               "semtimedop": 220, "semctl": 66, "msgget": 68, "msgsnd": 69, "msgrcv": 70,
               "msgctl": 71, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242,
               "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245, "vhangup": 153,
               "uselib": 134, "ustat": 136, "sysfs": 139, "nfsservctl": 180, "socket": 41, "socketpair": 53,
               "kill": 62, "tkill": 200, "tgkill": 234, "pidfd_send_signal": 424,
               "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434,
               "prlimit64": 302, "sched_setparam": 142, "sched_setscheduler": 144, "sched_setaffinity": 203, "sched_setattr": 314, "setpriority": 141, "ioprio_set": 251, "memfd_create": 319, "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235, "futimesat": 261, "utimensat": 280, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "setxattrat": 463, "removexattrat": 466,
               "inotify_init": 253, "inotify_init1": 294, "fcntl": 72, "memfd_secret": 447},
    "aarch64": {"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
                "pidfd_getfd": 438, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
                "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429,
                "open_tree": 428, "mount_setattr": 442, "unshare": 97, "setns": 268, "clone": 220,
                "clone3": 435, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
                "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                "keyctl": 219, "add_key": 217, "request_key": 218, "kexec_load": 104,
                "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
                "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89,
                "syslog": 116, "quotactl": 60, "quotactl_fd": 443, "lookup_dcookie": 18,
                "open_by_handle_at": 265, "name_to_handle_at": 264, "fanotify_init": 262,
                "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171,
                "sethostname": 161, "setdomainname": 162, "shmget": 194, "shmat": 196,
                "shmdt": 197, "shmctl": 195, "semget": 190, "semop": 193, "semtimedop": 192,
                "semctl": 191, "msgget": 186, "msgsnd": 189, "msgrcv": 188, "msgctl": 187,
                "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183,
                "mq_notify": 184, "mq_getsetattr": 185, "vhangup": 58, "nfsservctl": 42,
                "socket": 198, "socketpair": 199, "kill": 129, "tkill": 130, "tgkill": 131,
                "pidfd_send_signal": 424, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
                "pidfd_open": 434, "prlimit64": 261, "sched_setparam": 118, "sched_setscheduler": 119, "sched_setaffinity": 122, "sched_setattr": 274, "setpriority": 140, "ioprio_set": 30, "memfd_create": 279, "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchown": 55, "fchownat": 54, "utimensat": 88, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16, "setxattrat": 463, "removexattrat": 466, "inotify_init1": 26, "fcntl": 25,
                "memfd_secret": 447},
}  # fmt: skip
ArgRules = dict[str, tuple[tuple[int, int], ...]]  # call: (argument index, value allowed)...
# Calls that act on a process named by their first arguments: a candidate may aim them at
# itself only (pid 0), never at the zygote or, in the fallback, at the user's processes
# (same uid): limits, scheduling, priority.
SELF_ONLY: ArgRules = {
    "prlimit64": ((0, 0),),
    "sched_setparam": ((0, 0),),
    "sched_setscheduler": ((0, 0),),
    "sched_setaffinity": ((0, 0),),
    "sched_setattr": ((0, 0),),
    "setpriority": ((0, 0), (1, 0)),  # PRIO_PROCESS, who = 0
    "ioprio_set": ((0, 1), (1, 0)),  # IOPRIO_WHO_PROCESS, who = 0
}
UNIX_SOCKETS_ONLY: ArgRules = {"socket": ((0, AF_UNIX),), "socketpair": ((0, AF_UNIX),)}
# What Landlock does not check (metadata of files it may otherwise only read): denied in the
# fallback, where the user's own files are on the other side of Landlock alone.
METADATA_CALLS = (
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr",
    "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
)  # fmt: skip

# What tests never need, denied for every candidate (EPERM): inspecting or writing other
# processes, the mount table, new namespaces (a fresh user namespace would give back
# capabilities), kernel interfaces that bypass or outlive the process (bpf, io_uring,
# keyrings, SysV IPC and POSIX message queues), and host administration.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop",
    "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr", "vhangup", "uselib", "ustat", "sysfs",
    "nfsservctl",
)  # fmt: skip
SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")

_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000
_NR, _ARCH_OFF = 0, 4


def _arg_lo(i: int) -> int:
    """Offset of the low 32 bits of syscall argument ``i`` in struct seccomp_data."""
    return 16 + 8 * i if struct.pack("=I", 1)[0] == 1 else 20 + 8 * i


class Filter:
    """A classic-BPF seccomp program, built once and installed with one prctl.

    Installing costs about 3 us per instruction (the kernel validates and JITs
    it), so the zygote installs the long list once and each candidate adds
    only a few instructions of its own.
    """

    def __init__(self, program: list[tuple[int, int, int, int]]):
        self.length = len(program)
        self._insns = ctypes.create_string_buffer(
            b"".join(struct.pack("HBBI", *ins) for ins in program)
        )
        self._fprog = ctypes.create_string_buffer(
            struct.pack("HxxxxxxP", self.length, ctypes.addressof(self._insns))
        )

    def install(self) -> None:
        """Attach to this thread's process; inherited by every child, never removed."""
        if _libc.prctl(PR_SET_SECCOMP, 2, self._fprog, 0, 0) != 0:
            raise _fail("seccomp")


def _allowed_only_with(
    rules: ArgRules, table: dict[str, int], denied: set[str]
) -> list[Any]:
    """Filter blocks allowing each call of ``rules`` only when every (argument index, value)
    of its rule holds, EPERM otherwise (calls denied outright, or unknown here, skipped)."""
    body: list[Any] = []
    for name, checks in rules.items():
        if name not in table or name in denied:
            continue
        block: list[Any] = []
        for k, (index, value) in enumerate(checks):
            last = k == len(checks) - 1
            block += [(_LD_ABS, 0, 0, _arg_lo(index)), (_JEQ, "ALLOW" if last else 0, "EPERM", value)]
        body.append((_JEQ, 0, len(block), table[name]))
        body.extend(block)
    return [*body, (_LD_ABS, 0, 0, _NR)] if body else body


def build_filter(
    deny: Iterable[str] = (),
    *,
    no_namespaces: bool = False,
    no_processes: bool = False,
    no_sockets: bool = False,
    unix_sockets_only: bool = False,
    self_only: bool = False,
    deny_args: Iterable[tuple[str, int, int]] = (),
    signal_only: int | None = None,
) -> Filter:
    """A filter for this architecture: deny (EPERM) the named calls; with ``no_namespaces``,
    ``clone`` with a namespace flag (and ``clone3``, whose flags a filter cannot read: ENOSYS
    makes the C library fall back to ``clone``); with ``no_processes``, every new process
    (threads stay allowed); with ``no_sockets``, ``socket()``; with ``unix_sockets_only``,
    ``socket()`` and ``socketpair()`` of any family but ``AF_UNIX``; with ``self_only``, the
    calls of SELF_ONLY aimed at another process; ``deny_args``: (call, argument index,
    value) the call is refused with; with ``signal_only=PID``,
    signals to any process but PID and its group. Other architectures' calls are refused."""
    table = SYSCALLS.get(ARCH)
    if table is None or ARCH not in AUDIT_ARCH:
        raise OSError(errno.ENOSYS, f"seccomp: no syscall table for {ARCH}")
    names = set(deny) & set(table)
    if no_processes:
        names |= {"fork", "vfork"} & set(table)
    if no_sockets:
        names |= {"socket", "socketpair"}
    if signal_only is not None:
        names |= {"pidfd_send_signal", "pidfd_open"}
    simple = sorted(table[n] for n in names if n != "clone")
    # Blocks of (instruction, "EPERM"/"ENOSYS"/"ALLOW"/int) resolved to offsets below.
    head: list[Any] = [
        (_LD_ABS, 0, 0, _ARCH_OFF),
        (_JEQ, 1, 0, AUDIT_ARCH[ARCH]),
        (_RET, 0, 0, RET_KILL_PROCESS),
        (_LD_ABS, 0, 0, _NR),
    ]
    if ARCH == "x86_64":  # x32 calls alias 64-bit numbers with bit 30 set
        head.append((_JGE, "ENOSYS", 0, 0x40000000))
    body: list[Any] = [(_JEQ, "EPERM", 0, nr) for nr in simple]
    if no_namespaces or no_processes:
        body.append((_JEQ, "ENOSYS", 0, table["clone3"]))
        block: list[Any] = [(_LD_ABS, 0, 0, _arg_lo(0))]
        if no_namespaces:
            block.append((_JSET, "EPERM", 0, CLONE_NEW_ANY))
        if no_processes:
            block.append((_JSET, "ALLOW", "EPERM", CLONE_THREAD))
        block.append((_RET, 0, 0, RET_ALLOW))
        body.append((_JEQ, 0, len(block), table["clone"]))
        body.extend(block)
        body.append((_LD_ABS, 0, 0, _NR))
    if unix_sockets_only:
        body += _allowed_only_with(UNIX_SOCKETS_ONLY, table, names)
    for name, index, value in deny_args:
        if name in table and name not in names:
            block = [(_LD_ABS, 0, 0, _arg_lo(index)), (_JEQ, "EPERM", 0, value), (_LD_ABS, 0, 0, _NR)]
            body.append((_JEQ, 0, len(block), table[name]))
            body.extend(block)
    if self_only:
        body += _allowed_only_with(SELF_ONLY, table, names)
    if signal_only is not None:
        # kill(pid)/rt_sigqueueinfo(pid): allowed for pid, -pid (its group) and 0 (its group);
        # tkill/tgkill/rt_tgsigqueueinfo: allowed for threads of pid.
        for name in SIGNAL_CALLS:
            block = [(_LD_ABS, 0, 0, _arg_lo(0)), (_JEQ, "ALLOW", 0, signal_only)]
            if name in ("kill", "rt_sigqueueinfo"):
                block += [
                    (_JEQ, "ALLOW", 0, 0),
                    (_JEQ, "ALLOW", "EPERM", (-signal_only) & 0xFFFFFFFF),
                ]
            elif name == "tkill":
                block = [(_RET, 0, 0, RET_ERRNO | errno.EPERM)]  # a bare tid: cannot tell
            else:
                block.append((_RET, 0, 0, RET_ERRNO | errno.EPERM))
            body.append((_JEQ, 0, len(block), table[name]))
            body.extend(block)
        body.append((_LD_ABS, 0, 0, _NR))
    tail = [
        ("ALLOW", (_RET, 0, 0, RET_ALLOW)),
        ("EPERM", (_RET, 0, 0, RET_ERRNO | errno.EPERM)),
        ("ENOSYS", (_RET, 0, 0, RET_ERRNO | errno.ENOSYS)),
    ]
    program = head + body
    labels = {name: len(program) + i for i, (name, _) in enumerate(tail)}
    resolved = []
    for i, (code, jt, jf, k) in enumerate(program):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp program too long for its jumps")
        resolved.append((code, jt, jf, k))
    resolved += [ins for _, ins in tail]
    return Filter(resolved)


# ============================================================================ Landlock

_SYS_LANDLOCK_CREATE, _SYS_LANDLOCK_ADD, _SYS_LANDLOCK_RESTRICT = 444, 445, 446
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_FILE_RIGHTS = {1: 0b111, 3: 0b111 | 1 << 14, 5: 0b111 | 1 << 14 | 1 << 15}
FS_ALL = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_ALL = 0b11  # bind and connect TCP (ABI 4)
SCOPE_ALL = 0b11  # abstract Unix sockets and signals outside the domain (ABI 6)


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when there is none."""
    ret = _libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE), None, ctypes.c_size_t(0), 1)
    return max(int(ret), 0)


def _pick(table: dict[int, int], abi: int) -> int:
    return table[max(v for v in table if v <= abi)]


class Landlock:
    """One Landlock layer: what is handled is denied except what a rule allows."""

    def __init__(self, abi: int, *, scope: bool = True, net: bool = True):
        self.abi = abi
        self.fs_all = _pick(FS_ALL, abi)
        attr = struct.pack(
            "QQQ",
            self.fs_all,
            NET_ALL if net and abi >= 4 else 0,
            SCOPE_ALL if scope and abi >= 6 else 0,
        )
        size = 24 if abi >= 6 else 16 if abi >= 4 else 8
        buf = ctypes.create_string_buffer(attr[:size])
        self.fd = _check(
            _libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE), buf, ctypes.c_size_t(size), 0),
            "landlock_create_ruleset",
        )

    def allow(self, path: str, access: int) -> None:
        """Allow ``access`` beneath ``path`` (a file gets only the rights files can have)."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                access &= _pick(FS_FILE_RIGHTS, self.abi)
            attr = ctypes.create_string_buffer(struct.pack("=Qi", access & self.fs_all, fd))
            _check(
                _libc.syscall(ctypes.c_long(_SYS_LANDLOCK_ADD), self.fd, 1, attr, 0),
                f"landlock_add_rule {path}",
            )
        finally:
            os.close(fd)

    def restrict_self(self) -> None:
        try:
            _check(
                _libc.syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT), self.fd, 0),
                "landlock_restrict_self",
            )
        finally:
            os.close(self.fd)
