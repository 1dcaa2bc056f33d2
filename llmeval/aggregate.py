"""eval-aggregate: scored records -> metrics with confidence intervals, comparisons, leaderboards.

    eval-aggregate results/my-campaign/ --compare --format table
    eval-aggregate results/*/ --leaderboard --format markdown
    eval-aggregate results/my-campaign/ --format html -o report.html
    eval-aggregate results/my-campaign/ --format sqlite -o results.db

Records stream through per-(group, task) counters, so memory depends on the
number of groups and tasks, not of records (the HTML report's drill-down
keeps a bounded number of samples per task beside them; the database is
written as records stream). Intervals are percentile bootstraps over tasks
(n samples of one task are not n independent tasks), seeded so the same
input gives the same interval; leaderboard ranks are resampled the same way.
Field names: docs/records.md.
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmeval import cli
from llmeval.errors import DataError, StageError, UsageError
from llmeval.records import Record, check_fields
from llmeval.stats import bootstrap_ci, holm, paired_test, pass_at_k
from llmeval.vocab import (
    CODE_EXEC,
    ERROR,
    NO_ANSWER,
    PASS,
    STATUSES,
    TIMEOUT,
    TYPE_COMPARISON,
    TYPE_LEADERBOARD,
    TYPE_METRIC,
)

PROG = "eval-aggregate"
FORMATS = ("jsonl", "table", "csv", "markdown", "html", "sqlite")
DEFAULT_K = (1, 10, 100)
RATE_METRICS = {"error_rate": ERROR, "timeout_rate": TIMEOUT, "no_answer_rate": NO_ANSWER}

EPILOG = """\
examples:
  eval-resolve humaneval | eval-generate --model gemma3-270m | eval-score | eval-aggregate --format table
  eval-aggregate results/my-campaign/ --compare --format markdown
  eval-aggregate results/*/ --leaderboard --format table
  eval-aggregate results/my-campaign/ --format html -o report.html
  eval-aggregate results/my-campaign/ --compare --format sqlite -o results.db
  eval-aggregate scored.jsonl --by model,dataset,category --metrics pass@1,error_rate
  eval-aggregate results/ --plot pass1.png --export summary.parquet
  eval-aggregate scored.jsonl | jq -c 'select(.metric == "pass@1") | [.model, .value, .ci_low, .ci_high]'
"""


@dataclass
class Group:
    """Counters for one group: per task [n, passes, *status counts, token sum, token count]."""

    key: tuple[str, ...]
    tasks: dict[str, list[int]] = field(default_factory=dict)
    scorers: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    run_ids: set[str] = field(default_factory=set)
    score_run_ids: set[str] = field(default_factory=set)
    presets: set[str] = field(default_factory=set)
    dataset_hashes: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)
    finish: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    seen: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, task) -> bitmask
    seen_large: set[tuple[str, str, int]] = field(default_factory=set)

    @property
    def category(self) -> str | None:
        """The group's category (several, joined by "+", when its records disagree)."""
        return "+".join(sorted(self.categories)) or None
    # score.extractions: per metric name (the reference harness's), per task [n, *status counts]
    extractions: dict[str, dict[str, list[int]]] = field(default_factory=dict)


STATUS_INDEX = {s: 2 + i for i, s in enumerate(STATUSES)}
TOKENS, TOKEN_COUNT = 2 + len(STATUSES), 3 + len(STATUSES)
SEEN_BITS = 1024  # sample indices below this are remembered as bits of one int per (model, task)


def _first_time(group: Group, model: Any, task: str, sample: Any) -> bool:
    """False when this sample (model label, task, sample index) was counted already.

    The same file passed twice, two campaigns read together that both hold a
    run, a cached re-run under the same label: a sample is counted once, so
    pass@k never sees copies of one sample as independent draws. The model
    is part of the identity whatever ``--by`` says (``--by dataset`` pools
    models, whose samples are distinct).
    """
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0 or model is None:
        return True  # records without a sample index or a model cannot be told apart
    who = (str(model), task)
    if sample < SEEN_BITS:
        bits = group.seen.get(who, 0)
        bit = 1 << sample
        if bits & bit:
            return False
        group.seen[who] = bits | bit
        return True
    if (*who, sample) in group.seen_large:
        return False
    group.seen_large.add((*who, sample))
    return True


def accumulate(
    numbered: Iterable[tuple[str, Record]], by: list[str]
) -> dict[tuple[str, ...], Group]:
    """Fold scored records into per-group, per-task counters (a repeated sample counts once)."""
    groups: dict[tuple[str, ...], Group] = {}
    for where, rec in numbered:
        if not isinstance(rec.get("score"), dict):
            raise DataError(
                where, 'no field "score" with a known status; aggregate eval-score output'
            )
        check_fields(
            where,
            rec,
            required=("score.status",),
            optional=("usage", "usage.completion_tokens", "sample", "score.extractions"),
        )
        score = rec["score"]
        try:
            key = tuple(str(rec[f]) for f in by)
        except KeyError as exc:
            raise DataError(where, f'no field "{exc.args[0]}" (used by --by)') from None
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(key)
        task = str(rec.get("id") or rec.get("task_id"))
        counters = group.tasks.get(task)
        if counters is None:
            counters = group.tasks[task] = [0] * (TOKEN_COUNT + 1)
        group.scorers.add(str(rec.get("scorer")))
        for attr, value in (
            ("categories", rec.get("category")),
            ("run_ids", rec.get("run_id")),
            ("score_run_ids", score.get("run_id")),
            ("presets", rec.get("preset")),
            ("dataset_hashes", rec.get("dataset_hash")),
            ("versions", rec.get("llmeval_version")),
        ):
            if isinstance(value, str):
                getattr(group, attr).add(value)
        # A repeat still names its runs (above), so provenance does not depend on input order.
        if not _first_time(group, rec.get("model"), task, rec.get("sample")):
            group.duplicates += 1
            continue
        status = score["status"]
        counters[0] += 1
        counters[1] += status == PASS
        counters[STATUS_INDEX[status]] += 1
        tokens = (rec.get("usage") or {}).get("completion_tokens")
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            counters[TOKENS] += tokens
            counters[TOKEN_COUNT] += 1
        finish = rec.get("finish_reason")
        if isinstance(finish, str):
            group.finish[finish] = group.finish.get(finish, 0) + 1
        extractions = score.get("extractions")
        if isinstance(extractions, dict):
            for name, result in extractions.items():
                status = result.get("status") if isinstance(result, dict) else None
                if status not in STATUS_INDEX:
                    raise DataError(
                        where, f'field "score.extractions.{name}.status" must be one of '
                        f"{', '.join(STATUSES)}"
                    )
                per = group.extractions.setdefault(str(name), {})
                c = per.get(task)
                if c is None:
                    c = per[task] = [0] * (2 + len(STATUSES))
                c[0] += 1
                c[STATUS_INDEX[status]] += 1
    return groups


def per_task(group: Group, metric: str) -> tuple[list[str], list[float]]:
    """The per-task values whose mean is ``metric`` (and whose resampling gives its interval).

    In task-id order, so an interval does not depend on the order of the input records.
    """
    ids, values = [], []
    for task, c in sorted(group.tasks.items()):
        n = c[0]
        if metric.startswith("pass@"):
            v = pass_at_k(n, c[1], int(metric[5:]))
        elif metric == "accuracy":
            v = c[1] / n
        elif metric in RATE_METRICS:
            v = c[STATUS_INDEX[RATE_METRICS[metric]]] / n
        elif metric == "mean_completion_tokens":
            if not c[TOKEN_COUNT]:
                continue
            v = c[TOKENS] / c[TOKEN_COUNT]
        else:
            raise ValueError(metric)
        ids.append(task)
        values.append(v)
    return ids, values


def per_task_extraction(group: Group, name: str) -> tuple[list[str], list[float]]:
    """Accuracy per task under the reference harness's extraction ``name`` (its pass share)."""
    per = sorted(group.extractions.get(name, {}).items())  # task-id order, as per_task
    return [t for t, _ in per], [c[STATUS_INDEX[PASS]] / c[0] for _, c in per]


def metrics_for(group: Group, ks: Iterable[int]) -> list[str]:
    """pass@k for every k all tasks have samples for (code), else accuracy; then rates, tokens."""
    min_n = min(c[0] for c in group.tasks.values())
    if group.scorers <= {CODE_EXEC}:
        primary = [f"pass@{k}" for k in sorted(set(ks)) if k <= min_n]
    else:
        primary = ["accuracy"]
    # accuracy under each extraction the reference harness defines, named after it
    # (lm-eval's gsm8k: strict-match, flexible-extract), right after llmeval's own
    return [*primary, *sorted(group.extractions), *RATE_METRICS, "mean_completion_tokens"]


def primary_metric(group: Group) -> str:
    return "pass@1" if group.scorers <= {CODE_EXEC} else "accuracy"


def _category(group: Group, by: list[str]) -> dict[str, str]:
    """The group's category as a field, unless it is a group field already or unknown."""
    return {} if "category" in by or group.category is None else {"category": group.category}


def extraction_counts(group: Group, name: str) -> dict[str, int]:
    per = group.extractions.get(name, {}).values()
    return {s: sum(c[STATUS_INDEX[s]] for c in per) for s in STATUSES}


def summarize(
    groups: dict[tuple[str, ...], Group],
    by: list[str],
    *,
    ks: Iterable[int] = DEFAULT_K,
    metrics: list[str] | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[Record]:
    """One metric record per (group, metric), as docs/records.md defines them."""
    out = []
    for key in sorted(groups):
        group = groups[key]
        n_samples = sum(c[0] for c in group.tasks.values())
        counts = {s: sum(c[STATUS_INDEX[s]] for c in group.tasks.values()) for s in STATUSES}
        for metric in metrics_for(group, ks):
            if metrics and metric not in metrics:
                continue
            if metric in group.extractions:
                _, values = per_task_extraction(group, metric)
                counts_here = extraction_counts(group, metric)
                n_here = sum(counts_here.values())
            else:
                _, values = per_task(group, metric)
                counts_here, n_here = counts, n_samples
            if not values:
                continue
            lo, hi = bootstrap_ci(values, resamples, level, seed)
            out.append(
                {
                    "type": TYPE_METRIC,
                    **dict(zip(by, key)),
                    **_category(group, by),
                    "metric": metric,
                    "value": sum(values) / len(values),
                    "ci_low": lo,
                    "ci_high": hi,
                    "ci_level": level,
                    "n_tasks": len(values),
                    "n_samples": n_here,
                    "counts": counts_here,
                    "bootstrap": resamples,
                    "seed": seed,
                    "run_ids": sorted(group.run_ids),
                    "presets": sorted(group.presets),
                    "dataset_hashes": sorted(group.dataset_hashes),
                    "llmeval_versions": sorted(group.versions),
                }
            )
    return out


def compare(
    groups: dict[tuple[str, ...], Group],
    by: list[str],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    alpha: float = 0.05,
    permutations: int = 9999,
) -> list[Record]:
    """Paired comparisons of every pair of models within each context (the other --by fields)."""
    import numpy as np

    if "model" not in by:
        raise UsageError("--compare needs model among the --by fields")
    mi = by.index("model")
    contexts: dict[tuple[str, ...], list[Group]] = {}
    for key, group in groups.items():
        contexts.setdefault(key[:mi] + key[mi + 1 :], []).append(group)
    out: list[Record] = []
    for ctx in sorted(contexts):
        members = sorted(contexts[ctx], key=lambda g: g.key[mi])
        for a, b in itertools.combinations(members, 2):
            metric = primary_metric(a) if primary_metric(a) == primary_metric(b) else "accuracy"
            ids_a, vals_a = per_task(a, metric)
            ids_b, vals_b = per_task(b, metric)
            va, vb = dict(zip(ids_a, vals_a)), dict(zip(ids_b, vals_b))
            shared = sorted(set(va) & set(vb))
            only_a, only_b = sorted(set(va) - set(vb)), sorted(set(vb) - set(va))
            rec: Record = {
                "type": TYPE_COMPARISON,
                **{f: v for f, v in zip(by, ctx[:mi] + ("",) + ctx[mi:]) if f != "model"},
                "metric": metric,
                "model_a": a.key[mi],
                "model_b": b.key[mi],
                "n_shared": len(shared),
                "only_a": only_a,
                "only_b": only_b,
            }
            if not shared:
                rec.update(
                    value_a=None,
                    value_b=None,
                    diff=None,
                    ci_low=None,
                    ci_high=None,
                    test=None,
                    p_value=None,
                    discordant=None,
                )
                out.append(rec)
                continue
            xa = np.array([va[t] for t in shared])
            xb = np.array([vb[t] for t in shared])
            d = xa - xb
            lo, hi = bootstrap_ci(list(d), resamples, level, seed)
            binary = all(a.tasks[t][0] == 1 and b.tasks[t][0] == 1 for t in shared)
            test, p, discordant = paired_test(
                xa, xb, binary=binary, permutations=permutations, seed=seed
            )
            rec.update(
                value_a=float(xa.mean()),
                value_b=float(xb.mean()),
                diff=float(d.mean()),
                ci_low=lo,
                ci_high=hi,
                ci_level=level,
                test=test,
                p_value=p,
                discordant=discordant,
            )
            out.append(rec)
    tested = [r for r in out if r["p_value"] is not None]
    for r, adj in zip(tested, holm([r["p_value"] for r in tested])):
        r["p_holm"] = adj
        r["significant"] = adj < alpha
    for r in out:
        r.setdefault("p_holm", None)
        r.setdefault("significant", False)
    return out


SCOPE_ALL = "all"


def leaderboard(
    groups: dict[tuple[str, ...], Group],
    by: list[str],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[Record]:
    """Each model's rank over the datasets, with a bootstrap rank interval (docs/records.md).

    A model's score in a scope (``all`` datasets, then each category when
    there are several) is the mean over the scope's datasets of its primary
    metric (pass@1 or accuracy). Ranks resample the tasks of every dataset,
    paired across models (:func:`llmeval.stats.bootstrap_ranks`). A model
    without results on some dataset of a scope is listed, unranked, with what
    it misses: a mean over other datasets would not be comparable.
    """
    import numpy as np

    from llmeval.stats import bootstrap_ranks

    _check_leaderboard_by(by)
    cell_cache: dict[tuple[str, str, str], Record] = {}

    def cell(m: str, d: str, metric: str) -> Record:
        """One grid cell: the model's metric on the dataset with its interval (as summarize's)."""
        if (m, d, metric) not in cell_cache:
            _, values = per_task(cells[(m, d)], metric)
            lo, hi = bootstrap_ci(values, resamples, level, seed)
            cell_cache[(m, d, metric)] = {
                "metric": metric,
                "value": sum(values) / len(values),
                "ci_low": lo,
                "ci_high": hi,
                "n_tasks": len(values),
            }
        return cell_cache[(m, d, metric)]

    mi, di = by.index("model"), by.index("dataset")
    cells = {(k[mi], k[di]): g for k, g in groups.items()}
    models = sorted({m for m, _ in cells})
    category = {d: g.category or "" for (_, d), g in sorted(cells.items())}
    datasets = sorted(category, key=lambda d: (category[d], d))
    scopes = [(SCOPE_ALL, datasets)]
    cats = sorted(set(category.values()))
    if len(cats) > 1:
        scopes += [(c, [d for d in datasets if category[d] == c]) for c in cats]
    out: list[Record] = []
    for scope, ds in scopes:
        present = [m for m in models if any((m, d) in cells for d in ds)]
        ranked = [m for m in present if all((m, d) in cells for d in ds)]
        metrics, blocks, n_tasks = {}, [], dict.fromkeys(ranked, 0)
        for d in ds:
            if not ranked:
                break
            kinds = {primary_metric(cells[(m, d)]) for m in ranked}
            metrics[d] = kinds.pop() if len(kinds) == 1 else "accuracy"
            values = {m: dict(zip(*per_task(cells[(m, d)], metrics[d]))) for m in ranked}
            tasks = sorted(set().union(*values.values()))
            block = np.full((len(ranked), len(tasks)), np.nan)
            for i, m in enumerate(ranked):
                for j, t in enumerate(tasks):
                    if t in values[m]:
                        block[i, j] = values[m][t]
                n_tasks[m] += len(values[m])
            blocks.append(block)
        head = {"type": TYPE_LEADERBOARD, "scope": scope}
        common = {
            "datasets": ds,
            "categories": {d: category[d] for d in ds},
            "metrics": metrics,
            "n_models": len(ranked),
            "ci_level": level,
            "bootstrap": resamples,
            "seed": seed,
        }
        if ranked:
            res = bootstrap_ranks(blocks, resamples, level, seed)
            rows: list[Record] = [
                {
                    "model": m,
                    "rank": int(res["rank"][i]),
                    "rank_low": int(res["rank_low"][i]),
                    "rank_high": int(res["rank_high"][i]),
                    "value": float(res["score"][i]),
                    "ci_low": float(res["score_low"][i]),
                    "ci_high": float(res["score_high"][i]),
                    "n_tasks": n_tasks[m],
                    "missing": [],
                    "cells": {d: cell(m, d, metrics[d]) for d in ds},
                }
                for i, m in enumerate(ranked)
            ]
            for r in sorted(rows, key=lambda r: (r["rank"], -float(r["value"]), r["model"])):
                out.append({**head, **r, **common})
        for m in present:
            if m not in ranked:
                out.append(
                    {
                        **head,
                        "model": m,
                        "rank": None,
                        "rank_low": None,
                        "rank_high": None,
                        "value": None,
                        "ci_low": None,
                        "ci_high": None,
                        "n_tasks": sum(len(cells[(m, d)].tasks) for d in ds if (m, d) in cells),
                        "missing": [d for d in ds if (m, d) not in cells],
                        "cells": {
                            d: cell(m, d, primary_metric(cells[(m, d)]))
                            for d in ds
                            if (m, d) in cells
                        },
                        **common,
                    }
                )
    return out


def group_details(groups: dict[tuple[str, ...], Group], by: list[str]) -> list[Record]:
    """Each group's per-task counts, statuses and provenance as plain data (for the HTML report)."""
    out = []
    for key in sorted(groups):
        g = groups[key]
        tasks = {
            task: {
                "n": c[0],
                "pass": c[1],
                "statuses": {s: c[STATUS_INDEX[s]] for s in STATUSES if c[STATUS_INDEX[s]]},
            }
            for task, c in g.tasks.items()
        }
        out.append(
            {
                "fields": dict(zip(by, key)),
                "category": g.category,
                "tasks": tasks,
                "n_samples": sum(c[0] for c in g.tasks.values()),
                "statuses": {
                    s: sum(c[STATUS_INDEX[s]] for c in g.tasks.values()) for s in STATUSES
                },
                "finish": dict(sorted(g.finish.items())),
                "duplicates": g.duplicates,
                "run_ids": sorted(g.run_ids),
                "score_run_ids": sorted(g.score_run_ids),
                "presets": sorted(g.presets),
                "dataset_hashes": sorted(g.dataset_hashes),
                "llmeval_versions": sorted(g.versions),
            }
        )
    return out


def provenance_warnings(groups: dict[tuple[str, ...], Group], by: list[str]) -> Iterator[str]:
    for key, g in sorted(groups.items()):
        label = " ".join(f"{f}={v}" for f, v in zip(by, key))
        if len(g.dataset_hashes) > 1:
            yield f"warning: {label} mixes {len(g.dataset_hashes)} dataset hashes: {', '.join(sorted(g.dataset_hashes))}"
        if len(g.presets) > 1:
            yield f"warning: {label} mixes presets: {', '.join(sorted(g.presets))}"
        if g.duplicates:
            yield (
                f"warning: {label}: {g.duplicates} records repeat a (task, sample) already "
                "counted, counted once (the same file twice? two runs under one label?)"
            )


# ---------------------------------------------------------------------------- command line


def _is_scored_file(name: str) -> bool:
    return name.endswith((".scored.jsonl", ".scored.jsonl.gz"))


def _scored_files_under(directory: str) -> list[str]:
    return sorted(
        f
        for f in glob.glob(os.path.join(directory, "**", "*.scored.jsonl*"), recursive=True)
        if _is_scored_file(f) and os.path.isfile(f)
    )


def expand_inputs(args: list[str], warn: Any = None) -> list[str | None]:
    """FILEs, globs (quoted, ``**`` recursive) and directories (their ``*.scored.jsonl[.gz]``).

    A directory yields exactly its scored record files, at any depth (a run
    directory, a campaign tree, a results root): never the prompts, the
    generations, the heartbeats (``*.metrics.json``), the run records
    (``*.runs.jsonl``) or the summaries beside them. A directory without
    scored files is an error when it is the only input, else skipped with a
    warning (``results/*/`` while one campaign has not scored yet). A file
    reached twice (a directory and a file in it) is read once.
    """
    if not args:
        return [None]
    out: list[str | None] = []
    empty: list[str] = []
    for a in args:
        if a == "-":
            out.append(None)
            continue
        if any(ch in a for ch in "*?["):
            matches = sorted(glob.glob(a, recursive=True))
            if not matches:
                raise DataError(a, "pattern matches no file")
        else:
            if not os.path.exists(a):
                raise DataError(a, "no such file")
            matches = [a]
        for m in matches:
            if os.path.isdir(m):
                found = _scored_files_under(m)
                if not found:
                    empty.append(m)
                out += found
            elif m == a or os.path.isfile(m):  # a FILE argument may be a FIFO: <(zcat x)
                out.append(m)
    if empty and not any(p is not None for p in out) and None not in out:
        raise DataError(empty[0], "directory has no *.scored.jsonl files")
    for d in empty:
        if warn is not None:
            warn(f"warning: {d}: no *.scored.jsonl files, skipped")
    seen: set[str] = set()
    unique: list[str | None] = []
    for p in out:
        real = os.path.realpath(p) if p is not None else "-"
        if real not in seen or p is None:
            seen.add(real)
            unique.append(p)
    return unique


def run_records(inputs: list[str | None], wanted: set[str]) -> dict[str, Record]:
    """The run records of ``wanted`` run ids, from the ``*.runs.jsonl`` files beside the inputs
    (``OUT.runs.jsonl``, ``--run-dir``'s ``runs.jsonl``) and ``$LLMEVAL_HOME/runs/<id>/``."""
    from llmeval import paths
    from llmeval.records import read_records

    candidates: list[str] = []
    for d in sorted({os.path.dirname(os.path.abspath(p)) for p in inputs if p is not None}):
        candidates += sorted(glob.glob(os.path.join(d, "*runs.jsonl")))
    candidates += [str(paths.runs_dir() / r / "runs.jsonl") for r in sorted(wanted)]
    found: dict[str, Record] = {}
    for path in candidates:
        if len(found) == len(wanted):
            break
        if not os.path.isfile(path):
            continue
        try:
            for rec in read_records(path, tolerate_torn_tail=True):
                rid = rec.get("run_id")
                if rec.get("type") == "run" and rid in wanted and rid not in found:
                    found[rid] = rec
        except DataError:
            continue  # a damaged run record file costs provenance, not the aggregation
    return found


def _parse_ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise UsageError(f"--k: expected integers like 1,10,100, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--k: expected integers >= 1 like 1,10,100, got {text!r}")
    return ks


class Aggregate(cli.Command):
    prog = PROG
    description = "Aggregate scored records into metrics with intervals and comparisons."
    epilog = EPILOG
    inputs = None  # FILE|GLOB|DIR, expanded here
    output = "replace"
    output_help = (
        "write the output to OUT (replaced whole, atomically) instead of stdout; "
        "--format sqlite: the database to load into (created or added to)"
    )
    limit = None

    def add_arguments(self, p: cli.Parser) -> None:
        p.add_argument(
            "inputs",
            nargs="*",
            metavar="FILE|GLOB|DIR",
            help="scored records; a DIR (a run or campaign tree) gives its *.scored.jsonl[.gz] "
            "(default: stdin)",
        )
        p.add_argument(
            "--by", default="model,dataset", help="group fields (default: model,dataset)"
        )
        p.add_argument(
            "--metrics", help="only these metrics, comma-separated (e.g. pass@1,error_rate)"
        )
        p.add_argument(
            "--k", default="1,10,100", help="pass@k values to report when every task has k samples"
        )
        p.add_argument(
            "--format",
            choices=FORMATS,
            default="jsonl",
            help="output format (default: jsonl); html: a self-contained report; "
            "sqlite: load into the database -o names",
        )
        p.add_argument(
            "--compare", action="store_true", help="paired comparison of every pair of models"
        )
        p.add_argument(
            "--leaderboard",
            action="store_true",
            help="rank models over datasets (grouped by category) with bootstrap rank intervals",
        )
        p.add_argument(
            "--samples",
            type=cli.nonneg_int,
            default=1,
            metavar="N",
            help="--format html: samples kept per task and model for the drill-down (default 1)",
        )
        p.add_argument(
            "--bootstrap",
            type=cli.nonneg_int,
            default=1000,
            metavar="B",
            help="bootstrap resamples (default 1000)",
        )
        p.add_argument(
            "--seed", type=int, default=0, help="bootstrap / permutation seed (default 0)"
        )
        p.add_argument(
            "--ci-level",
            type=cli.probability,
            default=0.95,
            help="interval level (default 0.95)",
        )
        p.add_argument(
            "--alpha",
            type=cli.probability,
            default=0.05,
            help="significance level after Holm (default 0.05)",
        )
        p.add_argument(
            "--plot", metavar="OUT.png", help="bar chart of pass@1/accuracy with intervals"
        )
        p.add_argument(
            "--export", metavar="OUT.parquet", help="write the summary records as Parquet"
        )

    def run(self) -> int:
        from llmeval.records import read_many_numbered

        args = self.args
        fmt = args.format
        by = [f.strip() for f in args.by.split(",") if f.strip()]
        if not by:
            raise UsageError("--by: name at least one field, e.g. model,dataset")
        ks = _parse_ks(args.k)
        if fmt == "sqlite" and args.output in (None, "-"):
            raise UsageError("--format sqlite loads a database: name it with -o FILE.db")
        if args.leaderboard:
            _check_leaderboard_by(by)
        inputs = expand_inputs(args.inputs, warn=self.log)
        cli.check_stdin(PROG, inputs)
        cli.refuse_output_onto_input(args.output, inputs)  # -o would replace what it reads
        numbered: Iterable[tuple[str, Record]] = read_many_numbered(inputs)
        keeper = db = None
        if fmt == "html":
            from llmeval.html_report import SampleKeeper

            keeper = SampleKeeper(by, args.samples)
            numbered = keeper.tee(numbered)
        if fmt == "sqlite":
            from llmeval.store import Store

            db = Store(args.output)
            numbered = db.tee(numbered)
        try:
            text = self._aggregate(numbered, inputs, by, ks, keeper, db)
        except BaseException:
            if db is not None:
                db.abort()
            raise
        if text is not None:
            write_output(args.output, text)
        return 0

    def _aggregate(
        self,
        numbered: Iterable[tuple[str, Record]],
        inputs: list[str | None],
        by: list[str],
        ks: list[int],
        keeper: Any,
        db: Any,
    ) -> bytes | None:
        from llmeval import report

        args = self.args
        fmt = args.format
        groups = accumulate(numbered, by)
        if not groups:
            names = ", ".join("stdin" if i is None else i for i in inputs)
            raise StageError(f"no scored records in {names}")
        for line in provenance_warnings(groups, by):
            self.log(line)
        metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
        stats = dict(resamples=args.bootstrap, level=args.ci_level, seed=args.seed)
        summary = summarize(groups, by, ks=ks, metrics=metrics, **stats)
        full_report = fmt == "html"
        comps = (
            compare(groups, by, alpha=args.alpha, **stats)
            if args.compare or (full_report and "model" in by)
            else []
        )
        board = (
            leaderboard(groups, by, **stats)
            if args.leaderboard or (full_report and _leaderboard_possible(by))
            else []
        )
        wanted = {r for g in groups.values() for r in (*g.run_ids, *g.score_run_ids)}
        runs = run_records(inputs, wanted) if fmt in ("html", "sqlite") else {}
        text: bytes | None
        if fmt == "sqlite":
            from llmeval.store import basis

            bases = {key: group_basis(g, by, stats) for key, g in groups.items()}
            paired = [(bases[tuple(str(r[f]) for f in by)], r) for r in summary]
            started = {rid: str(r["started_at"]) for rid, r in runs.items() if r.get("started_at")}
            db.add_runs(runs[r] for r in sorted(runs))
            db.add_summary(
                by, paired, comps, board, basis([sorted(bases.values()), args.alpha]), started
            )
            added = db.commit()
            self.log(
                f"{args.output}: added "
                + ", ".join(f"{n} {t}" for t, n in added.items())
                + (" (nothing new)" if not any(added.values()) else "")
            )
            text = None
        elif fmt == "html":
            from llmeval import __version__
            from llmeval.html_report import render

            text = render(
                summary=summary,
                comps=comps,
                board=board,
                details=group_details(groups, by),
                samples=keeper,
                runs=runs,
                by=by,
                level=args.ci_level,
                inputs=["stdin" if i is None else i for i in inputs],
                version=__version__,
            )
        else:
            text = report.render(fmt, summary, comps, by, args.ci_level, board)
        if args.plot:
            report.plot(summary, by, args.plot)
            self.log(f"chart written to {args.plot}")
        if args.export:
            report.export_parquet([*summary, *comps, *board], args.export)
            self.log(f"summary written to {args.export}")
        return text


def _leaderboard_possible(by: list[str]) -> bool:
    return {"model", "dataset"} <= set(by) and set(by) <= {"model", "dataset", "category"}


def _check_leaderboard_by(by: list[str]) -> None:
    if not _leaderboard_possible(by):
        raise UsageError(
            "--leaderboard ranks models over datasets: --by must be model,dataset "
            f"(got {','.join(by)})"
        )


def group_basis(group: Group, by: list[str], stats: dict[str, Any]) -> str:
    """What a group's metrics were computed from, as a content hash (the store's key)."""
    from llmeval.store import basis

    return basis(
        [
            dict(zip(by, group.key)),
            sorted(group.tasks.items()),
            sorted(group.run_ids),
            sorted(group.score_run_ids),
            stats,
        ]
    )


def write_output(path: str | None, data: bytes) -> None:
    """``data`` to stdout, or to ``path`` replaced atomically (temp file + rename)."""
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    if not os.path.exists(path) or os.path.isfile(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    else:  # /dev/null, a FIFO
        with open(path, "wb") as fh:
            fh.write(data)


def main(argv: list[str] | None = None) -> int:
    return Aggregate().main(argv)


if __name__ == "__main__":
    sys.exit(main())
