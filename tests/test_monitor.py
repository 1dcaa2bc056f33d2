import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import BIN, REPO, run_cmd

from llmeval import monitor
from llmeval.resolve import resolve

DOC = (REPO / "docs" / "monitor.md").read_text()


def doc_fields(section: str) -> set[str]:
    """Field names from a table in docs/monitor.md (first column, `a`, `b` cells split)."""
    body = DOC.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    fields = set()
    for line in body.splitlines():
        if line.startswith("| `"):
            fields.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return fields


def write_prompts(path: Path, n: int) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resolve(["humaneval"], limit=n)))


def fake_heartbeat(path: Path, **over) -> None:
    now = time.time()
    m = {
        "type": "metrics",
        "run_id": "generate-x",
        "stage": "generate",
        "pid": 999999,
        "host": "elsewhere",
        "slurm": None,
        "started_at": now - 100,
        "updated_at": now,
        "state": "running",
        "total": 10,
        "done": 4,
        "generated": 4,
        "cached": 0,
        "skipped": 0,
        "errors": 0,
        "output_tokens": 40,
        "prompt_tokens": 400,
        "samples_per_s": 0.04,
        "tokens_per_s": 0.4,
        "recent_samples_per_s": 0.1,
        "recent_tokens_per_s": 1.0,
        "eta_s": 60.0,
        "history": [[now - 20, 2, 20], [now - 10, 3, 30], [now, 4, 40]],
        "model": "m",
        "datasets": ["humaneval"],
        "output": None,
    }
    m.update(over)
    path.write_bytes(orjson.dumps(m))


def snap_json(*dirs, extra=()):
    out = run_cmd(["eval-monitor", *map(str, dirs), "--once", "--json", *extra])
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    return orjson.loads(line)


def test_snapshot_fields_match_the_doc(tmp_path):
    fake_heartbeat(tmp_path / "a.jsonl.metrics.json")
    snap = snap_json(tmp_path)
    assert set(snap) == doc_fields("Snapshot fields")
    (run,) = snap["runs"]
    assert set(run) == doc_fields("Run fields")
    assert set(snap["slurm"]) == doc_fields("SLURM fields") - {
        "job_id",
        "array_job_id",
        "array_task_id",
        "state",
        "name",
        "elapsed",
        "node",
        "reason",
        "run_ids",
        "log_tail",
    }
    assert (
        run["state"] == "running" and run["done"] == 4 and run["tokens_per_s_history"] == [1.0, 1.0]
    )


def test_no_nvml_is_one_clean_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    gpus = monitor.GPUs()
    assert gpus.read() == []
    assert gpus.note == "no GPU view: nvidia-ml-py is not installed (pip install 'llmeval[gpu]')"
    # pynvml installed but no driver (a CPU node): NVML's own reason, in one line.
    import types

    class NVMLError(Exception):
        pass

    broken = types.ModuleType("pynvml")

    def no_driver():
        raise NVMLError("Driver Not Loaded")

    broken.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    gpus = monitor.GPUs()
    assert gpus.read() == []
    assert gpus.note == "no GPU visible: NVML unavailable (Driver Not Loaded)"
    monkeypatch.delitem(sys.modules, "pynvml")
    # The real view on this machine, whatever it has: one line per GPU, or one note.
    snap = snap_json(tmp_path)
    assert bool(snap["gpus"]) != bool(snap["gpu_note"])
    text = run_cmd(["eval-monitor", str(tmp_path), "--once"]).stdout.decode()
    assert len([line for line in text.splitlines() if line.startswith("GPU")]) == max(
        1, len(snap["gpus"])
    )


def test_stale_heartbeat_from_another_host_is_stalled(tmp_path):
    fake_heartbeat(tmp_path / "r.jsonl.metrics.json", updated_at=time.time() - 120)
    (run,) = snap_json(tmp_path, extra=["--stall", "30"])["runs"]
    assert run["state"] == "stalled" and run["reason"].startswith("no heartbeat for 12")
    text = run_cmd(["eval-monitor", str(tmp_path), "--once"]).stdout.decode()
    assert "!!STALLED" in text
    assert all(len(line) <= 80 for line in text.splitlines())


