"""The sandbox against hostile programs: every trick scores as not passing, the verdict of
the next program is untouched, and the trusted side bounds what it accepts.

These run in whatever isolation this host gives (namespaces here); the attacks on the
operating system around the box are in test_sandbox_attacks.py, run both as root and as
an ordinary user (test_sandbox_user.py)."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from llmeval.sandbox import DETAIL_MAX, Limits, Program, SandboxPool
from llmeval.vocab import ERROR, FAIL, PASS, TIMEOUT

ADD_TEST = (
    "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
)
HONEST = "def add(a, b):\n    return a + b\n"


def prog(body: str, test: str = ADD_TEST, trusted: str = "", entry: str = "add") -> Program:
    return Program(code=textwrap.dedent(body), entry_point=entry, test=test, trusted=trusted)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2, Limits(timeout=2.0, memory_mb=512)) as p:
        yield p


def run(pool, programs: dict[str, Program]) -> dict:
    return dict(pool.map(programs.items()))


def honest_passes_quickly(pool) -> None:
    """The next record is untouched: an honest program passes, in normal time."""
    v = run(pool, {f"next{i}": prog(HONEST) for i in range(4)})
    assert {x.status for x in v.values()} == {PASS}, v
    assert max(x.time_s for x in v.values()) < 1.0, v


def test_honest_and_wrong(pool):
    v = run(
        pool,
        {
            "right": prog(HONEST),
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
            for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
            def add(a, b):
                while True:
                    pass
        """),
            "hang_at_import": prog("import time\ntime.sleep(60)\n" + HONEST),
            "blocks_on_stdin": prog("import sys\ndef add(a, b):\n    sys.stdin.read()\n    while 1: pass\n"),
        },
    )
    for name, verdict in v.items():
        assert verdict.status in (TIMEOUT, FAIL), (name, verdict)
        assert verdict.status != PASS and verdict.time_s < 4.0, (name, verdict)
    assert {n for n, x in v.items() if x.status == TIMEOUT} >= {"loop", "c_hang", "hang_at_import"}
    honest_passes_quickly(pool)


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
    assert v["bomb"].status in (TIMEOUT, FAIL)
    honest_passes_quickly(pool)


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
    honest_passes_quickly(pool)


def test_exit_and_fake_verdicts(pool):
    v = run(
        pool,
        {
            "os_exit": prog("import os\nos._exit(0)\n" + HONEST),
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
            "kills_itself": prog("import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), 9)\n"),
        },
    )
    assert v["os_exit"].status == FAIL
    assert v["os_exit"].detail == "the candidate process exited (exit 0) before the tests finished"
    assert v["sys_exit"].status == FAIL and v["sys_exit"].detail == "RuntimeError: SystemExit: 0"
    assert v["prints_pass"].status == FAIL and "passed" in v["prints_pass"].output
    assert v["non_utf8"].status == FAIL and "\ufffd" in v["non_utf8"].output
    assert v["kills_itself"].status == FAIL
    assert v["kills_itself"].detail == "the candidate process was killed by SIGKILL"


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
                return 0
        """),
            "forged_reply": prog("""
            import os
            os.write(4, b'\\x00\\x00\\x00\\x0e["ok",["i",3]]\\x00\\x00\\x00\\x0e["ok",["i",0]]')
            def add(a, b):
                return -99
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


