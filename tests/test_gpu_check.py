"""bench/gpu_check.sh, the GPU check, dry-run on the CPU with a two-layer model: it is known to run."""

import json
import os
import subprocess

import pytest
from conftest import REPO


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "GPU_CHECK_CPU": "1", "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)],
        capture_output=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cpu" and results["model_shape"] == "tiny (2 layers)"
    assert results["batch_size"] == 4 and results["prompts"] == 6
    for key in ("plain_generate_loop", "hf_backend"):
        assert results[key]["output_tokens"] == 6 * 8 and results[key]["tokens_per_s"] > 0
    assert results["hf_backend"]["errors"] == []
    assert results["identical_greedy_outputs"] is True
    e = results["eval_generate"]
    assert e["exit_status"] == 0 and e["records"] == 6 and e["errors"] == 0
    assert e["monitor_snapshots"] >= 1 and "stalled" not in e["monitor_states"]
    assert e["monitor_gpu_names"] == []  # no GPU here: the check itself does not require one on CPU
    snap = json.loads((out / "monitor-idle.json").read_text())
    assert snap["type"] == "snapshot"
    assert "hf backend speed:" in (out / "summary.md").read_text()
    # The random model's folder (a temp dir) is gone; everything measured is in OUT.
    assert not list(tmp_path.glob("llmeval-gpu-check-*"))
    assert {p.name for p in out.iterdir()} >= {
        "results.json", "summary.md", "prompts.jsonl", "gen.jsonl", "gen.jsonl.metrics.json",
        "monitor-during.jsonl", "monitor-idle.json", "eval-generate.stderr",
    }