@pytest.mark.slow
def test_two_runs_at_once_then_a_killed_one(real_model, tmp_path):
    env = {**os.environ, "LLMEVAL_HEARTBEAT_S": "0.3", "LLMEVAL_CACHE": str(tmp_path / "cache")}
    camp = tmp_path / "campaign"
    camp.mkdir()
    prompts = tmp_path / "p.jsonl"
    write_prompts(prompts, 3)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(BIN / "eval-generate"),
                str(prompts),
                "--model",
                real_model,
                "--max-tokens",
                "12",
                "--batch-size",
                "1",
                "--seed",
                str(i),
                "--no-cache",
                "-o",
                str(camp / f"run{i}.gen.jsonl"),
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    seen_running = set()
    deadline = time.time() + 240
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        for run in snap_json(camp)["runs"]:
            if run["state"] == "running":
                seen_running.add(run["output"])
                assert run["done"] <= (run["output_lines"] or 0) + 1
        time.sleep(0.5)
    assert [p.wait() for p in procs] == [0, 0]
    assert len(seen_running) == 2  # both were seen live, at the same time or in turn
    runs = {Path(r["output"]).name: r for r in snap_json(camp)["runs"]}
    assert set(runs) == {"run0.gen.jsonl", "run1.gen.jsonl"}
    for name, run in runs.items():
        lines = (camp / name).read_bytes().splitlines()
        tokens = sum(orjson.loads(x)["usage"]["completion_tokens"] for x in lines)
        assert (
            run["state"] == "finished" and run["stage"] == "generate" and run["model"] == real_model
        )
        assert run["done"] == run["generated"] == run["output_lines"] == len(lines) == 3
        assert run["output_tokens"] == tokens and run["tokens_per_s"] > 0
        assert run["datasets"] == ["humaneval"]
    # A run killed mid-way is shown as stalled (its process is gone), well within the threshold.
    write_prompts(prompts, 30)
    victim = subprocess.Popen(
        [
            sys.executable,
            str(BIN / "eval-generate"),
            str(prompts),
            "--model",
            real_model,
            "--max-tokens",
            "12",
            "--batch-size",
            "1",
            "--no-cache",
            "-o",
            str(camp / "victim.gen.jsonl"),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    while not (camp / "victim.gen.jsonl.metrics.json").exists() and victim.poll() is None:
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    t = time.time()
    runs = {Path(r["output"]).name: r for r in snap_json(camp, extra=["--stall", "30"])["runs"]}
    assert runs["victim.gen.jsonl"]["state"] == "stalled"
    assert runs["victim.gen.jsonl"]["reason"] == "process gone"
    assert time.time() - t < 30


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)
def test_live_view_in_a_real_terminal(tmp_path):
    fake_heartbeat(tmp_path / "live.jsonl.metrics.json", host="elsewhere", model="live-model")
    session = f"llmeval-test-{os.getpid()}"
    status = tmp_path / "status"
    cmd = (
        f"clear; echo BEFORE-MONITOR; {sys.executable} {BIN / 'eval-monitor'} {tmp_path} --interval 0.3; "
        f"echo EXIT=$? > {status}; sleep 30"
    )
    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd)
    try:
        screen = ""
        deadline = time.time() + 20
        while time.time() < deadline and "live-model" not in screen:
            time.sleep(0.3)
            screen = tmux("capture-pane", "-p", "-t", session)
        assert "live-model" in screen and "RUNNING" in screen and "4/10 40%" in screen
        assert "BEFORE-MONITOR" not in screen  # drawn on the alternate screen
        assert tmux("display", "-p", "-t", session, "#{alternate_on}").strip() == "1"
        time.sleep(1.0)  # a few redraws: still one copy of the view, in place
        screen = tmux("capture-pane", "-p", "-t", session)
        assert screen.count("live-model") == 1
        tmux("send-keys", "-t", session, "C-c")
        deadline = time.time() + 10
        while time.time() < deadline and not status.exists():
            time.sleep(0.1)
        assert status.read_text().strip() == "EXIT=0"
        assert tmux("display", "-p", "-t", session, "#{alternate_on}").strip() == "0"
        assert tmux("display", "-p", "-t", session, "#{cursor_flag}").strip() == "1"
        assert "BEFORE-MONITOR" in tmux(
            "capture-pane", "-p", "-t", session
        )  # the old screen is back
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
