import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from conftest import FIXTURES, run_cmd

from llmeval import campaign as campaign_mod
from llmeval.campaign import (
    CampaignError,
    load_campaign,
    model_resources,
    render,
    resource_profiles,
    status,
    step,
    steps,
)

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
    files = {"summary.jsonl", "summary.jsonl.done", "summary.md", "report.html"}
    for s in steps(c):
        if s.stage == "resolve":
            name = str(s.target.relative_to(c.root))
            files |= {name, name + ".done"}
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


def test_sbatch_arrays_per_resource_profile(tmp_path):
    c = load_campaign("campaigns/h100-specialists.toml", str(tmp_path))
    (one, small), (four, big) = resource_profiles(c)
    assert small == [0, 1] and big == [2]  # the 70B model at TP 4 gets an array of its own
    assert (
        one["gpus"] == 1 and four["gpus"] == 4 and one["partition"] == four["partition"] == "h100"
    )
    text = render(c, stage="pipeline", tasks=big, resources=four)
    assert "#SBATCH --gpus=4" in text and "#SBATCH --array=2%4" in text
    text = render(c, stage="pipeline", tasks=small, resources=one)
    assert "#SBATCH --gpus=1" in text and "#SBATCH --array=0,1%4" in text
    assert "#SBATCH --partition=h100" in text
    assert "#SBATCH --requeue" in text and '--task "$SLURM_ARRAY_TASK_ID"' in text
    shown = run_cmd(
        ["eval-campaign", "render", "campaigns/h100-specialists.toml", "--results", str(tmp_path)]
    )
    assert shown.returncode == 0
    out = shown.stdout.decode()
    assert out.count("#SBATCH --gpus=") == 2 and "# ---- array 2: tasks 2" in out
    cpu = load_campaign("campaigns/demo.toml", str(tmp_path))
    ((res, ids),) = resource_profiles(cpu)
    text = render(cpu, stage="pipeline")
    assert "--gpus" not in text and "--gres" not in text and ids == [0, 1]
    assert "#SBATCH --cpus-per-task=2" in text and "#SBATCH --mem=6G" in text


def test_model_resources_follow_parallelism_and_own_requests(tmp_path):
    camp = tmp_path / "c.toml"
    camp.write_text(
        """
preset = "h100"
datasets = ["humaneval"]
[[models]]
label = "pp"
model = "org/a"
engine = { tensor_parallel_size = 2, vllm = { pipeline_parallel_size = 2 } }
[[models]]
label = "own"
model = "org/b"
tensor_parallel_size = 8
slurm = { gpus = 2, mem = "200G", partition = "big" }
[[models]]
label = "served"
model = "m"
backend = "openai"
base_url = "http://127.0.0.1:1/v1"
[slurm]
partition = "h100"
"""
    )
    c = load_campaign(str(camp), str(tmp_path))
    pp, own, served = (model_resources(c, m) for m in c.models)
    assert pp["gpus"] == 4 and pp["partition"] == "h100"
    assert own["gpus"] == 2 and own["mem"] == "200G" and own["partition"] == "big"
    assert served["gpus"] == 0
    assert [ids for _, ids in resource_profiles(c)] == [[0], [1], [2]]


def capture_generate(c, label, dataset, monkeypatch):
    """The eval-generate command a step would run (prompts stamped as resolved)."""
    m = c.model(label)
    prompts = c.prompts_of(m, dataset)
    prompts.parent.mkdir(parents=True, exist_ok=True)
    prompts.write_text("")
    prompts.with_name(prompts.name + ".done").touch()
    seen = []
    monkeypatch.setattr(campaign_mod, "_run", lambda cmd, ok=(0,): seen.append(cmd))
    step(c, "generate", label, dataset)
    (cmd,) = seen
    return cmd


def flags(cmd, name):
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == name]


