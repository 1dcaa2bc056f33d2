"""People-facing renderings of eval-aggregate's summary: tables, sentences, charts, files.

The summary, comparison and leaderboard records (docs/records.md,
"eval-aggregate") are the data; this module only presents them: aligned text
and Markdown tables (the leaderboard grid among them), one CSV with a
``type`` column for every kind of record, one plain sentence per comparison,
a bar chart with intervals (PNG) and a Parquet export. The HTML report is
:mod:`llmeval.html_report`, the database :mod:`llmeval.store`.
"""

from __future__ import annotations

from typing import Any

from llmeval.errors import StageError, missing_dependency
from llmeval.records import Record
from llmeval.vocab import ERROR, FAIL, NO_ANSWER, PASS, TIMEOUT, TYPE_METRIC


def ci_label(level: float) -> str:
    """``95% CI`` for 0.95: the interval's label follows ``--ci-level``."""
    return f"{level * 100:g}% CI"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return "" if v is None else str(v)


def rows_for_people(
    summary: list[Record], by: list[str], level: float = 0.95
) -> tuple[list[str], list[list[str]]]:
    header = [
        *by,
        "metric",
        "value",
        ci_label(level),
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
        if r["type"] != TYPE_METRIC:
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


def comparison_rows(
    comps: list[Record], level: float = 0.95
) -> tuple[list[str], list[list[str]]]:
    header = [
        "context",
        "metric",
        "model_a",
        "model_b",
        "diff",
        ci_label(level),
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
        f"({ci_label(r.get('ci_level') or 0.95)} {r['ci_low']:+.3f} to {r['ci_high']:+.3f}), "
        f"{r['test']} p={_p(r['p_value'])}, "
        f"Holm p={_p(r['p_holm'])}: {verdict}."
    )


def plot(summary: list[Record], by: list[str], path: str) -> int:
    """Bars of each group's primary metric with its interval, one bar per (model, dataset).

    Returns the number of bars drawn."""
    try:
        import matplotlib
    except ImportError:
        raise missing_dependency("matplotlib", "stats") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r for r in summary if r["type"] == TYPE_METRIC and r["metric"] in ("pass@1", "accuracy")
    ]
    if not rows:
        raise StageError("--plot: no pass@1 or accuracy to plot")
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
    level = rows[0].get("ci_level") or 0.95
    ax.set_ylabel(" / ".join(sorted({r["metric"] for r in rows})) + f" ({ci_label(level)})")
    ax.set_ylim(0, min(1.05, max(1e-3, max(r["ci_high"] for r in rows)) * 1.25 + 0.02))
    ax.set_title("llmeval: " + ", ".join(models) if len(models) <= 3 else "llmeval")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return n_bars


def export_parquet(summary: list[Record], path: str) -> None:
    """The summary (and comparison) records as one Parquet table; nested fields as JSON text."""
    import orjson

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_dependency("pyarrow", "stats") from None
    flat = []
    for r in summary:
        row = {
            k: (v if not isinstance(v, (dict, list)) else orjson.dumps(v).decode())
            for k, v in r.items()
        }
        flat.append(row)
    keys = sorted({k for r in flat for k in r})
    pq.write_table(pa.table({k: [r.get(k) for r in flat] for k in keys}), path)


