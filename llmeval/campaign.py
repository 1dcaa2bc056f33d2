"""eval-campaign: models x datasets as SLURM job arrays or Makefile targets.

    eval-campaign plan campaigns/demo.toml        # the tasks and their files
    eval-campaign submit campaigns/demo.toml      # sbatch the array (+ aggregate job), print job ids
    eval-campaign status campaigns/demo.toml      # progress per (model, dataset), SLURM states
    eval-campaign run campaigns/demo.toml --task 0    # what array task 0 runs (resumable)
    make campaign CAMPAIGN=campaigns/demo.toml    # the same campaign locally, with make

Result tree (one file per model, dataset and stage)::

    <output>/<campaign>/prompts/<dataset>.jsonl            eval-resolve (<dataset>.chat.jsonl for chat models)
    <output>/<campaign>/<model>/<dataset>.gen.jsonl        eval-generate (+ .metrics.json, .runs.jsonl)
    <output>/<campaign>/<model>/<dataset>.scored.jsonl     eval-score    (+ .metrics.json, .runs.jsonl)
    <output>/<campaign>/summary.jsonl, summary.md          eval-aggregate --compare
    <output>/<campaign>/logs/, slurm/, slurm_jobs.json     SLURM logs, rendered scripts, job ids

Per model: its preset, backend, chat or completion prompts (``chat``), system
prompt, tensor parallelism, context length and any engine option (an
``engine`` table: [engine] keys, ``vllm.LLM(...)`` or ``from_pretrained``
arguments) reach its eval-generate command as flags (``--engine KEY=VALUE``),
and its GPUs (tensor x pipeline parallel size), CPUs, memory and time size its
own SLURM request: models with the same resources share a job array, a model
that needs 4 GPUs gets an array of its own.

Each step writes ``<file>.done`` when it completes; a step whose stamp exists
is skipped, and an unfinished one resumes from its partial file (the stages
append and skip what is there) and from the shared generation cache. So a
requeued array task, a re-submitted one and an interrupted ``make`` redo
nothing that had finished.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import orjson

from llmeval import cli
from llmeval.errors import StageError, UsageError
from llmeval.slurm import sbatch

PROG = "eval-campaign"
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "slurm" / "campaign.sbatch.tmpl"
SAMPLING = ("n", "temperature", "top_p", "max_tokens", "seed")
TOP_KEYS = {
    "name",
    "description",
    "output",
    "preset",
    "datasets",
    "categories",
    "limit",
    "data_dirs",
    "chat",
    "system_prompt",
    "engine",
    "models",
    "slurm",
    *SAMPLING,
}
MODEL_KEYS = {
    "label",
    "model",
    "backend",
    "preset",
    "chat",
    "tensor_parallel_size",
    "categories",
    "datasets",
    "base_url",
    "max_model_len",
    "system_prompt",
    "engine",
    "slurm",
    *SAMPLING,
}
MODEL_SLURM_KEYS = {"partition", "gpus", "cpus_per_task", "mem", "time"}
SLURM_KEYS = {
    "partition",
    "score_partition",
    "gpus",
    "cpus_per_task",
    "mem",
    "time",
    "max_parallel",
    "account",
    "qos",
    "extra",
}


class CampaignError(StageError):
    pass


@dataclass
class ModelEntry:
    label: str
    model: str
    preset: str
    datasets: list[str]
    backend: str | None = None
    chat: bool = False
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    base_url: str | None = None
    max_model_len: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    engine_flags: list[str] = field(default_factory=list)  # --engine KEY=VALUE for eval-generate
    slurm: dict[str, Any] = field(default_factory=dict)  # this model's own SLURM requests


@dataclass
class Campaign:
    name: str
    path: Path
    root: Path  # <output>/<name>
    models: list[ModelEntry]
    limit: int | None
    data_dirs: list[str]
    slurm: dict[str, Any]

    def datasets(self) -> list[str]:
        return sorted({d for m in self.models for d in m.datasets})

    def prompt_sets(self) -> list[tuple[str, bool]]:
        """The (dataset, chat) prompt files the models need: chat models read chat prompts."""
        return sorted({(d, m.chat) for m in self.models for d in m.datasets})

    def model(self, label: str) -> ModelEntry:
        for m in self.models:
            if m.label == label:
                return m
        raise CampaignError(
            f"{self.path}: no model labelled {label!r} (have {', '.join(m.label for m in self.models)})"
        )

    def file(self, label: str, dataset: str, stage: str) -> Path:
        return self.root / label / f"{dataset}.{'gen' if stage == 'generate' else 'scored'}.jsonl"

    def prompts(self, dataset: str, chat: bool = False) -> Path:
        stem = Path(dataset).name.split(".")[0]
        return self.root / "prompts" / f"{stem}{'.chat' if chat else ''}.jsonl"


def _check_keys(path: Path, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise CampaignError(
            f"{path}: unknown key {where}{unknown[0]} (known: {', '.join(sorted(allowed))})"
        )


def load_campaign(path: str, output: str | None = None) -> Campaign:
    """Read and check a campaign file; dataset x model pairs follow the category mapping.

    A model runs on its own ``datasets`` if it lists them; else on the
    campaign's datasets (named, or all of the campaign's ``categories``) whose
    category is among the model's ``categories``; else on all of them.
    """
    from llmeval.datasets import REGISTRY

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise CampaignError(f"campaign file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: invalid TOML ({exc})") from None
    _check_keys(p, "", data, TOP_KEYS)
    _check_keys(p, "slurm.", data.get("slurm", {}), SLURM_KEYS)
    if not data.get("models"):
        raise CampaignError(f"{path}: no [[models]]")
    name = str(data.get("name") or p.stem)
    pool = list(data.get("datasets", []))
    for cat in data.get("categories", []):
        pool += [s.name for s in REGISTRY.values() if s.category == cat and s.name not in pool]
    if not pool:
        raise CampaignError(f"{path}: no datasets (set datasets = [...] or categories = [...])")

    def category(ds: str) -> str:
        spec = REGISTRY.get(ds)
        return spec.category if spec else "custom"

    from llmeval.backends.options import engine_flags
    from llmeval.presets import PresetError

    def flags_of(where: str, table: dict[str, Any]) -> list[str]:
        try:
            return engine_flags(p, table, where)
        except PresetError as exc:
            raise CampaignError(str(exc)) from None

    top_engine = flags_of("engine", data.get("engine", {}))
    models = []
    for i, m in enumerate(data["models"]):
        _check_keys(p, f"models[{i}].", m, MODEL_KEYS)
        _check_keys(p, f"models[{i}].slurm.", m.get("slurm", {}), MODEL_SLURM_KEYS)
        if "model" not in m:
            raise CampaignError(f'{path}: models[{i}] has no model = "..."')
        if m.get("datasets"):
            datasets = list(m["datasets"])
        elif m.get("categories"):
            datasets = [d for d in pool if category(d) in m["categories"]]
        else:
            datasets = pool
        label = str(m.get("label") or Path(m["model"]).name)
        sampling = {k: data[k] for k in SAMPLING if k in data} | {
            k: m[k] for k in SAMPLING if k in m
        }
        engine_table = dict(m.get("engine", {}))
        for key in ("tensor_parallel_size", "max_model_len"):
            if m.get(key) is not None:
                if key in engine_table:
                    raise CampaignError(
                        f"{path}: models[{i}] sets {key} twice (as {key} and as engine.{key})"
                    )
                engine_table[key] = m[key]
        model_flags = flags_of(f"models[{i}].engine", engine_table)
        tp = engine_table.get("tensor_parallel_size")
        pp = (engine_table.get("vllm") or {}).get(
            "pipeline_parallel_size", engine_table.get("pipeline_parallel_size")
        )
        models.append(
            ModelEntry(
                label=label,
                model=m["model"],
                preset=m.get("preset") or data.get("preset", "base"),
                datasets=datasets,
                backend=m.get("backend"),
                chat=bool(m.get("chat", data.get("chat", False))),
                tensor_parallel_size=int(tp) if tp else None,
                pipeline_parallel_size=int(pp) if pp else None,
                base_url=m.get("base_url"),
                max_model_len=m.get("max_model_len", engine_table.get("max_model_len")),
                sampling=sampling,
                system_prompt=m.get("system_prompt", data.get("system_prompt")),
                engine_flags=top_engine + model_flags,
                slurm=dict(m.get("slurm", {})),
            )
        )
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise CampaignError(
            f'{path}: model labels must differ (got {", ".join(labels)}); set label = "..."'
        )
    root = Path(output or data.get("output") or "results").resolve() / name
    data_dirs = [
        str((p.parent / d).resolve()) if not os.path.isabs(d) else d
        for d in data.get("data_dirs", [])
    ]
    return Campaign(
        name, p.resolve(), root, models, data.get("limit"), data_dirs, dict(data.get("slurm", {}))
    )


# ---------------------------------------------------------------------------- steps


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> None:
    cli.log(PROG, "$ " + " ".join(shlex.quote(c) for c in cmd))
    rc = subprocess.call(cmd)
    if rc not in ok:
        raise CampaignError(f"step failed with exit status {rc}: {' '.join(cmd[:4])} ...")


def step(
    c: Campaign,
    stage: str,
    label: str | None = None,
    dataset: str | None = None,
    chat: bool = False,
) -> bool:
    """Run one step unless its stamp exists; return whether it ran."""
    py = sys.executable
    if stage == "resolve":
        if dataset is None:
            raise UsageError("step --stage resolve needs --dataset NAME")
        target = c.prompts(dataset, chat)
        if _stamp(target).exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        cmd = [py, "-m", "llmeval.resolve", dataset, "-o", str(tmp)]
        for d in c.data_dirs:
            cmd += ["--data-dir", d]
        if c.limit:
            cmd += ["--limit", str(c.limit)]
        if chat:
            cmd += ["--chat"]
        tmp.unlink(missing_ok=True)
        _run(cmd)
        os.replace(tmp, target)  # all-or-nothing: concurrent tasks write the same content
        _stamp(target).touch()
        return True
    if stage == "aggregate":
        target = c.root / "summary.jsonl"
        scored = [str(c.file(m.label, d, "score")) for m in c.models for d in m.datasets]
        missing = [s for s in scored if not _stamp(Path(s)).exists()]
        if missing:
            raise CampaignError(
                f"cannot aggregate: {len(missing)} scored files are not complete, e.g. {missing[0]}"
            )
        for fmt, dest in (("jsonl", target), ("markdown", c.root / "summary.md")):
            with open(dest.with_name(dest.name + ".tmp"), "wb") as fh:
                rc = subprocess.call(
                    [py, "-m", "llmeval.aggregate", *scored, "--compare", "--format", fmt],
                    stdout=fh,
                )
            if rc != 0:
                raise CampaignError(f"eval-aggregate failed with exit status {rc}")
            os.replace(dest.with_name(dest.name + ".tmp"), dest)
        _stamp(target).touch()
        return True
    if label is None or dataset is None:
        raise UsageError(f"step --stage {stage} needs --model LABEL and --dataset NAME")
    m = c.model(label)
    out = c.file(label, dataset, stage)
    if _stamp(out).exists():
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    if stage == "generate":
        if not _stamp(c.prompts(dataset, m.chat)).exists():
            step(c, "resolve", dataset=dataset, chat=m.chat)
        cmd = [
            py,
            "-m",
            "llmeval.generate",
            str(c.prompts(dataset, m.chat)),
            "--model",
            m.model,
            "--label",
            m.label,
            "--preset",
            m.preset,
            "-o",
            str(out),
        ]
        if m.backend:
            cmd += ["--backend", m.backend]
        if m.base_url:
            cmd += ["--base-url", m.base_url]
        for flag in m.engine_flags:
            cmd += ["--engine", flag]
        if m.system_prompt:
            cmd += ["--system-prompt", m.system_prompt]
        for k in SAMPLING:
            if k in m.sampling:
                cmd += ["-n" if k == "n" else f"--{k.replace('_', '-')}", str(m.sampling[k])]
        _run(cmd, ok=(0, 3))  # 3: finished, some samples are error records
    elif stage == "score":
        gen = c.file(label, dataset, "generate")
        if not _stamp(gen).exists():
            step(c, "generate", label, dataset)
        _run([py, "-m", "llmeval.score", str(gen), "-o", str(out), "--preset", m.preset])
    else:
        raise CampaignError(f"unknown stage {stage!r}")
    _stamp(out).touch()
    return True


def run_task(c: Campaign, task: int, stages: tuple[str, ...] = ("generate", "score")) -> None:
    """Everything array task ``task`` does: its model on each of its datasets."""
    if not 0 <= task < len(c.models):
        raise CampaignError(
            f"task {task} out of range: the campaign has {len(c.models)} models (0-{len(c.models) - 1})"
        )
    m = c.models[task]
    for dataset in m.datasets:
        for stage in stages:
            step(c, stage, m.label, dataset)


# ---------------------------------------------------------------------------- SLURM


RESOURCE_KEYS = ("gpus", "cpus_per_task", "mem", "time", "partition")


def model_resources(c: Campaign, m: ModelEntry) -> dict[str, Any]:
    """What one model's array task asks SLURM for.

    Its preset's [slurm] table, then the campaign's [slurm], then the model's
    own ``slurm`` table. A GPU task gets one GPU per tensor x pipeline
    parallel rank (``tensor_parallel_size``, also from ``engine`` or the
    preset), unless the model's ``slurm.gpus`` says otherwise; a model served
    elsewhere (``backend = "openai"``) needs none.
    """
    from llmeval.presets import load_preset

    p = load_preset(m.preset)
    s = p["slurm"]
    res: dict[str, Any] = {
        "gpus": int(s.get("gpus", 0)),
        "cpus_per_task": int(s.get("cpus_per_task", 1)),
        "mem": s.get("mem", "4G"),
        "time": s.get("time", "01:00:00"),
        "partition": None,
    }
    res.update({k: v for k, v in c.slurm.items() if k in RESOURCE_KEYS})
    res.update(m.slurm)
    if m.backend == "openai":
        res["gpus"] = 0
    elif res["gpus"] and "gpus" not in m.slurm:
        engine = p["engine"]
        tp = m.tensor_parallel_size or int(engine.get("tensor_parallel_size") or 1)
        pp = m.pipeline_parallel_size or int(
            (engine.get("vllm") or {}).get("pipeline_parallel_size") or 1
        )
        res["gpus"] = max(1, tp * pp)
    return res


def resource_profiles(
    c: Campaign, tasks: list[int] | None = None
) -> list[tuple[dict[str, Any], list[int]]]:
    """Tasks grouped by identical resources: one job array per group, in task order."""
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], list[int]]] = {}
    for i in tasks if tasks is not None else range(len(c.models)):
        res = model_resources(c, c.models[i])
        key = tuple(res.get(k) for k in RESOURCE_KEYS)
        groups.setdefault(key, (res, []))[1].append(i)
    return list(groups.values())


def slurm_resources(c: Campaign) -> dict[str, Any]:
    """The largest request over the campaign's models (a summary; arrays use each model's own)."""
    res: dict[str, Any] = {"gpus": 0, "cpus_per_task": 1, "mem": "4G", "time": "01:00:00"}
    for r, _ in resource_profiles(c):
        res["gpus"] = max(res["gpus"], int(r["gpus"]))
        res["cpus_per_task"] = max(res["cpus_per_task"], int(r["cpus_per_task"]))
        res["mem"] = _max_mem(res["mem"], r["mem"])
        res["time"] = max(res["time"], r["time"])
    return res


def _max_mem(a: str, b: str) -> str:
    def mb(x: str) -> float:
        units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
        x = str(x).strip().upper()
        return float(x[:-1]) * units[x[-1]] if x[-1] in units else float(x)

    return a if mb(a) >= mb(b) else b


def render(
    c: Campaign,
    *,
    stage: str,
    tasks: list[int] | None = None,
    resources: dict[str, Any] | None = None,
    partition: str | None = None,
) -> str:
    """The sbatch script of an array over ``tasks`` running ``stage`` (gen+score, generate, or score).

    Without ``resources``, ``tasks`` must share one resource profile (see
    :func:`resource_profiles`); the first task's resources are used.
    """
    ids = tasks if tasks is not None else list(range(len(c.models)))
    res = resources or model_resources(c, c.models[ids[0]])
    array = (
        ",".join(str(i) for i in ids)
        if ids != list(range(len(c.models)))
        else f"0-{len(c.models) - 1}"
    )
    throttle = c.slurm.get("max_parallel")
    lines = []
    part = partition or res.get("partition") or c.slurm.get("partition")
    if part:
        lines.append(f"#SBATCH --partition={part}")
    if res.get("gpus"):
        lines.append(f"#SBATCH --gpus={int(res['gpus'])}")
    for key in ("account", "qos"):
        if c.slurm.get(key):
            lines.append(f"#SBATCH --{key}={c.slurm[key]}")
    for extra in c.slurm.get("extra", []):
        lines.append(f"#SBATCH {extra}")
    return Template(TEMPLATE.read_text()).substitute(
        job_name=f"llmeval-{c.name}-{stage}",
        array=array + (f"%{throttle}" if throttle else ""),
        log_dir=str(c.root / "logs"),
        cpus=int(res["cpus_per_task"]),
        mem=res["mem"],
        time=res["time"],
        resource_lines="\n".join(lines),
        workdir=str(Path.cwd()),
        python=sys.executable,
        campaign=str(c.path),
        output=str(c.root.parent),
        stage=stage,
    )


def render_aggregate(c: Campaign, dependency: str) -> str:
    part = c.slurm.get("score_partition") or c.slurm.get("partition")
    head = [
        f"#SBATCH --job-name=llmeval-{c.name}-aggregate",
        f"#SBATCH --output={c.root / 'logs'}/%x-%j.out",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2G",
        "#SBATCH --time=00:30:00",
        f"#SBATCH --dependency={dependency}",
    ] + ([f"#SBATCH --partition={part}"] if part else [])
    cmd = (
        f"{shlex.quote(sys.executable)} -m llmeval.campaign step {shlex.quote(str(c.path))} "
        f"--results {shlex.quote(str(c.root.parent))} --stage aggregate"
    )
    return (
        "#!/bin/bash\n"
        + "\n".join(head)
        + f"\nset -euo pipefail\ncd {shlex.quote(str(Path.cwd()))}\nexec {cmd}\n"
    )


def submit(c: Campaign, tasks: list[int] | None = None) -> dict[str, Any]:
    """Render and submit the array(s) and the aggregate job; record and return the job ids."""
    d = c.root / "slurm"
    d.mkdir(parents=True, exist_ok=True)
    (c.root / "logs").mkdir(parents=True, exist_ok=True)
    jobs: dict[str, Any] = {}
    arrays: list[dict[str, Any]] = []
    last: list[str] = []
    profiles = resource_profiles(c, tasks)
    for n, (res, ids) in enumerate(profiles):
        suffix = "" if len(profiles) == 1 else f"-{n}"
        entry = {"tasks": ids, **{k: res[k] for k in RESOURCE_KEYS}}
        if c.slurm.get("score_partition"):
            gen = d / f"generate{suffix}.sbatch"
            gen.write_text(render(c, stage="generate", tasks=ids, resources=res))
            gen_id = sbatch(gen)
            score = d / f"score{suffix}.sbatch"
            cpu = {**res, "gpus": 0}
            score.write_text(
                render(
                    c, stage="score", tasks=ids, resources=cpu, partition=c.slurm["score_partition"]
                ).replace(
                    "#SBATCH --job-name",
                    f"#SBATCH --dependency=aftercorr:{gen_id}\n#SBATCH --job-name",
                    1,
                )
            )
            score_id = sbatch(score)
            arrays.append({**entry, "generate": gen_id, "score": score_id})
            jobs.setdefault("generate", []).append(gen_id)
            jobs.setdefault("score", []).append(score_id)
            last.append(score_id)
        else:
            script = d / f"pipeline{suffix}.sbatch"
            script.write_text(render(c, stage="pipeline", tasks=ids, resources=res))
            job = sbatch(script)
            arrays.append({**entry, "pipeline": job})
            jobs.setdefault("pipeline", []).append(job)
            last.append(job)
    # One array per resource profile; a job id list joined by commas is what squeue -j takes.
    jobs = {k: ",".join(v) for k, v in jobs.items()}
    agg = d / "aggregate.sbatch"
    agg.write_text(render_aggregate(c, "afterok:" + ":".join(last)))
    jobs["aggregate"] = sbatch(agg)
    record = c.root / "slurm_jobs.json"
    previous = orjson.loads(record.read_bytes()) if record.exists() else {"submissions": []}
    previous["submissions"].append({"time": time.time(), "tasks": tasks, **jobs, "arrays": arrays})
    previous["job_ids"] = sorted(
        {
            j
            for s in previous["submissions"]
            for k, v in s.items()
            if k in ("generate", "score", "pipeline", "aggregate")
            for j in str(v).split(",")
        }
    )
    record.write_bytes(orjson.dumps(previous, option=orjson.OPT_INDENT_2))
    return {**jobs, "arrays": arrays}


# ---------------------------------------------------------------------------- make


def makefile(c: Campaign) -> str:
    """A makefile whose targets are the steps' stamps: make tracks what is done."""
    py, camp, out = sys.executable, str(c.path), str(c.root.parent)
    run = f"{py} -m llmeval.campaign step {shlex.quote(camp)} --results {shlex.quote(out)}"
    lines = [
        f"# generated by eval-campaign from {camp}; regenerated by make campaign",
        ".DELETE_ON_ERROR:",
        "",
    ]
    summary = _stamp(c.root / "summary.jsonl")
    lines += [f"all: {summary}", ""]
    scored_stamps = []
    for d, chat in c.prompt_sets():
        lines += [
            f"{_stamp(c.prompts(d, chat))}:",
            f"\t{run} --stage resolve --dataset {shlex.quote(d)}" + (" --chat" if chat else ""),
            "",
        ]
    for m in c.models:  # model by model
        for d in m.datasets:
            gen, sc = _stamp(c.file(m.label, d, "generate")), _stamp(c.file(m.label, d, "score"))
            lines += [
                f"{gen}: {_stamp(c.prompts(d, m.chat))}",
                f"\t{run} --stage generate --model {shlex.quote(m.label)} --dataset {shlex.quote(d)}",
                "",
                f"{sc}: {gen}",
                f"\t{run} --stage score --model {shlex.quote(m.label)} --dataset {shlex.quote(d)}",
                "",
            ]
            scored_stamps.append(str(sc))
    lines += [f"{summary}: " + " ".join(scored_stamps), f"\t{run} --stage aggregate", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- status


def status(c: Campaign) -> list[dict[str, Any]]:
    rows = []
    for m in c.models:
        for d in m.datasets:
            row: dict[str, Any] = {"model": m.label, "dataset": d}
            for stage in ("generate", "score"):
                f = c.file(m.label, d, stage)
                row[stage] = {"file": str(f), "lines": _lines(f), "done": _stamp(f).exists()}
            rows.append(row)
    return rows


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(b.count(b"\n") for b in iter(lambda: fh.read(1 << 20), b""))


# ---------------------------------------------------------------------------- command line

COMMANDS = ("plan", "submit", "status", "run", "step", "render", "makefile", "aggregate")


class CampaignCommand(cli.Command):
    prog = PROG
    description = "Run a campaign (models x datasets) on SLURM or locally."
    epilog = (__doc__ or "").split("\n\n")[1]
    inputs = None
    output = None  # a campaign writes a results tree (--results), not one output
    limit = None

    def add_arguments(self, p: cli.Parser) -> None:
        p.add_argument("command", choices=COMMANDS)
        p.add_argument("campaign", metavar="CAMPAIGN.toml")
        p.add_argument(
            "--results",
            metavar="DIR",
            help="results root (default: the campaign's output, else results/)",
        )
        p.add_argument("--task", type=cli.nonneg_int, help="run: the array task (model index)")
        p.add_argument(
            "--tasks", help="submit: only these tasks, e.g. 1 or 0,2 (re-submitting a failed task)"
        )
        p.add_argument(
            "--stage",
            default="pipeline",
            help="run: pipeline, generate or score; step: resolve, generate, score or aggregate",
        )
        p.add_argument("--model", metavar="LABEL", help="step: the model label")
        p.add_argument("--dataset", help="step: the dataset")
        p.add_argument("--chat", action="store_true", help="step resolve: the chat prompts")

    def run(self) -> int:
        return _main(self.args)


def main(argv: list[str] | None = None) -> int:
    return CampaignCommand().main(argv)


def _main(args: Any) -> int:
    c = load_campaign(args.campaign, args.results)
    write = sys.stdout.buffer.write
    if args.command == "plan":
        for i, m in enumerate(c.models):
            for d in m.datasets:
                write(
                    orjson.dumps(
                        {
                            "task": i,
                            "model": m.label,
                            "model_id": m.model,
                            "preset": m.preset,
                            "dataset": d,
                            "prompts": str(c.prompts(d, m.chat)),
                            "resources": model_resources(c, m),
                            "generate_flags": [
                                *(a for f in m.engine_flags for a in ("--engine", f)),
                                *(["--system-prompt", m.system_prompt] if m.system_prompt else []),
                            ],
                            "gen": str(c.file(m.label, d, "generate")),
                            "scored": str(c.file(m.label, d, "score")),
                        }
                    )
                    + b"\n"
                )
    elif args.command == "render":
        for n, (res, ids) in enumerate(resource_profiles(c)):
            if n:
                sys.stdout.write(f"\n# ---- array {n + 1}: tasks {','.join(map(str, ids))}\n")
            sys.stdout.write(render(c, stage="pipeline", tasks=ids, resources=res))
    elif args.command == "submit":
        tasks = _parse_tasks(args.tasks) if args.tasks else None
        jobs = submit(c, tasks)
        write(orjson.dumps({"campaign": c.name, "root": str(c.root), **jobs}) + b"\n")
        cli.log(
            PROG,
            "submitted "
            + ", ".join(f"{k} job {v}" for k, v in jobs.items())
            + f"; watch with: eval-monitor {c.root}",
        )
    elif args.command == "run":
        if args.task is None:
            raise CampaignError(
                "run needs --task I (the array task); make campaign runs every task"
            )
        stages = {"pipeline": ("generate", "score"), "generate": ("generate",), "score": ("score",)}
        if args.stage not in stages:
            raise CampaignError(f"run --stage must be one of {', '.join(stages)}")
        run_task(c, args.task, stages[args.stage])
    elif args.command == "step":
        step(c, args.stage, args.model, args.dataset, chat=args.chat)
    elif args.command == "aggregate":
        step(c, "aggregate")
        sys.stdout.write((c.root / "summary.md").read_text())
    elif args.command == "makefile":
        c.root.mkdir(parents=True, exist_ok=True)
        mk = c.root / "campaign.mk"
        mk.write_text(makefile(c))
        print(mk)
    elif args.command == "status":
        for row in status(c):
            write(orjson.dumps(row) + b"\n")
    return 0


def _parse_tasks(text: str) -> list[int]:
    try:
        tasks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--tasks: expected task numbers like 0,2, got {text!r}") from None
    if not tasks or min(tasks) < 0:
        raise UsageError(f"--tasks: expected task numbers >= 0 like 0,2, got {text!r}")
    return tasks


if __name__ == "__main__":
    sys.exit(main())
