"""eval-aggregate: scored records -> metrics with confidence intervals, paired comparisons.

    eval-aggregate 'results/**/*.scored.jsonl' --compare --format table

Records stream through per-(group, task) counters, so memory depends on the
number of groups and tasks, not of records. Intervals are percentile
bootstraps over tasks (n samples of one task are not n independent tasks),
seeded so the same input gives the same interval. Field names: docs/records.md.
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

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
    TYPE_METRIC,
)

PROG = "eval-aggregate"
FORMATS = ("jsonl", "table", "csv", "markdown")
DEFAULT_K = (1, 10, 100)
RATE_METRICS = {"error_rate": ERROR, "timeout_rate": TIMEOUT, "no_answer_rate": NO_ANSWER}

EPILOG = """\
examples:
  eval-resolve humaneval | eval-generate --model gemma3-270m | eval-score | eval-aggregate --format table
  eval-aggregate 'results/my-campaign/**/*.scored.jsonl' --compare --format markdown
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
    run_ids: set[str] = field(default_factory=set)
    presets: set[str] = field(default_factory=set)
    dataset_hashes: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)
    # score.extractions: per metric name (the reference harness's), per task [n, *status counts]
    extractions: dict[str, dict[str, list[int]]] = field(default_factory=dict)


STATUS_INDEX = {s: 2 + i for i, s in enumerate(STATUSES)}
TOKENS, TOKEN_COUNT = 2 + len(STATUSES), 3 + len(STATUSES)


def accumulate(
    numbered: Iterable[tuple[str, Record]], by: list[str]
) -> dict[tuple[str, ...], Group]:
    """Fold scored records into per-group, per-task counters."""
    groups: dict[tuple[str, ...], Group] = {}
    for where, rec in numbered:
        if not isinstance(rec.get("score"), dict):
            raise DataError(
                where, 'no field "score" with a known status; aggregate eval-score output'
            )
        check_fields(where, rec, required=("score.status",), optional=("usage", "sample"))
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
        status = score["status"]
        counters[0] += 1
        counters[1] += status == PASS
        counters[STATUS_INDEX[status]] += 1
        tokens = (rec.get("usage") or {}).get("completion_tokens")
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            counters[TOKENS] += tokens
            counters[TOKEN_COUNT] += 1
        group.scorers.add(str(rec.get("scorer")))
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
        for attr, value in (
            ("run_ids", rec.get("run_id")),
            ("presets", rec.get("preset")),
            ("dataset_hashes", rec.get("dataset_hash")),
            ("versions", rec.get("llmeval_version")),
        ):
            if isinstance(value, str):
                getattr(group, attr).add(value)
    return groups


def per_task(group: Group, metric: str) -> tuple[list[str], list[float]]:
    """The per-task values whose mean is ``metric`` (and whose resampling gives its interval)."""
    ids, values = [], []
    for task, c in group.tasks.items():
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
    per = group.extractions.get(name, {})
    return list(per), [c[STATUS_INDEX[PASS]] / c[0] for c in per.values()]


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


def provenance_warnings(groups: dict[tuple[str, ...], Group], by: list[str]) -> Iterator[str]:
    for key, g in sorted(groups.items()):
        label = " ".join(f"{f}={v}" for f, v in zip(by, key))
        if len(g.dataset_hashes) > 1:
            yield f"warning: {label} mixes {len(g.dataset_hashes)} dataset hashes: {', '.join(sorted(g.dataset_hashes))}"
        if len(g.presets) > 1:
            yield f"warning: {label} mixes presets: {', '.join(sorted(g.presets))}"


# ---------------------------------------------------------------------------- command line


def _is_scored_file(name: str) -> bool:
    return name.endswith((".scored.jsonl", ".scored.jsonl.gz"))


def expand_inputs(args: list[str]) -> list[str | None]:
    """FILEs, globs (quoted, ``**`` recursive) and directories (their ``*.scored.jsonl[.gz]``).

    A directory yields exactly its scored record files: never the heartbeats
    (``*.metrics.json``) or run records (``*.runs.jsonl``) beside them.
    """
    if not args:
        return [None]
    out: list[str | None] = []
    for a in args:
        if a == "-":
            out.append(None)
        elif os.path.isdir(a):
            found = sorted(
                f
                for f in glob.glob(os.path.join(a, "**", "*.scored.jsonl*"), recursive=True)
                if _is_scored_file(f) and os.path.isfile(f)
            )
            if not found:
                raise DataError(a, "directory has no *.scored.jsonl files")
            out += found
        elif any(ch in a for ch in "*?["):
            found = sorted(f for f in glob.glob(a, recursive=True) if os.path.isfile(f))
            if not found:
                raise DataError(a, "pattern matches no file")
            out += found
        else:
            if not os.path.exists(a):
                raise DataError(a, "no such file")
            out.append(a)
    return out


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
    output_help = "write the output to OUT (replaced whole, atomically) instead of stdout"
    limit = None

    def add_arguments(self, p: cli.Parser) -> None:
        p.add_argument(
            "inputs", nargs="*", metavar="FILE|GLOB|DIR", help="scored records (default: stdin)"
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
            "--format", choices=FORMATS, default="jsonl", help="output format (default: jsonl)"
        )
        p.add_argument(
            "--compare", action="store_true", help="paired comparison of every pair of models"
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
        from llmeval import report
        from llmeval.records import read_many_numbered

        args = self.args
        by = [f.strip() for f in args.by.split(",") if f.strip()]
        if not by:
            raise UsageError("--by: name at least one field, e.g. model,dataset")
        ks = _parse_ks(args.k)
        inputs = expand_inputs(args.inputs)
        cli.check_stdin(PROG, inputs)
        groups = accumulate(read_many_numbered(inputs), by)
        if not groups:
            names = ", ".join("stdin" if i is None else i for i in inputs)
            raise StageError(f"no scored records in {names}")
        for line in provenance_warnings(groups, by):
            self.log(line)
        metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
        summary = summarize(
            groups,
            by,
            ks=ks,
            metrics=metrics,
            resamples=args.bootstrap,
            level=args.ci_level,
            seed=args.seed,
        )
        comps = (
            compare(
                groups,
                by,
                resamples=args.bootstrap,
                level=args.ci_level,
                seed=args.seed,
                alpha=args.alpha,
            )
            if args.compare
            else []
        )
        text = report.render(args.format, summary, comps, by, args.ci_level)
        write_output(args.output, text)
        if args.plot:
            report.plot(summary, by, args.plot)
            self.log(f"chart written to {args.plot}")
        if args.export:
            report.export_parquet([*summary, *comps], args.export)
            self.log(f"summary written to {args.export}")
        return 0


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
