"""eval-campaign: models x datasets as SLURM job arrays or Makefile targets.

    eval-campaign plan campaigns/demo.toml        # the tasks and their files
    eval-campaign submit campaigns/demo.toml      # sbatch the array (+ aggregate job), print job ids
    eval-campaign status campaigns/demo.toml      # progress per (model, dataset), SLURM states
    eval-campaign run campaigns/demo.toml --task 0    # what array task 0 runs (resumable)
    make campaign CAMPAIGN=campaigns/demo.toml    # the same campaign locally, with make

Result tree (one file per model, dataset and stage)::

    <output>/<campaign>/prompts/<dataset>.jsonl            eval-resolve (<dataset>.chat.jsonl for chat models,
                                                           <dataset>[.chat].sys-<hash>.jsonl with a system prompt)
    <output>/<campaign>/<model>/<dataset>.gen.jsonl        eval-generate (+ .metrics.json, .runs.jsonl)
    <output>/<campaign>/<model>/<dataset>.scored.jsonl     eval-score    (+ .metrics.json, .runs.jsonl)
    <output>/<campaign>/summary.jsonl, summary.md          eval-aggregate --compare (+ report.html)
    <output>/<campaign>/logs/, slurm/, slurm_jobs.json     SLURM logs, rendered scripts, job ids

Per model (the model-dataset mapping is data: a model's ``datasets`` or
``categories``): its chat or completion prompts (``chat``) and system prompt
(``system_prompt``, given to eval-resolve's ``--system``: the system message of
chat prompts, the head of completion prompts, as lm-eval's
``--system_instruction``) choose its prompt file; its preset, backend, tensor
parallelism, context length and any engine option (an ``engine`` table:
[engine] keys, ``vllm.LLM(...)`` or ``from_pretrained`` arguments) reach its
eval-generate command as flags (``--engine KEY=VALUE``),
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

import hashlib
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
    "loglikelihood",
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
    "loglikelihood",
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
    # Datasets this model scores by log-likelihood (``loglikelihood = true``: those whose
    # spec ranks choices by log-likelihood; generation on the others).
    loglikelihood: frozenset[str] = frozenset()
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

    def prompt_sets(self) -> list[tuple[str, bool, str | None]]:
        """The (dataset, chat, system prompt) prompt files the models need: chat models read
        chat prompts, a model with a system prompt reads prompts resolved with it."""
        sets = {(d, m.chat, m.system_prompt) for m in self.models for d in m.datasets}
        return sorted(sets, key=lambda t: (t[0], t[1], t[2] or ""))

    def model(self, label: str) -> ModelEntry:
        for m in self.models:
            if m.label == label:
                return m
        raise CampaignError(
            f"{self.path}: no model labelled {label!r} (have {', '.join(m.label for m in self.models)})"
        )

    def file(self, label: str, dataset: str, stage: str) -> Path:
        return self.root / label / f"{dataset}.{'gen' if stage == 'generate' else 'scored'}.jsonl"

    def prompts(self, dataset: str, chat: bool = False, system: str | None = None) -> Path:
        stem = Path(dataset).name.split(".")[0]
        sys_tag = f".sys-{hashlib.sha256(system.encode()).hexdigest()[:10]}" if system else ""
        return self.root / "prompts" / f"{stem}{'.chat' if chat else ''}{sys_tag}.jsonl"

    def prompts_of(self, m: ModelEntry, dataset: str) -> Path:
        """The prompt file model ``m`` reads for ``dataset``."""
        return self.prompts(dataset, m.chat, m.system_prompt)


# The types of the keys that are not checked elsewhere (sampling keys: by eval-generate's
# flags; engine tables: by llmeval.backends.options; slurm tables: rendered as text).
KEY_TYPES: dict[str, type] = {
    "name": str,
    "description": str,
    "output": str,
    "preset": str,
    "label": str,
    "model": str,
    "backend": str,
    "base_url": str,
    "system_prompt": str,
    "chat": bool,
    "loglikelihood": bool,
    "limit": int,
    "datasets": list,
    "categories": list,
    "data_dirs": list,
    "models": list,
    "engine": dict,
    "slurm": dict,
    "tensor_parallel_size": int,
    "max_model_len": int,
}


def _check_keys(path: Path, where: str, table: Any, allowed: set[str]) -> None:
    if not isinstance(table, dict):
        raise CampaignError(f"{path}: {where.rstrip('.')} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise CampaignError(
            f"{path}: unknown key {where}{unknown[0]} (known: {', '.join(sorted(allowed))})"
        )
    for key, value in table.items():
        want = KEY_TYPES.get(key) if where.count(".") <= 1 and "slurm" not in where else None
        if want is None:
            continue
        ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
        if ok and want is list:
            ok = all(isinstance(v, dict if key == "models" else str) for v in value)
        if not ok:
            items = "tables" if key == "models" else "strings"
            desc = {"list": f"a list of {items}", "dict": "a table"}.get(
                want.__name__, want.__name__
            )
            raise CampaignError(
                f"{path}: key {where}{key}: expected {desc}, got {type(value).__name__} {value!r}"
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
                system_prompt=m.get("system_prompt", data.get("system_prompt")) or None,
                loglikelihood=frozenset(
                    d
                    for d in datasets
                    if m.get("loglikelihood", data.get("loglikelihood", False))
                    and (spec := REGISTRY.get(d)) is not None
                    and spec.loglikelihood
                ),
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
#
# The step graph is declared once, here, as data (:func:`steps`): the local runner
# (:func:`run_task`, :func:`step`), the makefile writer (:func:`makefile`) and the SLURM
# array tasks (``eval-campaign run --task I``) all read it.

STAGES = ("resolve", "generate", "score", "aggregate")


@dataclass(frozen=True)
class Step:
    """One step: ``stage`` writes ``target`` once the steps writing ``needs`` are done.

    A step is done when its stamp (``<target>.done``) exists. A step that
    ``runs_needs`` runs what it needs first (generate resolves its prompts, score
    generates); aggregate only checks (on SLURM it runs after the arrays, with no
    GPU of its own, and must never generate).
    """

    stage: str
    target: Path
    needs: tuple[Path, ...] = ()
    model: str | None = None
    dataset: str | None = None
    chat: bool = False
    system: str | None = None  # resolve: the system prompt the prompts are resolved with
    runs_needs: bool = True

    @property
    def stamp(self) -> Path:
        return _stamp(self.target)

    def selector(self) -> list[str]:
        """The ``eval-campaign step`` flags that name this step."""
        flags = ["--stage", self.stage]
        if self.model is not None:
            flags += ["--model", self.model]
        if self.dataset is not None:
            flags += ["--dataset", self.dataset]
        if self.stage == "resolve":
            flags += ["--chat"] if self.chat else []
            flags += ["--system", self.system] if self.system else []
        return flags


def steps(c: Campaign) -> list[Step]:
    """Every step of the campaign, each after the steps it needs."""
    out = [
        Step("resolve", c.prompts(d, chat, system), dataset=d, chat=chat, system=system)
        for d, chat, system in c.prompt_sets()
    ]
    scored = []
    for m in c.models:
        for d in m.datasets:
            gen, sc = c.file(m.label, d, "generate"), c.file(m.label, d, "score")
            out.append(Step("generate", gen, (c.prompts_of(m, d),), m.label, d, m.chat))
            out.append(Step("score", sc, (gen,), m.label, d, m.chat))
            scored.append(sc)
    out.append(Step("aggregate", c.root / "summary.jsonl", tuple(scored), runs_needs=False))
    return out


def find_step(
    c: Campaign,
    stage: str,
    label: str | None = None,
    dataset: str | None = None,
    chat: bool = False,
    system: str | None = None,
) -> Step:
    """The step ``eval-campaign step`` names; a usage error says what is missing."""
    if stage not in STAGES:
        raise UsageError(f"step --stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if stage == "resolve" and dataset is None:
        raise UsageError("step --stage resolve needs --dataset NAME")
    if stage in ("generate", "score") and (label is None or dataset is None):
        raise UsageError(f"step --stage {stage} needs --model LABEL and --dataset NAME")
    for s in steps(c):
        if s.stage != stage or s.dataset != dataset:
            continue
        if s.model == label if stage != "resolve" else (s.chat, s.system) == (chat, system):
            return s
    if label is not None:
        m = c.model(label)
        raise CampaignError(
            f"{c.path}: model {label} does not run {dataset} (its datasets: {', '.join(m.datasets)})"
        )
    kind = ("chat " if chat else "") + ("prompts with that system prompt" if system else "prompts")
    raise CampaignError(f"{c.path}: no model of the campaign reads {kind} of {dataset}")


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> None:
    cli.log(PROG, "$ " + " ".join(shlex.quote(c) for c in cmd))
    rc = subprocess.call(cmd)
    if rc not in ok:
        raise CampaignError(f"step failed with exit status {rc}: {' '.join(cmd[:4])} ...")


def commands(
    c: Campaign, s: Step, out: Path | None = None
) -> list[tuple[list[str], tuple[int, ...]]]:
    """The stage processes step ``s`` runs (writing ``out``, default its target), each with the
    exit statuses that count as success."""
    py, out = sys.executable, out or s.target
    if s.stage == "resolve":
        assert s.dataset is not None
        cmd = [py, "-m", "llmeval.resolve", s.dataset, "-o", str(out)]
        for d in c.data_dirs:
            cmd += ["--data-dir", d]
        if c.limit:
            cmd += ["--limit", str(c.limit)]
        cmd += ["--chat"] if s.chat else []
        return [(cmd + (["--system", s.system] if s.system else []), (0,))]
    if s.stage == "aggregate":
        scored = [str(n) for n in s.needs]
        agg = [py, "-m", "llmeval.aggregate", *scored, "--compare"]
        return [
            (agg + ["--format", "jsonl", "-o", str(out)], (0,)),
            (agg + ["--format", "markdown", "-o", str(out.with_name("summary.md"))], (0,)),
            (agg + ["--format", "html", "-o", str(out.with_name("report.html"))], (0,)),
        ]
    assert s.model is not None and s.dataset is not None
    m = c.model(s.model)
    if s.stage == "score":
        return [
            (
                [py, "-m", "llmeval.score", str(s.needs[0]), "-o", str(out), "--preset", m.preset],
                (0,),
            )
        ]
    cmd = [py, "-m", "llmeval.generate", str(s.needs[0]), "--model", m.model, "--label", m.label]
    cmd += ["--preset", m.preset, "-o", str(out)]
    if m.backend:
        cmd += ["--backend", m.backend]
    if m.base_url:
        cmd += ["--base-url", m.base_url]
    for flag in m.engine_flags:
        cmd += ["--engine", flag]
    if s.dataset in m.loglikelihood:
        cmd += ["--loglikelihood"]
    for k in SAMPLING:
        if k in m.sampling:
            cmd += ["-n" if k == "n" else f"--{k.replace('_', '-')}", str(m.sampling[k])]
    return [(cmd, (0, 3))]  # 3: finished, some samples are error records


def execute(c: Campaign, s: Step, graph: dict[Path, Step] | None = None) -> bool:
    """Run step ``s`` unless its stamp exists (its needs first, if it runs them); return
    whether it ran."""
    if s.stamp.exists():
        return False
    graph = graph if graph is not None else {x.target: x for x in steps(c)}
    if s.runs_needs:
        for need in s.needs:
            execute(c, graph[need], graph)
    else:
        missing = [str(n) for n in s.needs if not _stamp(n).exists()]
        if missing:
            raise CampaignError(
                f"cannot {s.stage}: {len(missing)} files it reads are not complete, e.g. {missing[0]}"
            )
    s.target.parent.mkdir(parents=True, exist_ok=True)
    if s.stage == "resolve":
        # All or nothing: array tasks that need the same prompts may resolve them at once.
        tmp = s.target.with_name(f".{s.target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        for cmd, ok in commands(c, s, tmp):
            _run(cmd, ok)
        os.replace(tmp, s.target)
    else:
        for cmd, ok in commands(c, s):
            _run(cmd, ok)
    s.stamp.touch()
    return True


def step(
    c: Campaign,
    stage: str,
    label: str | None = None,
    dataset: str | None = None,
    chat: bool = False,
    system: str | None = None,
) -> bool:
    """Run one step (``eval-campaign step``) unless its stamp exists; return whether it ran."""
    return execute(c, find_step(c, stage, label, dataset, chat, system))


def run_task(c: Campaign, task: int, stages: tuple[str, ...] = ("generate", "score")) -> None:
    """Everything array task ``task`` does: its model's steps of ``stages``, dataset by dataset."""
    if not 0 <= task < len(c.models):
        raise CampaignError(
            f"task {task} out of range: the campaign has {len(c.models)} models (0-{len(c.models) - 1})"
        )
    label = c.models[task].label
    plan = steps(c)
    graph = {s.target: s for s in plan}
    for s in plan:
        if s.model == label and s.stage in stages:
            execute(c, s, graph)


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
    plan = steps(c)
    lines = [
        f"# generated by eval-campaign from {camp}; regenerated by make campaign",
        ".DELETE_ON_ERROR:",
        "",
        f"all: {plan[-1].stamp}",
        "",
    ]
    for s in plan:  # model by model, as steps() lists them
        lines += [
            f"{s.stamp}:" + "".join(f" {_stamp(n)}" for n in s.needs),
            f"\t{run} " + " ".join(shlex.quote(a) for a in s.selector()),
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- status


def status(c: Campaign) -> list[dict[str, Any]]:
    """One row per (model, dataset): each stage's file, lines and stamp, and, once the
    campaign was submitted, its array task's SLURM state (``slurm``)."""
    states = slurm_states(c)
    rows = []
    for i, m in enumerate(c.models):
        for d in m.datasets:
            row: dict[str, Any] = {"model": m.label, "dataset": d}
            for stage in ("generate", "score"):
                f = c.file(m.label, d, stage)
                row[stage] = {"file": str(f), "lines": _lines(f), "done": _stamp(f).exists()}
            if states is not None:
                row["slurm"] = states.get(i) or {"note": states["note"]}
            rows.append(row)
    return rows


def slurm_states(c: Campaign) -> dict[Any, Any] | None:
    """Each model's array tasks in its latest submission, by model index and stage
    (``pipeline``, or ``generate`` and ``score`` with a score partition): ``{"state",
    "job_id"}`` from squeue, ``log_tail`` for a failed one; ``note`` says why a task is
    missing. None for a campaign never submitted."""
    from llmeval.slurm import squeue_tasks

    record = c.root / "slurm_jobs.json"
    if not record.exists():
        return None
    # (array job, task id) -> (model index, stage, submission number)
    where: dict[tuple[str, str], tuple[int, str, int]] = {}
    for n, sub in enumerate(orjson.loads(record.read_bytes()).get("submissions", [])):
        for array in sub.get("arrays", []):
            for stage in ("pipeline", "generate", "score"):
                if stage in array:
                    for t in array["tasks"]:
                        where[(str(array[stage]), str(t))] = (int(t), stage, n)
    seen = squeue_tasks({job for job, _ in where})
    out: dict[Any, Any] = {
        "note": seen["note"] or "not in squeue (finished longer ago than MinJobAge, or never ran)"
    }
    newest: dict[tuple[int, str], int] = {}
    for task in seen["tasks"]:
        hit = where.get((task["array_job_id"], task["array_task_id"]))
        if hit is None or hit[2] < newest.get(hit[:2], -1):
            continue  # a re-submitted task is shown by its latest submission
        index, stage, newest[hit[:2]] = hit
        state = {"state": task["state"], "job_id": task["job_id"]}
        if task.get("log_tail"):
            state["log_tail"] = task["log_tail"]
        out.setdefault(index, {})[stage] = state
    return out


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
        p.add_argument("--system", metavar="TEXT", help="step resolve: the system prompt")

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
                            "prompts": str(c.prompts_of(m, d)),
                            "resources": model_resources(c, m),
                            "generate_flags": [
                                *(a for f in m.engine_flags for a in ("--engine", f)),
                                *(["--loglikelihood"] if d in m.loglikelihood else []),
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
        step(c, args.stage, args.model, args.dataset, chat=args.chat, system=args.system)
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