def test_engine_settings_and_prompting_reach_eval_generate(tmp_path, monkeypatch):
    c = load_campaign("campaigns/h100-specialists.toml", str(tmp_path))
    cmd = capture_generate(c, "llama-3.1-70b", "gsm8k", monkeypatch)
    assert flags(cmd, "--engine") == [
        "max_num_seqs=256",
        "tensor_parallel_size=4",
        "max_model_len=16384",
    ]
    assert cmd[3] == str(tmp_path / "specialists" / "prompts" / "gsm8k.chat.jsonl")
    assert flags(cmd, "--preset") == ["h100"] and flags(cmd, "-n") == ["10"]
    cmd = capture_generate(c, "biomistral-7b", "medqa", monkeypatch)
    assert flags(cmd, "--engine") == ["max_model_len=4096"]
    assert cmd[3] == str(tmp_path / "specialists" / "prompts" / "medqa.jsonl")  # not a chat model
    # The flags eval-generate gets are the ones it accepts.
    from llmeval.backends.options import apply_flags
    from llmeval.presets import load_preset

    p = apply_flags(load_preset("h100"), ["max_num_seqs=256", "tensor_parallel_size=4"], "vllm")
    assert p["engine"]["tensor_parallel_size"] == 4 and p["engine"]["max_num_seqs"] == 256


def test_chat_and_completion_prompts_per_model_and_system_prompt(tmp_path, monkeypatch):
    camp = tmp_path / "c.toml"
    camp.write_text(
        f"""
datasets = ["gsm8k"]
data_dirs = ["{FIXTURES}"]
limit = 1
system_prompt = "Think step by step."
[[models]]
label = "base"
model = "org/base"
[[models]]
label = "instruct"
model = "org/instruct"
chat = true
engine = {{ trust_remote_code = true, hf = {{ attn_implementation = "sdpa" }} }}
[[models]]
label = "plain"
model = "org/plain"
system_prompt = ""
"""
    )
    c = load_campaign(str(camp), str(tmp_path))
    sys_prompt = "Think step by step."
    assert c.prompt_sets() == [
        ("gsm8k", False, None),
        ("gsm8k", False, sys_prompt),
        ("gsm8k", True, sys_prompt),
    ]
    base = capture_generate(c, "base", "gsm8k", monkeypatch)
    inst = capture_generate(c, "instruct", "gsm8k", monkeypatch)
    plain = capture_generate(c, "plain", "gsm8k", monkeypatch)
    assert [Path(cmd[3]).name.split(".")[1:-1] for cmd in (base, inst, plain)] == [
        [f"sys-{c.prompts('x', False, sys_prompt).name.split('-')[1][:10]}"],
        ["chat", f"sys-{c.prompts('x', False, sys_prompt).name.split('-')[1][:10]}"],
        [],
    ]
    assert flags(inst, "--engine") == ["trust_remote_code=true", 'hf.attn_implementation="sdpa"']
    assert "--system-prompt" not in base + inst + plain  # the prompts carry it
    # Each prompt file is resolved as its models need it, by eval-resolve itself.
    monkeypatch.undo()
    for chat, system in ((False, None), (False, sys_prompt), (True, sys_prompt)):
        done = c.prompts("gsm8k", chat, system)
        done.with_name(done.name + ".done").unlink()
        assert step(c, "resolve", dataset="gsm8k", chat=chat, system=system)
    (plain_rec,) = records(c.prompts("gsm8k"))
    (base_rec,) = records(c.prompts("gsm8k", False, sys_prompt))
    (chat_rec,) = records(c.prompts("gsm8k", True, sys_prompt))
    assert base_rec["prompt"] == sys_prompt + "\n\n" + plain_rec["prompt"]
    assert chat_rec["messages"][0] == {"role": "system", "content": sys_prompt}
    mk = campaign_mod.makefile(c)
    assert "--stage resolve --dataset gsm8k --chat --system 'Think step by step.'\n" in mk
    assert "--stage resolve --dataset gsm8k\n" in mk
    with pytest.raises(CampaignError, match="no model of the campaign reads chat prompts of gsm8k"):
        step(c, "resolve", dataset="gsm8k", chat=True)


def test_bad_engine_key_in_a_campaign_is_one_line(tmp_path):
    camp = tmp_path / "c.toml"
    camp.write_text(
        'datasets = ["humaneval"]\n[[models]]\nmodel = "x"\nengine = { max_num_seq = 4 }\n'
    )
    out = run_cmd(["eval-campaign", "plan", str(camp)])
    assert out.returncode == 1
    (line,) = out.stderr.decode().splitlines()
    assert line.startswith(
        f"eval-campaign: error: {camp}: unknown key models[0].engine.max_num_seq (known: "
    )
    camp.write_text(
        'datasets = ["humaneval"]\n[[models]]\nmodel = "x"\nengine = { enforce_eager = "no" }\n'
    )
    out = run_cmd(["eval-campaign", "plan", str(camp)])
    assert out.stderr.decode().strip() == (
        f"eval-campaign: error: {camp}: key engine.vllm.enforce_eager: expected bool, got str 'no'"
    )


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