def leaderboard_tables(
    board: list[Record], level: float
) -> list[tuple[str, list[str], list[list[str]]]]:
    """One (title, header, rows) per leaderboard scope: rank, rank interval, score, then
    each dataset's primary metric with its interval, datasets grouped by category."""
    scopes: dict[str, list[Record]] = {}
    for r in board:
        scopes.setdefault(r["scope"], []).append(r)
    out = []
    for scope, rows in scopes.items():
        ds = rows[0]["datasets"]
        metrics = rows[0]["metrics"]
        category = rows[0].get("categories") or {}
        header = ["rank", f"rank {ci_label(level)}", "model", "score", ci_label(level)]
        header += [
            "/".join(x for x in (category.get(d), d) if x) + f" {metrics.get(d, '')}".rstrip()
            for d in ds
        ]
        body = []
        for r in rows:
            ranked = r["rank"] is not None
            line = [
                str(r["rank"]) if ranked else "-",
                f"{r['rank_low']}-{r['rank_high']}" if ranked else "not ranked",
                r["model"],
                _fmt(r["value"]),
                f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if ranked else "",
            ]
            for d in ds:
                c = r["cells"].get(d)
                line.append(
                    "missing"
                    if c is None
                    else f"{_fmt(c['value'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
                )
            body.append(line)
        what = "all datasets" if scope == "all" else f"category {scope}"
        title = f"leaderboard, {what}: mean over {len(ds)} datasets, {rows[0]['n_models']} ranked"
        out.append((title, header, body))
    return out


CSV_EXTRA = [
    "type", "ci_low", "ci_high", "model_a", "model_b", "value_a", "value_b", "diff", "test",
    "p_value", "p_holm", "significant", "n_shared", "only_a", "only_b", "scope", "rank",
    "rank_low", "rank_high",
]  # fmt: skip


def _raw(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ";".join(map(str, v))
    return str(v)


def csv_rows(
    summary: list[Record], comps: list[Record], board: list[Record], by: list[str], level: float
) -> tuple[list[str], list[list[str]]]:
    """One CSV for everything: the people's columns first, then a ``type`` column (metric,
    comparison, leaderboard) and the raw numbers of each kind (docs/records.md)."""
    header, rows = rows_for_people(summary, by, level)
    width = len(header)
    out = []
    for r, row in zip((r for r in summary if r["type"] == TYPE_METRIC), rows):
        extra = dict(type=r["type"], ci_low=r["ci_low"], ci_high=r["ci_high"])
        out.append(row + [_raw(extra.get(c)) for c in CSV_EXTRA])
    for c in comps:
        row = [_raw(c.get(f)) if f != "model" else "" for f in by]
        row += [c["metric"], "", f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]", str(c["n_shared"])]
        row += [""] * (width - len(row))
        out.append(row + [_raw(c.get(k)) for k in CSV_EXTRA])
    for b in board:
        row = [b["model"] if f == "model" else "" for f in by]
        ranked = b["rank"] is not None
        row += [
            "mean of " + "/".join(sorted(set(b["metrics"].values()))),
            _fmt(b["value"]),
            f"[{_fmt(b['ci_low'])}, {_fmt(b['ci_high'])}]" if ranked else "",
            str(b["n_tasks"]),
        ]
        row += [""] * (width - len(row))
        out.append(row + [_raw(b.get(k)) for k in CSV_EXTRA])
    return header + CSV_EXTRA, out


def render(
    fmt: str,
    summary: list[Record],
    comps: list[Record],
    by: list[str],
    level: float,
    board: list[Record] | None = None,
) -> bytes:
    """eval-aggregate's output in ``fmt`` (jsonl, table, markdown, csv) as bytes.

    With a leaderboard, the tables show it in place of the long metric table."""
    import csv
    import io

    import orjson

    board = board or []
    if fmt == "jsonl":
        return b"".join(orjson.dumps(r) + b"\n" for r in [*summary, *comps, *board])
    if fmt in ("table", "markdown"):
        md = fmt == "markdown"
        if board:
            parts = []
            for title, header, rows in leaderboard_tables(board, level):
                parts += [f"{'## ' if md else ''}{title}\n\n" if md else f"{title}\n"]
                parts += [render_table(header, rows, markdown=md), "\n"]
        else:
            parts = [render_table(*rows_for_people(summary, by, level), markdown=md)]
        if comps:
            parts += ["\n", render_table(*comparison_rows(comps, level), markdown=md), "\n"]
            parts += [plain_statement(r) + "\n" for r in comps]
        return "".join(parts).encode()
    out = io.StringIO()
    writer = csv.writer(out)
    header, rows = csv_rows(summary, comps, board, by, level)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()
