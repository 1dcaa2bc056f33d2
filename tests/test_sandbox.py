"""The sandbox against hostile code: every attack is scored as not passing, the
scorer keeps running, and no process or temp dir is left behind."""

import os
import socket
import textwrap
import threading
from pathlib import Path

import pytest

from llmeval.sandbox import UID_BASE, UID_SPAN, Limits, Program, SandboxPool
from llmeval.vocab import FAIL, PASS, TIMEOUT

ROOT = os.geteuid() == 0
ADD_TEST = (
    "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
)


def prog(body: str, test: str = ADD_TEST, trusted: str = "") -> Program:
    code = textwrap.dedent(body)
    return Program(code=code, entry_point="add", test=test, trusted=trusted)


def sandbox_processes(uids=range(UID_BASE, UID_BASE + UID_SPAN)) -> list[str]:
    """Processes running as one of ``uids`` (a pool's own: other test runs may share the host)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if uid in uids:
            found.append(f"{pid} uid {uid}")
    return found


def settled_sandbox_processes(uids, within: float = 3.0) -> list[str]:
    """Sandbox processes still alive once the zygotes' clean-up (which runs after each
    verdict is sent) has had ``within`` seconds to finish."""
    import time

    deadline = time.monotonic() + within
    while (left := sandbox_processes(uids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2, Limits(timeout=2.0, memory_mb=512)) as p:
        uids = list(p.uids)
        yield p
    if ROOT:
        assert settled_sandbox_processes(uids) == []


def run(pool, programs: dict[str, Program]) -> dict:
    return dict(pool.map(programs.items()))


def test_honest_and_wrong(pool):
    v = run(
        pool,
        {
            "right": prog("def add(a, b):\n    return a + b\n"),
            "wrong": prog("def add(a, b):\n    return a - b\n"),
            "raises": prog("def add(a, b):\n    raise ValueError('nope')\n"),
            "syntax": prog("def add(a, b)\n    return a + b\n"),
            "missing": prog("def plus(a, b):\n    return a + b\n"),
        },
    )
    assert v["right"].status == PASS and v["right"].detail is None
    assert (v["wrong"].status, v["wrong"].detail) == (
        FAIL,
        "assertion failed: assert candidate(1, 2) == 3",
    )
    assert (v["raises"].status, v["raises"].detail) == (FAIL, "ValueError: nope")
    assert v["syntax"].status == FAIL and v["syntax"].detail.startswith(
        "the code does not load: SyntaxError"
    )
    assert (
        v["missing"].detail == "the code does not load: NameError: the code does not define add()"
    )


def test_hangs_are_timeouts(pool):
    v = run(
        pool,
        {
            "loop": prog("def add(a, b):\n    while True:\n        pass\n"),
            "c_hang": prog("def add(a, b):\n    return 10 ** 10 ** 8\n"),
            "ignores_signals": prog("""
            import signal
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            def add(a, b):
                while True:
                    pass
        """),
            "hang_at_import": prog(
                "import time\ntime.sleep(60)\ndef add(a, b):\n    return a + b\n"
            ),
        },
    )
    for name, verdict in v.items():
        assert verdict.status == TIMEOUT, (name, verdict)
        assert verdict.time_s < 4.0


def test_fork_bomb_is_bounded(pool):
    v = run(
        pool,
        {
            "bomb": prog("""
        import os
        def add(a, b):
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
    """)
        },
    )
    assert v["bomb"].status == TIMEOUT
    # The next program runs normally: the bomb did not take the worker or the host down,
    # and (as root, with a uid per sandbox) none of its processes is left.
    assert run(pool, {"after": prog("def add(a, b):\n    return a + b\n")})["after"].status == PASS
    if ROOT:
        assert settled_sandbox_processes(pool.uids) == []


@pytest.mark.skipif(not ROOT, reason="an unprivileged uid per sandbox needs root")
def test_fork_bomb_children_are_all_killed(pool):
    run(
        pool,
        {
            "bomb": prog("""
        import os, time
        def add(a, b):
            for _ in range(8):
                if os.fork() == 0:
                    os.setsid()
                    time.sleep(600)
            return a + b
    """)
        },
    )
    # Even children that left the session were killed by uid; the zygote reaps them.
    run(pool, {"next": prog("def add(a, b):\n    return a + b\n")})
    assert settled_sandbox_processes(pool.uids) == []


def test_memory_bomb_and_output_flood(pool):
    v = run(
        pool,
        {
            "memory": prog("def add(a, b):\n    x = bytearray(8 * 1024 ** 3)\n    return a + b\n"),
            "memory_loop": prog(
                "def add(a, b):\n    x = []\n    while True:\n        x.append(' ' * 10**6)\n"
            ),
            "flood": prog(
                "import sys\ndef add(a, b):\n    while True:\n        sys.stdout.write('x' * 65536)\n"
            ),
        },
    )
    assert v["memory"].status == FAIL and v["memory"].detail.startswith("MemoryError")
    assert v["memory_loop"].status == FAIL and "MemoryError" in v["memory_loop"].detail
    assert v["flood"].status == FAIL
    # Python ignores SIGXFSZ, so the write past RLIMIT_FSIZE fails with EFBIG.
    assert v["flood"].detail == "OSError: [Errno 27] File too large"
    assert len(v["flood"].output) == 2048


def test_exit_and_fake_verdicts(pool):
    v = run(
        pool,
        {
            "os_exit": prog("import os\nos._exit(0)\ndef add(a, b):\n    return a + b\n"),
            "sys_exit": prog("import sys\ndef add(a, b):\n    sys.exit(0)\n"),
            "prints_pass": prog("""
            print('passed')
            print('{"status": "pass", "value": 1.0}')
            def add(a, b):
                print('all tests passed')
                return 0
        """),
            "non_utf8": prog(
                "import os\nos.write(1, b'\\xff\\xfe\\xfa bytes')\ndef add(a, b):\n    return 0\n"
            ),
        },
    )
    assert v["os_exit"].status == FAIL
    assert v["os_exit"].detail == "the candidate process exited (exit 0) before the tests finished"
    assert v["sys_exit"].status == FAIL and v["sys_exit"].detail == "RuntimeError: SystemExit: 0"
    assert v["prints_pass"].status == FAIL and "passed" in v["prints_pass"].output
    assert v["non_utf8"].status == FAIL and "\ufffd" in v["non_utf8"].output


def test_kills_its_parent_and_harness(pool):
    v = run(
        pool,
        {
            "kill_parent": prog(
                "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                "def add(a, b):\n    return a + b + 1\n"
            ),
            "kill_all": prog(
                "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
                "def add(a, b):\n    return 0\n"
            ),
            "kill_group": prog(
                "import os, signal\ndef add(a, b):\n    os.killpg(os.getpgid(os.getppid()), 9)\n"
            ),
        },
    )
    assert all(x.status != PASS for x in v.values()), v
    # The pool is intact: a correct program still passes.
    assert run(pool, {"ok": prog("def add(a, b):\n    return a + b\n")})["ok"].status == PASS


def test_forged_equality_trace_hooks_and_frames(pool):
    v = run(
        pool,
        {
            "eq_true": prog("""
            class Anything:
                def __eq__(self, other): return True
                def __ne__(self, other): return False
            def add(a, b):
                return Anything()
        """),
            "int_subclass": prog("""
            class Int(int):
                def __eq__(self, other): return True
            def add(a, b):
                return Int(0)
        """),
            "trace_skips_asserts": prog("""
            import sys
            def tracer(frame, event, arg):
                frame.f_lineno = frame.f_lineno
                return None
            sys.settrace(tracer)
            import builtins
            builtins.AssertionError = type('Never', (Exception,), {})
            def add(a, b):
                return 0
        """),
            "walks_frames": prog("""
            import sys, gc
            def add(a, b):
                for obj in gc.get_objects():
                    if isinstance(obj, dict) and 'check' in obj:
                        obj['check'] = lambda c: None
                f = sys._getframe()
                while f.f_back:
                    f = f.f_back
                    f.f_globals.get('__builtins__', {})
                return 0
        """),
        },
    )
    for name, verdict in v.items():
        assert verdict.status == FAIL, (name, verdict)


def test_redefined_prompt_helper_does_not_help(pool):
    trusted = "def encode(s):\n    return s[::-1]\n\ndef decode(s):\n    '''undo encode'''\n"
    test = "def check(candidate):\n    for s in ['abc', 'hello']:\n        assert candidate(encode(s)) == s\n"
    honest = Program(
        code=trusted + "    return s[::-1]\n", entry_point="decode", test=test, trusted=trusted
    )
    cheat = Program(
        code=trusted + "    return s\n\ndef encode(s):\n    return s\n",
        entry_point="decode",
        test=test,
        trusted=trusted,
    )
    v = run(pool, {"honest": honest, "cheat": cheat})
    assert v["honest"].status == PASS
    assert v["cheat"].status == FAIL


@pytest.mark.skipif(not ROOT, reason="file ownership protection needs an unprivileged sandbox uid")
def test_cannot_delete_files_outside_its_cwd(pool, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    os.chmod(tmp_path, 0o755)
    v = run(
        pool,
        {
            "rm": prog(f"""
        import os, shutil
        def add(a, b):
            os.remove({str(victim)!r})
            return a + b
    """),
            "rmtree": prog(f"""
        import shutil
        shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)
        def add(a, b):
            return a + b
    """),
        },
    )
    assert v["rm"].status == FAIL and v["rm"].detail.startswith("PermissionError")
    assert victim.read_text() == "keep me"


@pytest.mark.skipif(not ROOT, reason="a network namespace needs root here")
def test_no_network(pool):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(3)
    port = listener.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    v = run(
        pool,
        {
            "net": prog(f"""
        import socket
        def add(a, b):
            s = socket.create_connection(('127.0.0.1', {port}), timeout=1)
            s.sendall(b'exfiltrate')
            return a + b
    """)
        },
    )
    t.join()
    listener.close()
    assert v["net"].status == FAIL
    assert "Network is unreachable" in v["net"].detail or "refused" in v["net"].detail
    assert accepted == []


def test_environment_is_scrubbed(pool, monkeypatch):
    # The workers were started with the test process's environment; secrets must not reach
    # the candidate: the zygote cleared it.
    v = run(
        pool,
        {
            "env": prog(
                "import os\ndef add(a, b):\n    return len(os.environ) * 0 + a + b"
                " if 'LLMEVAL_HOME' not in os.environ and 'PYTEST_CURRENT_TEST' not in os.environ"
                " else -1\n"
            )
        },
    )
    assert v["env"].status == PASS


def test_helper_objects_cross_as_handles(pool):
    """MBPP-style tests build the candidate's own classes; they cross as opaque handles."""
    code = (
        "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n\n"
        "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
    )
    test = "assert longest([Pair(1, 5), Pair(2, 3)]) == 4\nassert longest([Pair(0, 1)]) == 1\n"
    v = run(pool, {"pairs": Program(code=code, entry_point="longest", test=test, style="asserts")})
    assert v["pairs"].status == PASS


def test_no_temp_dirs_left():
    import glob
    import tempfile

    with SandboxPool(1, Limits(timeout=2.0)) as own:
        v = run(
            own,
            {"ok": prog("open('scratch.txt', 'w').write('x')\ndef add(a, b):\n    return a + b\n")},
        )
        assert v["ok"].status == PASS
        pattern = os.path.join(tempfile.gettempdir(), f"llmeval-cand-{own.uids[0]}-*")
    if ROOT:
        assert glob.glob(pattern) == []