@pytest.mark.slurm
def test_models_with_different_resources_run_as_separate_arrays(
    slurm_cluster, tmp_path, monkeypatch
):
    """Per-model requests on a real cluster: two resource profiles, two arrays, one aggregate."""
    monkeypatch.setenv("LLMEVAL_CACHE", str(tmp_path / "cache"))
    preset = tmp_path / "p.toml"
    preset.write_text('inherits = "cpu"\n[slurm]\ncpus_per_task = 1\nmem = "1G"\n')
    camp = tmp_path / "r.toml"
    camp.write_text(
        f"""
name = "r"
preset = "{preset}"
datasets = ["gsm8k"]
data_dirs = ["{FIXTURES}"]
limit = 2
[[models]]
label = "small"
model = "reference"
backend = "reference"
engine = {{ max_model_len = 2048 }}
[[models]]
label = "large"
model = "reference"
backend = "reference"
chat = true
slurm = {{ mem = "2G" }}
[slurm]
time = "00:10:00"
"""
    )
    output = tmp_path / "results"
    jobs = submit(camp, output)
    ids = jobs["pipeline"].split(",")
    assert len(ids) == 2 and [a["tasks"] for a in jobs["arrays"]] == [[0], [1]]
    assert [a["mem"] for a in jobs["arrays"]] == ["1G", "2G"]
    wait_jobs([*ids, jobs["aggregate"]])
    assert task_states(ids[0]) == {"0": "COMPLETED"} and task_states(ids[1]) == {"1": "COMPLETED"}
    assert "COMPLETED" in task_states(jobs["aggregate"]).values()
    root = output / "r"
    assert tree(root) == expected_tree(camp, output)
    run = records(root / "small" / "gsm8k.gen.jsonl.runs.jsonl")[0]
    assert run["argv"][run["argv"].index("--engine") + 1] == "max_model_len=2048"
    assert run["preset"]["engine"]["max_model_len"] == 2048
    large = records(root / "large" / "gsm8k.gen.jsonl")
    assert all(r["messages"] for r in large) and not any(
        r.get("messages") for r in records(root / "small" / "gsm8k.gen.jsonl")
    )
    script = (root / "slurm" / "pipeline-1.sbatch").read_text()
    assert "#SBATCH --mem=2G" in script and "#SBATCH --array=1" in script
    # eval-campaign status names each model's array task and its SLURM state.
    shown = run_cmd(["eval-campaign", "status", str(camp), "--results", str(output)])
    rows = [orjson.loads(x) for x in shown.stdout.splitlines()]
    assert [
        (r["model"], r["slurm"]["pipeline"]["job_id"], r["slurm"]["pipeline"]["state"])
        for r in rows
    ] == [
        ("small", f"{ids[0]}_0", "completed"),
        ("large", f"{ids[1]}_1", "completed"),
    ]


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


def parse_makefile(text: str) -> dict[str, tuple[list[str], str]]:
    rules, lines = {}, text.splitlines()
    for i, line in enumerate(lines):
        if ":" in line and not line.startswith(("\t", "#", ".")):
            target, deps = line.split(":", 1)
            command = lines[i + 1].strip() if i + 1 < len(lines) else ""
            rules[target] = (deps.split(), command)
    return rules


