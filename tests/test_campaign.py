import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from conftest import FIXTURES, run_cmd

from llmeval.campaign import load_campaign, render, slurm_resources

CAMPAIGN = """
name = "{name}"
preset = "{preset}"
datasets = ["humaneval", "gsm8k"]
data_dirs = ["{fixtures}"]
limit = {limit}
max_tokens = 12

[[models]]
label = "greedy"
model = "gemma3-270m"
temperature = 0.0

[[models]]
label = "sampled"
model = "gemma3-270m"
temperature = 0.8
seed = 1

[slurm]
cpus_per_task = 1
mem = "3G"
time = "00:20:00"
max_parallel = 2
"""


def campaign_file(tmp_path: Path, name: str = "t", limit: int = 2, batch_size: int = 8) -> Path:
    preset = tmp_path / "p.toml"
    preset.write_text(
        f'inherits = "cpu"\n[engine]\nbatch_size = {batch_size}\n[slurm]\ncpus_per_task = 1\n'
        'mem = "3G"\n'
    )
    path = tmp_path / f"{name}.toml"
    path.write_text(CAMPAIGN.format(name=name, preset=preset, fixtures=FIXTURES, limit=limit))
    return path


def expected_tree(camp: Path, output: Path) -> set[str]:
    c = load_campaign(str(camp), str(output))
    files = {"summary.jsonl", "summary.jsonl.done", "summary.md"}
    for d in c.datasets():
        files |= {f"prompts/{d}.jsonl", f"prompts/{d}.jsonl.done"}
    for m in c.models:
        for d in m.datasets:
            for kind in ("gen", "scored"):
                base = f"{m.label}/{d}.{kind}.jsonl"
                files |= {base, base + ".done", base + ".metrics.json", base + ".runs.jsonl"}
    return files


def tree(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and p.parts[len(root.parts)] not in ("logs", "slurm")
        and p.name != "slurm_jobs.json"
        and p.name != "campaign.mk"
    }


def records(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_category_mapping_and_unknown_keys(tmp_path):
    c = load_campaign("campaigns/h100-specialists.toml", str(tmp_path))
    pairs = {(m.label, d) for m in c.models for d in m.datasets}
    assert ("qwen2.5-coder-7b", "humaneval") in pairs and ("qwen2.5-coder-7b", "medqa") not in pairs
    biomedical = {
        "medqa",
        "medqa_5options",
        "medmcqa",
        "pubmedqa",
        "mmlu_anatomy",
        "mmlu_clinical_knowledge",
        "mmlu_college_biology",
        "mmlu_college_medicine",
        "mmlu_medical_genetics",
        "mmlu_professional_medicine",
    }
    assert {d for m, d in pairs if m == "biomistral-7b"} == biomedical
    assert {d for m, d in pairs if m == "llama-3.1-70b"} == {
        "humaneval",
        "mbpp",
        "gsm8k",
        "mmlu",
        *biomedical,
    }
    bad = tmp_path / "bad.toml"
    bad.write_text('datasets = ["humaneval"]\nmodles = 1\n[[models]]\nmodel = "x"\n')
    out = run_cmd(["eval-campaign", "plan", str(bad)])
    assert out.returncode == 1 and f"{bad}: unknown key modles".encode() in out.stderr


def test_sbatch_renders_gpus_for_h100_and_none_for_cpu(tmp_path):
    gpu = render(load_campaign("campaigns/h100-specialists.toml", str(tmp_path)), stage="pipeline")
    assert "#SBATCH --gpus=4" in gpu  # the array asks for the largest model's tensor parallelism
    assert "#SBATCH --partition=h100" in gpu and "#SBATCH --array=0-2%4" in gpu
    assert "#SBATCH --requeue" in gpu and '--task "$SLURM_ARRAY_TASK_ID"' in gpu
    cpu = render(load_campaign("campaigns/demo.toml", str(tmp_path)), stage="pipeline")
    assert "--gpus" not in cpu and "--gres" not in cpu
    assert "#SBATCH --cpus-per-task=2" in cpu and "#SBATCH --mem=6G" in cpu
    single = load_campaign("campaigns/h100-specialists.toml", str(tmp_path))
    single.models = single.models[:1]
    assert slurm_resources(single)["gpus"] == 1


def squeue_active(job_ids: list[str]) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"], capture_output=True, text=True
    )
    return [
        line
        for line in out.stdout.splitlines()
        if line.split()[1] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
    ]


