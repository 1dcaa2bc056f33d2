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
from typing import Any

from llmeval import cli
from llmeval.metrics import pass_at_k
from llmeval.records import ERROR, FAIL, NO_ANSWER, PASS, STATUSES, TIMEOUT, DataError, Record

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


STATUS_INDEX = {s: 2 + i for i, s in enumerate(STATUSES)}
TOKENS, TOKEN_COUNT = 2 + len(STATUSES), 3 + len(STATUSES)


def accumulate(
    numbered: Iterable[tuple[str, Record]], by: list[str]
) -> dict[tuple[str, ...], Group]:
    """Fold scored records into per-group, per-task counters."""
    groups: dict[tuple[str, ...], Group] = {}
    for where, rec in numbered:
        score = rec.get("score")
        if not isinstance(score, dict) or score.get("status") not in STATUS_INDEX:
            raise DataError(
                where, 'no field "score" with a known status; aggregate eval-score output'
            )
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
        if isinstance(tokens, int):
            counters[TOKENS] += tokens
            counters[TOKEN_COUNT] += 1
        group.scorers.add(str(rec.get("scorer")))
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


def metrics_for(group: Group, ks: Iterable[int]) -> list[str]:
    """pass@k for every k all tasks have samples for (code), else accuracy; then rates, tokens."""
    min_n = min(c[0] for c in group.tasks.values())
    if group.scorers <= {"code_exec"}:
        primary = [f"pass@{k}" for k in sorted(set(ks)) if k <= min_n]
    else:
        primary = ["accuracy"]
    return [*primary, *RATE_METRICS, "mean_completion_tokens"]


def primary_metric(group: Group) -> str:
    return "pass@1" if group.scorers <= {"code_exec"} else "accuracy"