def test_one_step_graph_for_make_local_runs_and_slurm(tmp_path, monkeypatch):
    """The makefile, `eval-campaign step` and an array task (`run --task`) all read steps()."""
    c = load_campaign(str(campaign_file(tmp_path)), str(tmp_path / "out"))
    plan = steps(c)
    assert [(s.stage, s.model, s.dataset) for s in plan] == [
        ("resolve", None, "gsm8k"),
        ("resolve", None, "humaneval"),
        ("generate", "greedy", "humaneval"),
        ("score", "greedy", "humaneval"),
        ("generate", "greedy", "gsm8k"),
        ("score", "greedy", "gsm8k"),
        ("generate", "sampled", "humaneval"),
        ("score", "sampled", "humaneval"),
        ("generate", "sampled", "gsm8k"),
        ("score", "sampled", "gsm8k"),
        ("aggregate", None, None),
    ]
    rules = parse_makefile(campaign_mod.makefile(c))
    assert rules.pop("all") == ([str(plan[-1].stamp)], "")
    assert set(rules) == {str(s.stamp) for s in plan}
    for s in plan:
        deps, command = rules[str(s.stamp)]
        assert deps == [str(n) + ".done" for n in s.needs]
        assert command.endswith(" ".join(s.selector()))
    # An array task runs its model's steps in the graph's order, what they need first, once.
    ran = []

    def fake_run(cmd, ok=(0,)):
        ran.append(cmd[2])
        Path(cmd[cmd.index("-o") + 1]).write_text("")

    monkeypatch.setattr(campaign_mod, "_run", fake_run)
    campaign_mod.run_task(c, 1)
    assert ran == ["llmeval.resolve", "llmeval.generate", "llmeval.score"] + [
        "llmeval.resolve",
        "llmeval.generate",
        "llmeval.score",
    ]
    assert {s.target for s in plan if s.stamp.exists()} == {
        s.target for s in plan if s.model in ("sampled", None) and s.stage != "aggregate"
    }
    ran.clear()
    campaign_mod.run_task(c, 1)
    assert ran == []
    with pytest.raises(
        CampaignError,
        match="cannot aggregate: 2 files it reads are not complete, e.g. .*greedy.humaneval.scored.jsonl",
    ):
        step(c, "aggregate")
    assert ran == []  # aggregate never generates


def test_a_step_the_campaign_does_not_have(tmp_path):
    camp = campaign_file(tmp_path)
    c = load_campaign(str(camp), str(tmp_path / "out"))
    with pytest.raises(
        CampaignError, match="model greedy does not run mbpp .its datasets: humaneval, gsm8k"
    ):
        step(c, "generate", "greedy", "mbpp")
    out = run_cmd(["eval-campaign", "step", str(camp), "--stage", "score", "--dataset", "gsm8k"])
    assert out.returncode == 2
    assert out.stderr.decode().strip() == (
        "eval-campaign: error: step --stage score needs --model LABEL and --dataset NAME"
    )
    out = run_cmd(["eval-campaign", "step", str(camp), "--stage", "judge"])
    assert (
        out.returncode == 2
        and b"step --stage must be one of resolve, generate, score, aggregate" in out.stderr
    )


def test_status_shows_each_tasks_latest_slurm_state(tmp_path, monkeypatch):
    from llmeval import slurm

    c = load_campaign(str(campaign_file(tmp_path)), str(tmp_path / "out"))
    assert all("slurm" not in row for row in status(c))  # never submitted
    c.root.mkdir(parents=True)
    subs = [
        {"arrays": [{"tasks": [0, 1], "pipeline": "100"}]},
        {"arrays": [{"tasks": [1], "pipeline": "200"}]},  # task 1 re-submitted
    ]
    (c.root / "slurm_jobs.json").write_bytes(orjson.dumps({"submissions": subs}))
    asked = []

    def squeue(job_ids, timeout=5.0):
        asked.append(job_ids)
        tasks = [
            ("100_0", "100", "0", "completed"),
            ("200_1", "200", "1", "running"),
            ("100_1", "100", "1", "cancelled"),
        ]
        return {
            "available": True,
            "note": None,
            "tasks": [
                {"job_id": j, "array_job_id": a, "array_task_id": t, "state": st}
                for j, a, t, st in tasks
            ],
        }

    monkeypatch.setattr(slurm, "squeue_tasks", squeue)
    rows = status(c)
    assert asked == [{"100", "200"}]
    assert {(r["model"], r["dataset"]): r["slurm"] for r in rows} == {
        (m, d): {"pipeline": {"state": st, "job_id": j}}
        for m, st, j in (("greedy", "completed", "100_0"), ("sampled", "running", "200_1"))
        for d in ("humaneval", "gsm8k")
    }
    monkeypatch.setattr(
        slurm,
        "squeue_tasks",
        lambda ids, timeout=5.0: {"available": False, "note": "squeue not found", "tasks": []},
    )
    assert {str(r["slurm"]) for r in status(c)} == {"{'note': 'squeue not found'}"}