def wait_jobs(job_ids: list[str], timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while squeue_active(job_ids):
        assert time.time() < deadline, f"jobs still active: {squeue_active(job_ids)}"
        time.sleep(1)


def task_states(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%K %T"], capture_output=True, text=True
    )
    return dict(line.split() for line in out.stdout.splitlines())


def submit(camp: Path, output: Path, *extra: str) -> dict:
    out = run_cmd(["eval-campaign", "submit", str(camp), "--results", str(output), *extra])
    assert out.returncode == 0, out.stderr.decode()
    return orjson.loads(out.stdout)


@pytest.mark.slurm
@pytest.mark.slow
def test_campaign_as_a_slurm_array(slurm_cluster, real_model, tmp_path, monkeypatch):
    from llmeval.models import materialize, resolve_model

    materialize(resolve_model(real_model))  # convert once, before two tasks race for it
    monkeypatch.setenv("LLMEVAL_CACHE", str(tmp_path / "cache"))
    camp, output = campaign_file(tmp_path), tmp_path / "results"
    jobs = submit(camp, output)
    wait_jobs([jobs["pipeline"], jobs["aggregate"]])
    root = output / "t"
    assert task_states(jobs["pipeline"]) == {"0": "COMPLETED", "1": "COMPLETED"}
    assert tree(root) == expected_tree(camp, output)
    for label in ("greedy", "sampled"):
        for ds in ("humaneval", "gsm8k"):
            gen, scored = (
                records(root / label / f"{ds}.gen.jsonl"),
                records(root / label / f"{ds}.scored.jsonl"),
            )
            assert len(gen) == len(scored) == 2 and {r["model"] for r in gen} == {label}
            assert all("status" in r["score"] for r in scored)
            run = records(root / label / f"{ds}.gen.jsonl.runs.jsonl")[0]
            assert run["slurm"]["array_job_id"] == jobs["pipeline"]
    summary = records(root / "summary.jsonl")
    assert {(r["model"], r["dataset"]) for r in summary if r["type"] == "metric"} == {
        (m, d) for m in ("greedy", "sampled") for d in ("humaneval", "gsm8k")
    }
    assert {(r["model_a"], r["model_b"]) for r in summary if r["type"] == "comparison"} == {
        ("greedy", "sampled")
    }
    assert list((root / "logs").glob("llmeval-t-pipeline-*_0.out"))
    # eval-monitor maps the array tasks to their runs.
    snap = orjson.loads(run_cmd(["eval-monitor", str(root), "--once", "--json"]).stdout)
    assert snap["slurm"]["available"] and {t["state"] for t in snap["slurm"]["tasks"]} == {
        "completed"
    }


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_task_resubmitted_resumes(slurm_cluster, real_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMEVAL_CACHE", str(tmp_path / "cache"))
    camp, output = campaign_file(tmp_path, name="c", limit=5, batch_size=1), tmp_path / "results"
    jobs = submit(camp, output)
    victim = output / "c" / "sampled" / "humaneval.gen.jsonl"
    deadline = time.time() + 300
    while not (victim.exists() and victim.read_bytes().count(b"\n") >= 1):
        assert time.time() < deadline and squeue_active([jobs["pipeline"]]), (
            "task 1 never started writing"
        )
        time.sleep(0.2)
    subprocess.run(["scancel", f"{jobs['pipeline']}_1"], check=True)
    wait_jobs([jobs["pipeline"], jobs["aggregate"]])
    states = task_states(jobs["pipeline"])
    assert states["1"] == "CANCELLED" and states["0"] == "COMPLETED"
    assert "CANCELLED" in "".join(
        task_states(jobs["aggregate"]).values()
    )  # its afterok can never hold
    before = victim.read_bytes().count(b"\n")
    assert 1 <= before < 5
    again = submit(camp, output, "--tasks", "1")
    wait_jobs([again["pipeline"], again["aggregate"]])
    assert task_states(again["pipeline"]) == {"1": "COMPLETED"}
    root = output / "c"
    assert tree(root) == expected_tree(camp, output)
    for label in ("greedy", "sampled"):
        for ds, size in (("humaneval", 5), ("gsm8k", 3)):  # the gsm8k fixture has 3 problems
            keys = [r["key"] for r in records(root / label / f"{ds}.gen.jsonl")]
            assert len(keys) == len(set(keys)) == size
    runs = records(Path(str(victim) + ".runs.jsonl"))
    assert len(runs) == 2  # the cancelled run and the resumed one
    metrics = orjson.loads(Path(str(victim) + ".metrics.json").read_bytes())
    assert metrics["state"] == "finished" and metrics["run_id"] == runs[1]["run_id"]
    assert metrics["skipped"] + metrics["cached"] >= before and metrics["generated"] == 5 - (
        metrics["skipped"] + metrics["cached"]
    )
    # Finished steps were not run again: one run record each.
    assert len(records(root / "greedy" / "humaneval.gen.jsonl.runs.jsonl")) == 1
    assert (root / "summary.jsonl.done").exists()


@pytest.mark.slow
def test_make_campaign_interrupted_then_resumed(real_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMEVAL_CACHE", str(tmp_path / "cache"))
    camp, output = campaign_file(tmp_path, name="m", limit=3, batch_size=1), tmp_path / "local"
    mk = (
        run_cmd(["eval-campaign", "makefile", str(camp), "--results", str(output)])
        .stdout.decode()
        .strip()
    )
    first = output / "m" / "greedy" / "humaneval.gen.jsonl"
    proc = subprocess.Popen(
        ["make", "-f", mk],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (first.exists() and first.read_bytes().count(b"\n") >= 1):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    proc.wait()
    before = first.read_bytes().count(b"\n")
    assert not Path(str(first) + ".done").exists() and before < 3
    done = subprocess.run(["make", "-f", mk], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    root = output / "m"
    assert tree(root) == expected_tree(camp, output)
    keys = [r["key"] for r in records(first)]
    assert len(keys) == len(set(keys)) == 3
    metrics = orjson.loads(Path(str(first) + ".metrics.json").read_bytes())
    assert metrics["skipped"] + metrics["cached"] >= before
    again = subprocess.run(["make", "-f", mk], capture_output=True, timeout=60)
    assert again.returncode == 0 and b"Nothing to be done" in again.stdout