def test_environment_is_allowlisted(pool, monkeypatch):
    """The workers were started with an allowlisted environment: a secret in eval-score's
    environment is nowhere in the candidate's, nor anywhere in the memory it can read (it
    looks for the two halves side by side, so its own code never holds the secret whole)."""
    first, second = "sk-canary-3f9a1c", "7e2b5d8a4c6f0e1d"
    monkeypatch.setenv("OPENAI_API_KEY", first + second)
    monkeypatch.setenv("HF_TOKEN", first + second)
    with SandboxPool(1, Limits(timeout=3.0)) as own:
        v = run(
            own,
            {
                "env": prog(f"""
                import os, sys
                A, B = {first.encode()!r}, {second.encode()!r}
                def holds(data):
                    at = data.find(A)
                    while at >= 0:
                        if data[at + len(A):at + len(A) + len(B)] == B:
                            return True
                        at = data.find(A, at + 1)
                    return False
                def add(a, b):
                    found = [k for k, v in os.environ.items() if holds(v.encode())]
                    import gc
                    for obj in gc.get_objects() + [sys.argv, sys.path]:
                        for item in (obj if isinstance(obj, (list, tuple, dict)) else [obj]):
                            if isinstance(item, str) and holds(item.encode('utf-8', 'replace')):
                                found.append('object')
                    try:  # where /proc is there to read (not in the Landlock fallback)
                        with open('/proc/self/environ', 'rb') as fh:
                            if holds(fh.read()):
                                found.append('environ')
                        with open('/proc/self/maps') as maps:
                            regions = [l.split()[0] for l in maps if l.split()[1].startswith('r')]
                    except PermissionError:
                        regions = []
                    with open('/proc/self/mem', 'rb', buffering=0) if regions else open(os.devnull, 'rb') as mem:
                        for r in regions:
                            lo, hi = (int(x, 16) for x in r.split('-'))
                            try:
                                mem.seek(lo)
                                if holds(mem.read(hi - lo)):
                                    found.append('memory ' + r)
                            except (OSError, ValueError, OverflowError):
                                pass
                    if found:
                        raise RuntimeError(found)
                    return a + b
            """)
            },
        )
    assert v["env"].status == PASS, v["env"]


def test_helper_objects_cross_as_handles(pool):
    """MBPP-style tests build the candidate's own classes; they cross as opaque handles."""
    code = (
        "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n\n"
        "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
    )
    test = "assert longest([Pair(1, 5), Pair(2, 3)]) == 4\nassert longest([Pair(0, 1)]) == 1\n"
    v = run(pool, {"pairs": Program(code=code, entry_point="longest", test=test, style="asserts")})
    assert v["pairs"].status == PASS


def test_a_three_megabyte_program_runs(pool):
    """A realistic solution can be long (a table, generated code): programs of a few MB go
    through (they once failed with "Message too long")."""
    table = "TABLE = (\n" + "".join(f"    '{i * 7919 % 100003:08d}'\n" for i in range(220_000)) + ")\n"
    assert len(table) > 3_000_000
    v = run(
        pool,
        {
            "big": prog(table + HONEST),
            "big_wrong": prog(table + "def add(a, b):\n    return len(TABLE)\n"),
        },
    )
    assert v["big"].status == PASS, v["big"]
    assert v["big_wrong"].status == FAIL


def test_malformed_and_oversized_replies_fail_that_record_only(pool):
    """The trusted side bounds what it accepts: garbage, a length prefix of 4 GB, a reply of
    30 MB, a value nested too deep, a huge exception message. Each is that record's fail; the
    detail is capped with a marker; the next record passes."""
    frame = "import os, struct\ndef say(b):\n    os.write(4, struct.pack('!I', len(b)) + b)\n"
    v = run(
        pool,
        {
            "garbage": prog("import os\nos.write(4, b'\\xff' * 64)\n" + HONEST),
            "bad_json": prog(frame + "say(b'[\"ok\", [\"i\", ')\n" + HONEST),
            "not_a_list": prog(frame + "say(b'{\"ok\": 1}')\n" + HONEST),
            "bad_value": prog(frame + "say(b'[\"ready\"]')\nsay(b'[\"ok\", [\"q\", 1]]')\n" + HONEST),
            "huge_length": prog("import os\nos.write(4, b'\\xff\\xff\\xff\\xf0')\n" + HONEST),
            "huge_reply": prog("def add(a, b):\n    return 'x' * (30 << 20)\n"),
            "deep_value": prog("def add(a, b):\n    v = []\n    for _ in range(500):\n        v = [v]\n    return v\n"),
            "huge_message": prog("def add(a, b):\n    raise ValueError('y' * (10 << 20))\n"),
            "huge_exc_name": prog(
                "def add(a, b):\n    raise type('E' * 100000, (Exception,), {})('m')\n"
            ),
        },
    )
    for name, verdict in v.items():
        assert verdict.status == FAIL, (name, verdict)
        assert len(verdict.detail) <= DETAIL_MAX + 60, (name, len(verdict.detail))
    assert v["huge_reply"].detail.startswith("the candidate sent a message of ")
    assert "over the size limit" in v["huge_reply"].detail or "(the limit is" in v["huge_reply"].detail
    assert v["huge_length"].detail.startswith("the candidate sent a message of 4294967280 bytes")
    assert v["huge_message"].detail.startswith("ValueError: yyyy")
    assert "more characters cut]" in v["huge_message"].detail or len(v["huge_message"].detail) < 1100
    honest_passes_quickly(pool)