@pytest.mark.slow
def test_biomedical_campaign_end_to_end(real_model, tmp_path, monkeypatch):
    """`make campaign CAMPAIGN=campaigns/biomedical.toml` on the fixtures with the embedded
    model: the model-dataset mapping as data, a per-model system prompt."""
    monkeypatch.setenv("LLMEVAL_CACHE", str(tmp_path / "cache"))
    camp, output = Path("campaigns/biomedical.toml"), tmp_path / "results"
    done = subprocess.run(
        ["make", "campaign", f"CAMPAIGN={camp}", f"RESULTS={output}"],
        capture_output=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    root = output / "biomedical"
    assert tree(root) == expected_tree(camp, output)
    c = load_campaign(str(camp), str(output))
    pairs = {(m.label, d) for m in c.models for d in m.datasets}
    assert len(pairs) == 13 and {d for m, d in pairs if m == "gemma3-270m-exam"} == {
        "medqa",
        "medmcqa",
        "pubmedqa",
    }
    for label, ds in pairs:
        gen = records(root / label / f"{ds}.gen.jsonl")
        scored = records(root / label / f"{ds}.scored.jsonl")
        assert len(gen) == len(scored) >= 1 and all(r["error"] is None for r in gen)
        assert all(r["score"]["status"] in ("pass", "fail", "no_answer") for r in scored)
        assert all(r["messages"] is None and r["prompt"] for r in gen)
        system = c.model(label).system_prompt
        if system:  # the prompts the model read were resolved with its system prompt
            assert all(r["prompt"].startswith(system + "\n\n") for r in gen)
            plain = {r["id"]: r["prompt"] for r in records(c.prompts(ds))}
            assert all(r["prompt"] == system + "\n\n" + plain[r["id"]] for r in gen)
        ll = c.model(label).loglikelihood
        assert ll == (
            frozenset(ds for m, ds in pairs if m == "gemma3-270m")
            if label == "gemma3-270m"
            else frozenset()
        )
        if ds in ll:  # scored by the log-likelihood of each choice, not by generated text
            assert all(
                r["finish_reason"] == "loglikelihood" and len(r["choice_logprobs"]) >= 3
                for r in gen
            )
        else:
            assert all(r["completion"] is not None and "choice_logprobs" not in r for r in gen)
    summary = records(root / "summary.jsonl")
    metrics = {(r["model"], r["dataset"]) for r in summary if r["type"] == "metric"}
    assert metrics == pairs
    acc = {
        (r["model"], r["dataset"])
        for r in summary
        if r["type"] == "metric" and r["metric"] in ("acc", "acc_norm")
    }
    assert acc == {p for p in pairs if p[0] == "gemma3-270m"}
    assert "gemma3-270m-exam" in (root / "report.html").read_text()


@pytest.mark.parametrize(
    "body, line",
    [
        ("system_prompt = 5\n", "key models[0].system_prompt: expected str, got int 5"),
        ('chat = "yes"\n', "key models[0].chat: expected bool, got str 'yes'"),
        (
            'datasets = "gsm8k"\n',
            "key models[0].datasets: expected a list of strings, got str 'gsm8k'",
        ),
        ('label = ["a"]\n', "key models[0].label: expected str, got list ['a']"),
        ("slurm = 2\n", "key models[0].slurm: expected a table, got int 2"),
    ],
)
def test_a_mistyped_campaign_key_is_one_line(tmp_path, body, line):
    camp = tmp_path / "c.toml"
    camp.write_text(f'datasets = ["gsm8k"]\n[[models]]\nmodel = "x"\n{body}')
    out = run_cmd(["eval-campaign", "plan", str(camp)])
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode().splitlines() == [f"eval-campaign: error: {camp}: {line}"]


def test_loglikelihood_reaches_the_datasets_that_rank_choices(tmp_path, monkeypatch):
    camp = tmp_path / "c.toml"
    camp.write_text(
        f"""
datasets = ["mmlu", "gsm8k", "pubmedqa"]
data_dirs = ["{FIXTURES}"]
loglikelihood = true
[[models]]
label = "ll"
model = "org/ll"
[[models]]
label = "gen"
model = "org/gen"
loglikelihood = false
"""
    )
    c = load_campaign(str(camp), str(tmp_path))
    assert c.model("ll").loglikelihood == {"mmlu", "pubmedqa"}  # gsm8k is generated
    assert c.model("gen").loglikelihood == frozenset()
    got = {
        (label, ds): "--loglikelihood" in capture_generate(c, label, ds, monkeypatch)
        for label in ("ll", "gen")
        for ds in ("mmlu", "gsm8k", "pubmedqa")
    }
    assert got == {
        ("ll", "mmlu"): True,
        ("ll", "gsm8k"): False,
        ("ll", "pubmedqa"): True,
        ("gen", "mmlu"): False,
        ("gen", "gsm8k"): False,
        ("gen", "pubmedqa"): False,
    }