def bootstrap_ci(
    values: list[float], resamples: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling tasks."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if len(arr) < 2 or resamples < 1:
        return float(arr.mean()), float(arr.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for any task count
        stop = min(resamples, start + 1000)
        idx = rng.integers(0, len(arr), size=(stop - start, len(arr)))
        means[start:stop] = arr[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


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
            _, values = per_task(group, metric)
            if not values:
                continue
            lo, hi = bootstrap_ci(values, resamples, level, seed)
            out.append(
                {
                    "type": "metric",
                    **dict(zip(by, key)),
                    "metric": metric,
                    "value": sum(values) / len(values),
                    "ci_low": lo,
                    "ci_high": hi,
                    "ci_level": level,
                    "n_tasks": len(values),
                    "n_samples": n_samples,
                    "counts": counts,
                    "bootstrap": resamples,
                    "seed": seed,
                    "run_ids": sorted(group.run_ids),
                    "presets": sorted(group.presets),
                    "dataset_hashes": sorted(group.dataset_hashes),
                    "llmeval_versions": sorted(group.versions),
                }
            )
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    m = len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


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
    from scipy import stats

    if "model" not in by:
        raise cli.StageError("--compare needs model among the --by fields")
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
                "type": "comparison",
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
            if binary:
                only_a_pass = int(np.sum((xa == 1) & (xb == 0)))
                only_b_pass = int(np.sum((xa == 0) & (xb == 1)))
                n_disc = only_a_pass + only_b_pass
                p = float(stats.binomtest(only_a_pass, n_disc, 0.5).pvalue) if n_disc else 1.0
                test, discordant = "mcnemar_exact", {"a_only": only_a_pass, "b_only": only_b_pass}
            else:
                if np.all(d == 0):
                    p = 1.0
                else:
                    res = stats.permutation_test(
                        (xa, xb),
                        lambda x, y, axis: np.mean(x - y, axis=axis),
                        permutation_type="samples",
                        vectorized=True,
                        n_resamples=permutations,
                        alternative="two-sided",
                        random_state=seed,
                    )
                    p = float(res.pvalue)
                test, discordant = "paired_permutation", None
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


# ---------------------------------------------------------------------------- output


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return "" if v is None else str(v)


def rows_for_people(summary: list[Record], by: list[str]) -> tuple[list[str], list[list[str]]]:
    header = [
        *by,
        "metric",
        "value",
        "95% CI",
        "tasks",
        "samples",
        "pass",
        "fail",
        "timeout",
        "error",
        "no_answer",
    ]
    rows = []
    for r in summary:
        if r["type"] != "metric":
            continue
        c = r["counts"]
        rows.append(
            [
                *(str(r[f]) for f in by),
                r["metric"],
                _fmt(r["value"]),
                f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                str(r["n_tasks"]),
                str(r["n_samples"]),
                *(str(c[s]) for s in (PASS, FAIL, TIMEOUT, ERROR, NO_ANSWER)),
            ]
        )
    return header, rows


def comparison_rows(comps: list[Record]) -> tuple[list[str], list[list[str]]]:
    header = [
        "context",
        "metric",
        "model_a",
        "model_b",
        "diff",
        "95% CI",
        "test",
        "p",
        "p_holm",
        "significant",
        "shared",
        "only_a",
        "only_b",
    ]
    rows = []
    for r in comps:
        ctx = " ".join(str(v) for k, v in r.items() if k not in COMPARISON_FIELDS)
        rows.append(
            [
                ctx,
                r["metric"],
                r["model_a"],
                r["model_b"],
                _fmt(r["diff"]),
                f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                _fmt(r["test"]),
                _p(r["p_value"]),
                _p(r["p_holm"]),
                "yes" if r["significant"] else "no",
                str(r["n_shared"]),
                str(len(r["only_a"])),
                str(len(r["only_b"])),
            ]
        )
    return header, rows


COMPARISON_FIELDS = {
    "type",
    "metric",
    "model_a",
    "model_b",
    "n_shared",
    "only_a",
    "only_b",
    "value_a",
    "value_b",
    "diff",
    "ci_low",
    "ci_high",
    "ci_level",
    "test",
    "p_value",
    "p_holm",
    "significant",
    "discordant",
}


def _p(v: float | None) -> str:
    return "" if v is None else (f"{v:.2e}" if v < 1e-3 else f"{v:.4f}")


def render_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def plain_statement(r: Record) -> str:
    """One sentence a person can read about a comparison."""
    if r["diff"] is None:
        return f"{r['model_a']} vs {r['model_b']}: no shared tasks to compare."
    better = r["model_a"] if r["diff"] > 0 else r["model_b"]
    verdict = f"{better} is better" if r["significant"] else "no significant difference"
    return (
        f"{r['model_a']} vs {r['model_b']} on {r['n_shared']} shared tasks: {r['metric']} "
        f"{r['value_a']:.3f} vs {r['value_b']:.3f}, difference {r['diff']:+.3f} "
        f"(95% CI {r['ci_low']:+.3f} to {r['ci_high']:+.3f}), {r['test']} p={_p(r['p_value'])}, "
        f"Holm p={_p(r['p_holm'])}: {verdict}."
    )


def plot(summary: list[Record], by: list[str], path: str) -> int:
    """Bars of each group's primary metric with its interval, one bar per (model, dataset).

    Returns the number of bars drawn."""
    try:
        import matplotlib
    except ImportError:
        raise cli.missing_dependency("matplotlib", "stats") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r["type"] == "metric" and r["metric"] in ("pass@1", "accuracy")]
    if not rows:
        raise cli.StageError("--plot: no pass@1 or accuracy to plot")
    datasets = sorted({r.get("dataset", "") for r in rows})
    models = sorted({r.get("model", "") for r in rows})
    width = 0.8 / max(1, len(models))
    n_bars = 0
    fig, ax = plt.subplots(
        figsize=(max(5, 1.6 * len(datasets) * max(1, len(models)) ** 0.5 + 2), 4)
    )
    for i, model in enumerate(models):
        xs: list[float] = []
        ys: list[float] = []
        errs: list[list[float]] = [[], []]
        for j, ds in enumerate(datasets):
            match = [r for r in rows if r.get("model", "") == model and r.get("dataset", "") == ds]
            if not match:
                continue
            r = match[0]
            xs.append(j + (i - (len(models) - 1) / 2) * width)
            ys.append(r["value"])
            errs[0].append(max(0.0, r["value"] - r["ci_low"]))
            errs[1].append(max(0.0, r["ci_high"] - r["value"]))
        ax.bar(xs, ys, width * 0.95, yerr=errs, capsize=4, label=model)
        n_bars += len(xs)
        for x, y in zip(xs, ys):
            ax.annotate(
                f"{y:.2f}",
                (x, y),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=8,
            )
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets)
    ax.set_ylabel(" / ".join(sorted({r["metric"] for r in rows})) + " (95% CI)")
    ax.set_ylim(0, min(1.05, max(1e-3, max(r["ci_high"] for r in rows)) * 1.25 + 0.02))
    ax.set_title("llmeval: " + ", ".join(models) if len(models) <= 3 else "llmeval")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return n_bars


def export_parquet(summary: list[Record], path: str) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise cli.missing_dependency("pyarrow", "stats") from None
    flat = []
    for r in summary:
        row = {
            k: (v if not isinstance(v, (dict, list)) else __import__("orjson").dumps(v).decode())
            for k, v in r.items()
        }
        flat.append(row)
    keys = sorted({k for r in flat for k in r})
    pq.write_table(pa.table({k: [r.get(k) for r in flat] for k in keys}), path)


# ---------------------------------------------------------------------------- command line


def expand_inputs(args: list[str]) -> list[str | None]:
    """FILEs, globs (quoted, ``**`` recursive) and directories (their ``*.scored.jsonl*``)."""
    if not args:
        return [None]
    out: list[str | None] = []
    for a in args:
        if a == "-":
            out.append(None)
        elif os.path.isdir(a):
            found = sorted(glob.glob(os.path.join(a, "**", "*.scored.jsonl*"), recursive=True))
            if not found:
                raise DataError(a, "directory has no *.scored.jsonl files")
            out += found
        elif any(ch in a for ch in "*?["):
            found = sorted(glob.glob(a, recursive=True))
            if not found:
                raise DataError(a, "pattern matches no file")
            out += found
        else:
            out.append(a)
    return out


def build_parser() -> cli.Parser:
    p = cli.Parser(
        PROG, "Aggregate scored records into metrics with intervals and comparisons.", EPILOG
    )
    p.add_argument(
        "inputs", nargs="*", metavar="FILE|GLOB|DIR", help="scored records (default: stdin)"
    )
    p.add_argument("--by", default="model,dataset", help="group fields (default: model,dataset)")
    p.add_argument("--metrics", help="only these metrics, comma-separated (e.g. pass@1,error_rate)")
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
        type=int,
        default=1000,
        metavar="B",
        help="bootstrap resamples (default 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap / permutation seed (default 0)")
    p.add_argument("--ci-level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument(
        "--alpha", type=float, default=0.05, help="significance level after Holm (default 0.05)"
    )
    p.add_argument("--plot", metavar="OUT.png", help="bar chart of pass@1/accuracy with intervals")
    p.add_argument("--export", metavar="OUT.parquet", help="write the summary records as Parquet")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(PROG, lambda: _main(args), args.verbose)