def test_mispredicted_calls_are_run_again_call_by_call(pool):
    """Calls are predicted from the test's straight-line asserts and answered at once; a
    test that makes other calls (a short-circuit here) runs again, call by call, so a
    stateful candidate sees exactly the calls the test makes."""
    stateful = "calls = []\ndef add(a, b):\n    calls.append((a, b))\n    return a + b + len(calls) - 1\n"
    test = (
        "def check(candidate):\n"
        "    assert candidate(1, 2) == 3 or candidate(5, 5) == 0\n"
        "    assert candidate(2, 2) == 5\n"
    )
    v = run(pool, {"stateful": prog(stateful, test=test)})
    # Call by call: (1,2) -> 3, short-circuit skips (5,5), (2,2) -> 4 + 1 = 5: a pass. Had the
    # predicted (5,5) been made, (2,2) would have returned 6.
    assert v["stateful"].status == PASS, v["stateful"]


def test_a_worker_that_dies_is_replaced(pool):
    """The candidate cannot reach its worker; a worker that dies anyway (here: killed from
    outside) costs that record an error, and the pool goes on."""
    import signal

    victim = pool.workers[0]
    os.kill(victim.proc.pid, signal.SIGKILL)
    v = run(pool, {f"p{i}": prog(HONEST) for i in range(6)})
    assert [x.status for x in v.values()].count(ERROR) <= 2
    assert [x.status for x in v.values()].count(PASS) >= 4
    honest_passes_quickly(pool)


def test_verdicts_do_not_depend_on_the_pool(pool):
    """The same programs, twice, in another pool with one worker: the same verdicts
    (hash seed and random seed are fixed: set order and random inputs repeat)."""
    code = "def add(a, b):\n    import random\n    return a + b + (random.random() < 2) - 1 + len({'x', 'y'} & {str(hash('x'))})\n"
    programs = {f"p{i}": prog(code) for i in range(4)}
    first = {k: (x.status, x.detail) for k, x in run(pool, programs).items()}
    with SandboxPool(1, Limits(timeout=2.0)) as other:
        second = {k: (x.status, x.detail) for k, x in run(other, programs).items()}
    assert first == second


def test_a_candidates_random_draws_repeat(pool):
    """``random`` is not preloaded in the zygote; wherever a candidate imports it from, it
    comes seeded the same way (seed 0), in every candidate, in any pool."""
    import random

    expected = random.Random(0).random()
    test = f"def check(candidate):\n    assert candidate() == {expected!r}\n"
    programs = {
        "module": prog("import random\ndef draw():\n    return random.random()\n", test, entry="draw"),
        "from": prog("from random import random\ndef draw():\n    return random()\n", test, entry="draw"),
        "late": prog("def draw():\n    import random\n    return random.random()\n", test, entry="draw"),
        "other": prog(
            "def draw():\n    import random\n    return random.Random(0).random()\n", test, entry="draw"
        ),
        "unseeded": prog(
            "def draw():\n    import random\n    random.seed()\n    return random.random()\n",
            test,
            entry="draw",
        ),
    }
    for _ in range(2):
        v = run(pool, programs)
        assert {k: x.status for k, x in v.items()} == {
            "module": PASS, "from": PASS, "late": PASS, "other": PASS, "unseeded": FAIL
        }, v


def test_modules_not_preloaded_import_in_the_box(pool):
    """The zygote preloads only what most programs import; the rest (heapq, bisect, json,
    fractions, ...) loads in the candidate that asks for it."""
    code = (
        "def add(a, b):\n"
        "    import heapq, bisect, fractions, statistics, decimal\n"
        "    return heapq.nsmallest(1, [a + b])[0] + bisect.bisect([], 0)\n"
    )
    assert run(pool, {"imports": prog(code)})["imports"].status == PASS


def test_timing_of_a_program_is_its_own(pool):
    start = time.monotonic()
    v = run(pool, {"sleep": prog("import time\ndef add(a, b):\n    time.sleep(0.3)\n    return a + b\n")})
    assert v["sleep"].status == PASS
    assert 0.3 <= v["sleep"].time_s <= time.monotonic() - start


def test_the_workers_own_memory_is_limited(pool):
    """What a candidate sends is capped, and the tester's own address space is bounded."""
    for w in pool.workers:
        limits = Path(f"/proc/{w.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
        soft = line.split()[3]
        assert soft != "unlimited" and int(soft) <= 8 << 30, line
