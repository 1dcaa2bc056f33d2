"""llmeval/telemetry.py: heartbeat files and where run records go."""

import time

import orjson

from llmeval import paths, telemetry


def run(run_id="generate-1"):
    return {"run_id": run_id, "stage": "generate", "host": "h", "slurm": None}


def test_interval_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMEVAL_HEARTBEAT_S", "0.25")
    assert telemetry.heartbeat_interval() == 0.25
    hb = telemetry.Heartbeat(tmp_path / "m.json", run=run(), info={})
    assert hb.interval == 0.25
    for bad in ("0", "-3", "soon", ""):
        monkeypatch.setenv("LLMEVAL_HEARTBEAT_S", bad)
        assert telemetry.heartbeat_interval() == telemetry.DEFAULT_INTERVAL
    monkeypatch.delenv("LLMEVAL_HEARTBEAT_S")
    assert telemetry.heartbeat_interval() == 5.0


def test_updates_are_throttled_and_finish_always_writes(tmp_path):
    path = tmp_path / "m.json"
    hb = telemetry.Heartbeat(path, run=run(), info={"model": "m"}, interval=3600)
    first = orjson.loads(path.read_bytes())
    assert first["state"] == "running" and first["done"] == 0 and first["model"] == "m"
    hb.update(done=5, generated=5, output_tokens=50)
    assert orjson.loads(path.read_bytes())["done"] == 0  # within the interval: not rewritten
    hb.finish()
    last = orjson.loads(path.read_bytes())
    assert last["state"] == "finished" and last["done"] == 5 and last["finished_at"] >= first["started_at"]
    assert not list(tmp_path.glob(".*.tmp"))  # written by rename, no temp file left


def test_rates_count_generated_work_only(tmp_path):
    hb = telemetry.Heartbeat(tmp_path / "m.json", run=run(), info={}, interval=0)
    hb.started -= 10  # ten seconds ago
    hb.update(done=20, generated=10, cached=10, output_tokens=100, total=40)
    s = orjson.loads((tmp_path / "m.json").read_bytes())
    assert abs(s["samples_per_s"] - 1.0) < 0.05 and abs(s["tokens_per_s"] - 10.0) < 0.5
    # Two writes a moment apart: no "recent" rate from them, the average instead.
    assert s["recent_samples_per_s"] == s["samples_per_s"] and s["eta_s"] == 20.0


def test_run_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMEVAL_HOME", str(tmp_path / "home"))
    out = str(tmp_path / "gen.jsonl")
    assert telemetry.run_paths(out, None, "r1") == (
        tmp_path / "gen.jsonl.metrics.json",
        tmp_path / "gen.jsonl.runs.jsonl",
    )
    assert telemetry.run_paths(out, str(tmp_path / "d"), "r1") == (
        tmp_path / "d" / "metrics.json",
        tmp_path / "d" / "runs.jsonl",
    )
    for nowhere in (None, "-", "/dev/null"):
        assert telemetry.run_paths(nowhere, None, "r1") == (
            paths.runs_dir() / "r1" / "metrics.json",
            paths.runs_dir() / "r1" / "runs.jsonl",
        )
    assert paths.runs_dir() == tmp_path / "home" / "runs"


def test_start_run_appends_the_run_record(tmp_path):
    out = str(tmp_path / "s.jsonl")
    for i in range(2):
        hb = telemetry.start_run(run(f"score-{i}"), out, None, {"output": out})
        hb.finish()
    runs = [orjson.loads(x) for x in (tmp_path / "s.jsonl.runs.jsonl").read_bytes().splitlines()]
    assert [r["run_id"] for r in runs] == ["score-0", "score-1"]
    m = orjson.loads((tmp_path / "s.jsonl.metrics.json").read_bytes())
    assert m["run_id"] == "score-1" and m["updated_at"] <= time.time()