def _main(args: Any) -> int:
    import orjson

    from llmeval.records import read_many_numbered

    by = [f.strip() for f in args.by.split(",") if f.strip()]
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        raise cli.StageError(f"--k: expected integers like 1,10,100, got {args.k!r}") from None
    inputs = expand_inputs(args.inputs)
    cli.check_stdin(PROG, [i for i in inputs])
    groups = accumulate(read_many_numbered(inputs), by)
    if not groups:
        raise cli.StageError("no scored records in the input")
    for line in provenance_warnings(groups, by):
        cli.log(PROG, line)
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
    out = sys.stdout
    if args.format == "jsonl":
        for r in [*summary, *comps]:
            sys.stdout.buffer.write(orjson.dumps(r) + b"\n")
    elif args.format in ("table", "markdown"):
        md = args.format == "markdown"
        out.write(render_table(*rows_for_people(summary, by), markdown=md))
        if comps:
            out.write("\n")
            out.write(render_table(*comparison_rows(comps), markdown=md))
            out.write("\n")
            for r in comps:
                out.write(plain_statement(r) + "\n")
    else:
        import csv

        header, rows = rows_for_people(summary, by)
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    out.flush()
    if args.plot:
        plot(summary, by, args.plot)
        cli.log(PROG, f"chart written to {args.plot}")
    if args.export:
        export_parquet([*summary, *comps], args.export)
        cli.log(PROG, f"summary written to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
