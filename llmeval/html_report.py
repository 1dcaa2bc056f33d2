"""eval-aggregate's HTML report: one self-contained file a person opens anywhere.

No server, no network, no CDN: CSS, JavaScript and the SVG charts are
inline, so the file opens from a cluster's shared disk or as an email
attachment. What it shows: every model's metrics with intervals per category
and dataset, the leaderboard with rank intervals, pairwise comparisons, a
per-task matrix (which model passes which task) that drills down to samples,
extraction health and provenance; tables sort (click a header) and filter.

Untrusted text (prompts, completions, verdict details, model names) is
escaped where it is written into HTML, and the drill-down's samples travel as
JSON in a ``<script type="application/json">`` block with ``<``, ``>``,
``&``, U+2028 and U+2029 escaped, then reach the page through ``textContent``
only, so a completion holding ``</script>`` or ``</textarea>`` is text.

Memory stays bounded: :class:`SampleKeeper` keeps at most ``per_task``
samples (the lowest sample indices) per task and model, with long texts cut
to ``text_cap`` characters; the matrix itself comes from eval-aggregate's
per-task counters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from html import escape
from typing import Any

import orjson

from llmeval.records import Record
from llmeval.vocab import ERROR, FAIL, NO_ANSWER, PASS, TIMEOUT, TYPE_METRIC

TEXT_CAP = 4000
PRIMARY = ("pass@1", "accuracy")


def _cap(text: Any, limit: int) -> str | None:
    if text is None:
        return None
    text = text if isinstance(text, str) else orjson.dumps(text).decode()
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters not kept in this report]"


def prompt_text(rec: Record) -> Any:
    """The prompt as a person reads it: the text, or chat messages as ``role: content`` lines."""
    messages = rec.get("messages")
    if isinstance(messages, list) and messages:
        return "\n\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
            for m in messages
        )
    return rec.get("prompt")


class SampleKeeper:
    """The samples the drill-down shows, kept while records stream past (bounded memory).

    Per (group, task): at most ``per_task`` samples, those with the lowest
    sample indices, so what is kept depends only on the inputs, not on their
    order. Prompts are kept once per task.
    """

    def __init__(self, by: list[str], per_task: int = 1, text_cap: int = TEXT_CAP):
        self.by = by
        self.per_task = per_task
        self.text_cap = text_cap
        self.prompts: dict[str, str | None] = {}
        self.samples: dict[tuple[tuple[str, ...], str], list[dict[str, Any]]] = {}

    def tee(self, numbered: Iterable[tuple[str, Record]]) -> Iterator[tuple[str, Record]]:
        """Pass records on; keep a record once the consumer has accepted it (asked for the next)."""
        for where, rec in numbered:
            yield where, rec
            self.add(rec)

    def add(self, rec: Record) -> None:
        """Keep ``rec`` if it is among the lowest ``per_task`` samples of its group and task."""
        if self.per_task < 1:
            return
        key = tuple(str(rec.get(f)) for f in self.by)
        task = str(rec.get("id") or rec.get("task_id"))
        if task not in self.prompts:
            self.prompts[task] = _cap(prompt_text(rec), self.text_cap)
        index = rec.get("sample") if isinstance(rec.get("sample"), int) else 0
        run_id = str(rec.get("run_id") or "")
        model = str(rec.get("model"))
        kept = self.samples.setdefault((key, task), [])
        same = [s for s in kept if (s["sample"], s["model"]) == (index, model)]
        if same:  # the same sample from two runs: keep one, the same whatever the order
            if run_id >= same[0]["run_id"]:
                return
            kept.remove(same[0])
        if len(kept) >= self.per_task and (index, model) > (kept[-1]["sample"], kept[-1]["model"]):
            return
        score = rec.get("score") or {}
        cap = self.text_cap
        kept.append(
            {
                "sample": index,
                "model": model,
                "run_id": run_id,
                "status": score.get("status"),
                "completion": _cap(rec.get("completion"), cap),
                "detail": _cap(score.get("detail"), cap),
                "extracted": _cap(score.get("extracted"), 200),
                "expected": _cap(score.get("expected"), 200),
                "sanitized": _cap(score.get("sanitized"), cap),
                "finish_reason": rec.get("finish_reason"),
                "error": _cap(rec.get("error"), cap),
                "tokens": (rec.get("usage") or {}).get("completion_tokens"),
            }
        )
        kept.sort(key=lambda s: (s["sample"], s["model"]))
        del kept[self.per_task :]


# ---------------------------------------------------------------------------- helpers


def _natural(text: str) -> list[Any]:
    """Sort key that puts HumanEval/2 before HumanEval/10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text)]


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def _p(v: float | None) -> str:
    return "" if v is None else (f"{v:.2e}" if v < 1e-3 else f"{v:.4f}")


def _interval(lo: Any, hi: Any) -> str:
    return "" if lo is None or hi is None else f"[{_num(lo)}, {_num(hi)}]"


def _td(text: Any, sort: Any = None, cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if sort is not None:
        attrs += f' data-v="{escape(str(sort))}"'
    return f"<td{attrs}>{escape(str(text))}</td>"


def _table(tid: str, header: list[str], rows: list[str], caption: str = "") -> str:
    """A sortable, filterable table; ``rows`` are ready ``<tr>`` strings (cells escaped)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (
        f'<div class="tablebox"><input class="filter" type="search" data-table="{tid}" '
        f'placeholder="filter rows" aria-label="filter rows of {escape(caption or tid)}">'
        f'<table id="{tid}" class="data sortable">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _slug(text: str) -> str:
    """An element id for ``text``: itself when it is one already, else a cleaned form plus a
    short hash (so "a b" and "a-b" do not share an id)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"
    if slug == text:
        return slug
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``</script>``, ``<!--``, or JS line terminators."""
    text = orjson.dumps(data).decode()
    for ch, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return text


# ---------------------------------------------------------------------------- charts


def bar_chart(rows: list[tuple[str, float, float | None, float | None]], title: str) -> str:
    """Horizontal bars (0..1) with interval whiskers, one row per label, as inline SVG."""
    label_w, plot_w, row_h, top = 190, 420, 24, 28
    height = top + row_h * len(rows) + 26
    width = label_w + plot_w + 70
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" class="ct">{escape(title)}</text>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + tick * plot_w
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 22}" class="grid"/>'
            f'<text x="{x:.1f}" y="{height - 8}" class="tick" text-anchor="middle">{tick:g}</text>'
        )
    for i, (label, value, lo, hi) in enumerate(rows):
        y = top + i * row_h
        short = label if len(label) <= 28 else label[:27] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="lab">'
            f"{escape(short)}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{max(0.0, min(1.0, value)) * plot_w:.1f}" '
            f'height="{row_h - 8}" class="bar"><title>{escape(label)}: {_num(value)} '
            f"{escape(_interval(lo, hi))}</title></rect>"
        )
        if lo is not None and hi is not None:
            x1 = label_w + max(0.0, min(1.0, lo)) * plot_w
            x2 = label_w + max(0.0, min(1.0, hi)) * plot_w
            mid = y + row_h / 2
            parts.append(
                f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}" class="ci"/>'
                f'<line x1="{x1:.1f}" y1="{mid - 5:.1f}" x2="{x1:.1f}" y2="{mid + 5:.1f}" class="ci"/>'
                f'<line x1="{x2:.1f}" y1="{mid - 5:.1f}" x2="{x2:.1f}" y2="{mid + 5:.1f}" class="ci"/>'
            )
        parts.append(
            f'<text x="{label_w + plot_w + 8}" y="{y + 15}" class="val">{_num(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def rank_chart(rows: list[Record], title: str) -> str:
    """Each ranked model's rank (dot) and bootstrap rank interval (segment), as inline SVG."""
    ranked = [r for r in rows if r["rank"] is not None]
    if not ranked:
        return ""
    n = max(r["n_models"] for r in ranked)
    label_w, plot_w, row_h, top = 190, 360, 24, 28
    height = top + row_h * len(ranked) + 26
    width = label_w + plot_w + 40
    step = plot_w / max(1, n - 1) if n > 1 else 0.0

    def x(rank: float) -> float:
        return label_w + (rank - 1) * step if n > 1 else label_w + plot_w / 2

    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" class="ct">{escape(title)}</text>',
    ]
    for rank in range(1, n + 1):
        parts.append(
            f'<line x1="{x(rank):.1f}" y1="{top - 4}" x2="{x(rank):.1f}" y2="{height - 22}" '
            f'class="grid"/><text x="{x(rank):.1f}" y="{height - 8}" class="tick" '
            f'text-anchor="middle">{rank}</text>'
        )
    for i, r in enumerate(ranked):
        y = top + i * row_h + row_h / 2
        label = str(r["model"])
        short = label if len(label) <= 28 else label[:27] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 4:.1f}" text-anchor="end" class="lab">'
            f"{escape(short)}</text>"
            f'<line x1="{x(r["rank_low"]):.1f}" y1="{y:.1f}" x2="{x(r["rank_high"]):.1f}" '
            f'y2="{y:.1f}" class="rankci"/>'
            f'<circle cx="{x(r["rank"]):.1f}" cy="{y:.1f}" r="5" class="dot">'
            f"<title>{escape(label)}: rank {r['rank']} "
            f"({r['rank_low']}-{r['rank_high']})</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------- sections


def _column(fields: dict[str, str]) -> str:
    """What a matrix column and a chart row are called: the model, plus other group fields."""
    rest = [v for k, v in fields.items() if k not in ("model", "dataset", "category")]
    return " ".join([fields.get("model", ""), *rest]).strip() or "all"


def _section(fields: dict[str, str]) -> str:
    return fields.get("dataset", "all")


def _metric_order(metric: str) -> tuple[int, int, str]:
    if metric.startswith("pass@"):
        return (0, int(metric[5:]), metric)
    order = ["accuracy", "error_rate", "timeout_rate", "no_answer_rate", "mean_completion_tokens"]
    return (1, order.index(metric) if metric in order else 99, metric)


def results_section(summary: list[Record], by: list[str], level: float) -> str:
    """Per category, per dataset: a table of every model's metrics with intervals, and a chart."""
    metrics = [r for r in summary if r["type"] == TYPE_METRIC]
    cats: dict[str, dict[str, list[Record]]] = {}
    for r in metrics:
        fields = {f: str(r[f]) for f in by}
        cats.setdefault(str(r.get("category") or fields.get("category") or ""), {}).setdefault(
            _section(fields), []
        ).append(r)
    out = ['<section id="results"><h2>Results by category and dataset</h2>']
    out.append(
        f"<p>Values are means over tasks; intervals are {level * 100:g}% percentile bootstraps "
        "over tasks.</p>"
    )
    for cat in sorted(cats):
        out.append(f'<h3 class="cat">{escape(cat or "uncategorized")}</h3>')
        for ds in sorted(cats[cat], key=_natural):
            rows = cats[cat][ds]
            names = sorted({r["metric"] for r in rows}, key=_metric_order)
            by_col: dict[str, dict[str, Record]] = {}
            for r in rows:
                by_col.setdefault(_column({f: str(r[f]) for f in by}), {})[r["metric"]] = r
            header = ["model", *names, "tasks", "samples"]
            trs = []
            for col in sorted(by_col):
                cells = by_col[col]
                any_r = next(iter(cells.values()))
                tds = [_td(col)]
                for m in names:
                    mr = cells.get(m)
                    if mr is None:
                        tds.append(_td("", -1e18))
                    else:
                        tds.append(
                            f'<td data-v="{mr["value"]}">{escape(_num(mr["value"]))} '
                            f'<span class="ci">{escape(_interval(mr["ci_low"], mr["ci_high"]))}'
                            "</span></td>"
                        )
                tds += [_td(any_r["n_tasks"], any_r["n_tasks"]), _td(any_r["n_samples"], any_r["n_samples"])]
                trs.append("<tr>" + "".join(tds) + "</tr>")
            tid = f"results-{_slug(cat)}-{_slug(ds)}"
            out.append(f'<h4 id="ds-{_slug(ds)}">{escape(ds)}</h4>')
            out.append(_table(tid, header, trs, caption=f"{ds}: metrics per model"))
            primary = [
                (col, c[m]["value"], c[m]["ci_low"], c[m]["ci_high"])
                for col, c in sorted(by_col.items())
                for m in PRIMARY
                if m in c
            ]
            if primary:
                metric = next(m for m in PRIMARY if any(m in c for c in by_col.values()))
                out.append(bar_chart(primary, f"{ds}: {metric} ({level * 100:g}% CI)"))
    out.append("</section>")
    return "".join(out)


def leaderboard_section(board: list[Record], level: float) -> str:
    """One table and one rank-interval chart per leaderboard scope."""
    if not board:
        return ""
    out = [
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        "<p>A model's score is the mean over datasets of its pass@1 (code) or accuracy. "
        f"Rank intervals ({level * 100:g}%) come from resampling each dataset's tasks and "
        "ranking again: overlapping intervals are places the data do not tell apart.</p>",
    ]
    scopes: dict[str, list[Record]] = {}
    for r in board:
        scopes.setdefault(r["scope"], []).append(r)
    for scope, rows in scopes.items():
        ds = rows[0]["datasets"]
        metrics = rows[0]["metrics"]
        header = ["rank", f"rank {level * 100:g}% CI", "model", "score", f"{level * 100:g}% CI"]
        category = rows[0].get("categories") or {}
        header += [
            "/".join(x for x in (category.get(d), d) if x)
            + (f" ({metrics[d]})" if metrics.get(d) else "")
            for d in ds
        ]
        trs = []
        for r in rows:
            ranked = r["rank"] is not None
            tds = [
                _td(r["rank"] if ranked else "-", r["rank"] if ranked else 1e9),
                _td(
                    f"{r['rank_low']}-{r['rank_high']}" if ranked else "not ranked",
                    r["rank_low"] if ranked else 1e9,
                ),
                _td(r["model"]),
                _td(_num(r["value"]), r["value"] if ranked else -1),
                _td(_interval(r["ci_low"], r["ci_high"])),
            ]
            for d in ds:
                c = r["cells"].get(d)
                if c is None:
                    tds.append(_td("missing", -1, "missing"))
                else:
                    tds.append(
                        f'<td data-v="{c["value"]}">{escape(_num(c["value"]))} '
                        f'<span class="ci">{escape(_interval(c["ci_low"], c["ci_high"]))}</span></td>'
                    )
            trs.append(f'<tr class="{"" if ranked else "unranked"}">' + "".join(tds) + "</tr>")
        title = "all datasets" if scope == "all" else f"category {scope}"
        out.append(f"<h3>{escape(title)}</h3>")
        out.append(_table(f"board-{_slug(scope)}", header, trs, caption=f"leaderboard: {title}"))
        out.append(rank_chart(rows, f"rank and {level * 100:g}% rank interval: {title}"))
    out.append("</section>")
    return "".join(out)


def comparisons_section(comps: list[Record], level: float) -> str:
    """The pairwise comparisons: a table and one plain sentence each."""
    from llmeval.report import COMPARISON_FIELDS, plain_statement

    if not comps:
        return ""
    header = [
        "context", "metric", "model_a", "model_b", "value_a", "value_b", "diff",
        f"{level * 100:g}% CI", "test", "p", "p (Holm)", "significant", "shared", "only_a", "only_b",
    ]  # fmt: skip
    trs = []
    for r in comps:
        ctx = " ".join(str(v) for k, v in r.items() if k not in COMPARISON_FIELDS)
        sig = bool(r["significant"])
        trs.append(
            f'<tr class="{"sig" if sig else ""}">'
            + "".join(
                [
                    _td(ctx),
                    _td(r["metric"]),
                    _td(r["model_a"]),
                    _td(r["model_b"]),
                    _td(_num(r["value_a"]), r["value_a"]),
                    _td(_num(r["value_b"]), r["value_b"]),
                    _td(_num(r["diff"]), r["diff"]),
                    _td(_interval(r["ci_low"], r["ci_high"])),
                    _td(r["test"] or ""),
                    _td(_p(r["p_value"]), r["p_value"]),
                    _td(_p(r["p_holm"]), r["p_holm"]),
                    _td("yes" if sig else "no", int(sig), "yes" if sig else "no"),
                    _td(r["n_shared"], r["n_shared"]),
                    _td(len(r["only_a"]), len(r["only_a"])),
                    _td(len(r["only_b"]), len(r["only_b"])),
                ]
            )
            + "</tr>"
        )
    sentences = "".join(f"<li>{escape(plain_statement(r))}</li>" for r in comps)
    return (
        '<section id="comparisons"><h2>Pairwise comparisons</h2>'
        "<p>Paired over the tasks both models have: McNemar's exact test for one pass/fail "
        "sample per task, else a paired permutation test; p-values Holm-adjusted over all "
        "pairs.</p>"
        + _table("comparisons-table", header, trs, caption="pairwise comparisons")
        + f'<ul class="sentences">{sentences}</ul></section>'
    )


def _cell_class(passes: int, n: int) -> str:
    if n == 0:
        return "missing"
    return "pass" if passes == n else "fail" if passes == 0 else "partial"


def matrix_section(details: list[Record], by: list[str]) -> str:
    """Per dataset, tasks x models (passes / samples per cell), and the drill-down panel."""
    sections: dict[str, dict[str, Record]] = {}
    for d in details:
        sections.setdefault(_section(d["fields"]), {})[_column(d["fields"])] = d
    out = [
        '<section id="tasks"><h2>Per-task matrix</h2>',
        "<p>Each cell is one model on one task: passes / samples. Click a cell or a task "
        "to see the prompt, the completions and the verdicts.</p>",
    ]
    for ds in sorted(sections, key=_natural):
        cols = sorted(sections[ds])
        tasks = sorted({t for d in sections[ds].values() for t in d["tasks"]}, key=_natural)
        head = "".join(f'<th class="mcol">{escape(c)}</th>' for c in cols)
        trs = []
        for t in tasks:
            cells = []
            n_pass = n_have = 0
            for c in cols:
                counts = sections[ds][c]["tasks"].get(t)
                if counts is None:
                    cells.append('<td class="c missing" data-v="-1">·</td>')
                    continue
                n, passes = counts["n"], counts["pass"]
                n_have += 1
                n_pass += passes == n
                worst = next(
                    (s for s in (ERROR, TIMEOUT, NO_ANSWER, FAIL) if counts["statuses"].get(s)),
                    PASS,
                )
                mark = "✓" if passes == n else ("✗" if passes == 0 else "◐")
                cells.append(
                    f'<td class="c {_cell_class(passes, n)}" data-v="{passes / n if n else -1}" '
                    f'data-task="{escape(t)}" data-col="{escape(c)}" '
                    f'title="{escape(c)}: {passes}/{n} pass{"" if worst == PASS else ", " + worst}">'
                    f"{mark} {passes}/{n}</td>"
                )
            state = "all-pass" if n_pass == n_have else "all-fail" if n_pass == 0 else "mixed"
            trs.append(
                f'<tr data-state="{state}"><td class="task" data-task="{escape(t)}">'
                f"{escape(t)}</td>{''.join(cells)}</tr>"
            )
        tid = f"matrix-{_slug(ds)}"
        out.append(
            f"<h3>{escape(ds)}</h3>"
            f'<div class="tablebox"><input class="filter" type="search" data-table="{tid}" '
            'placeholder="filter tasks" aria-label="filter tasks">'
            f'<select class="statefilter" data-table="{tid}" aria-label="which tasks">'
            '<option value="">all tasks</option><option value="mixed">models disagree</option>'
            '<option value="all-fail">every model fails</option>'
            '<option value="all-pass">every model passes</option></select>'
            f'<table id="{tid}" class="data sortable matrix"><thead><tr><th>task</th>{head}'
            f"</tr></thead><tbody>{''.join(trs)}</tbody></table></div>"
        )
    out.append(
        '<div id="drill" class="drill" hidden><button type="button" id="drill-close">close'
        '</button><h3 id="drill-title"></h3><h4>prompt</h4><pre id="drill-prompt"></pre>'
        '<div id="drill-samples"></div></div></section>'
    )
    return "".join(out)


def health_section(details: list[Record]) -> str:
    """Extraction health: no-answer, error, timeout and truncation counts per group."""
    header = [
        "model", "dataset", "samples", "pass", "fail", "no_answer", "no_answer rate", "error",
        "timeout", "truncated (length)", "duplicates skipped",
    ]  # fmt: skip
    trs = []
    for d in details:
        f = d["fields"]
        st = d["statuses"]
        n = d["n_samples"]
        na = st.get(NO_ANSWER, 0)
        length = d["finish"].get("length", 0)
        trs.append(
            "<tr>"
            + "".join(
                [
                    _td(_column(f)),
                    _td(_section(f)),
                    _td(n, n),
                    _td(st.get(PASS, 0), st.get(PASS, 0)),
                    _td(st.get(FAIL, 0), st.get(FAIL, 0)),
                    _td(na, na),
                    _td(_num(na / n if n else 0.0), na / n if n else 0.0, "warn" if na else ""),
                    _td(st.get(ERROR, 0), st.get(ERROR, 0), "warn" if st.get(ERROR) else ""),
                    _td(st.get(TIMEOUT, 0), st.get(TIMEOUT, 0)),
                    _td(length, length),
                    _td(d["duplicates"], d["duplicates"]),
                ]
            )
            + "</tr>"
        )
    return (
        '<section id="health"><h2>Extraction health</h2><p>How often no answer could be '
        "extracted (no number, no letter), generation or sandbox errors, timeouts, and "
        "completions cut at max_tokens.</p>"
        + _table("health-table", header, trs, caption="extraction health")
        + "</section>"
    )


def provenance_section(details: list[Record], runs: dict[str, Record]) -> str:
    """What each number was computed from, and every run behind it (from its run record)."""
    header = ["model", "dataset", "presets", "generation runs", "scoring runs", "dataset hashes",
              "llmeval"]  # fmt: skip
    trs = []
    for d in details:
        f = d["fields"]
        trs.append(
            "<tr>"
            + "".join(
                _td(x)
                for x in (
                    _column(f),
                    _section(f),
                    ", ".join(d["presets"]),
                    ", ".join(d["run_ids"]),
                    ", ".join(d["score_run_ids"]),
                    ", ".join(h.removeprefix("sha256:")[:16] for h in d["dataset_hashes"]),
                    ", ".join(d["llmeval_versions"]),
                )
            )
            + "</tr>"
        )
    wanted = sorted({r for d in details for r in (*d["run_ids"], *d["score_run_ids"])})
    run_header = ["run", "stage", "started (UTC)", "host", "user", "SLURM job", "GPUs",
                  "preset", "llmeval", "libraries", "command"]  # fmt: skip
    run_rows = []
    for rid in wanted:
        r = runs.get(rid)
        if r is None:
            run_rows.append(
                "<tr>" + _td(rid) + '<td colspan="10" class="missing">run record not found '
                "beside the inputs</td></tr>"
            )
            continue
        slurm = r.get("slurm") or {}
        job = slurm.get("job_id") or ""
        if slurm.get("array_job_id"):
            job = f"{slurm['array_job_id']}_{slurm.get('array_task_id')} (job {job})"
        gpus = ", ".join(str(g.get("name")) for g in r.get("gpus") or [] if isinstance(g, dict))
        preset = r.get("preset")
        libs = r.get("libraries") or {}
        lib_text = ", ".join(
            f"{k} {v}" for k, v in libs.items() if v and k in ("torch", "transformers", "vllm")
        )
        ll = r.get("llmeval") or {}
        run_rows.append(
            "<tr>"
            + "".join(
                _td(x)
                for x in (
                    rid,
                    r.get("stage", ""),
                    r.get("started_at", ""),
                    r.get("host", ""),
                    r.get("user") or "",
                    job,
                    gpus or (r.get("gpu_note") or ""),
                    preset.get("name", "") if isinstance(preset, dict) else (preset or ""),
                    f"{ll.get('version', '')} {ll.get('git') or ''}".strip(),
                    lib_text,
                    _cap(" ".join(map(str, r.get("argv") or [])), 300) or "",
                )
            )
            + "</tr>"
        )
    return (
        '<section id="provenance"><h2>Provenance</h2>'
        + _table("provenance-table", header, trs, caption="what each number was computed from")
        + _table("runs-table", run_header, run_rows, caption="runs")
        + "</section>"
    )


def render(
    *,
    summary: list[Record],
    comps: list[Record],
    board: list[Record],
    details: list[Record],
    samples: SampleKeeper | None,
    runs: dict[str, Record],
    by: list[str],
    level: float,
    inputs: list[str],
    version: str,
) -> bytes:
    """The whole report as one HTML document (bytes).

    ``details`` holds one entry per group (eval-aggregate's
    ``group_details``): ``fields``, ``tasks`` (task -> n, pass, statuses),
    ``statuses``, ``finish``, provenance sets. Nothing here reads a clock or
    the environment: the same inputs give the same bytes.
    """
    n_samples = sum(d["n_samples"] for d in details)
    models = sorted({_column(d["fields"]) for d in details})
    datasets = sorted({_section(d["fields"]) for d in details}, key=_natural)
    # Sorted throughout, so the bytes do not depend on the order of the inputs.
    drill: dict[str, Any] = {"prompts": {}, "samples": {}, "n": {}}
    if samples is not None:
        drill["prompts"] = dict(sorted(samples.prompts.items()))
        for (key, task), kept in sorted(samples.samples.items()):
            col = _column(dict(zip(by, key)))
            drill["samples"].setdefault(task, {})[col] = kept
    for d in sorted(details, key=lambda d: _column(d["fields"])):
        col = _column(d["fields"])  # how many samples each cell has: "1 of 5 shown"
        for task, c in sorted(d["tasks"].items()):
            drill["n"].setdefault(task, {})[col] = c["n"]
    overview = (
        '<section id="overview"><h2>Overview</h2><dl class="overview">'
        f"<dt>models</dt><dd>{escape(', '.join(models))}</dd>"
        f"<dt>datasets</dt><dd>{escape(', '.join(datasets))}</dd>"
        f"<dt>samples</dt><dd>{n_samples}</dd>"
        f"<dt>intervals</dt><dd>{level * 100:g}% percentile bootstrap over tasks</dd>"
        f"<dt>inputs</dt><dd>{escape(', '.join(sorted(inputs)))}</dd>"
        "</dl></section>"
    )
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t, show in (
            ("overview", "overview", True),
            ("leaderboard", "leaderboard", bool(board)),
            ("results", "results", True),
            ("comparisons", "comparisons", bool(comps)),
            ("tasks", "tasks", True),
            ("health", "extraction health", True),
            ("provenance", "provenance", True),
        )
        if show
    )
    body = "".join(
        [
            overview,
            leaderboard_section(board, level),
            results_section(summary, by, level),
            comparisons_section(comps, level),
            matrix_section(details, by),
            health_section(details),
            provenance_section(details, runs),
        ]
    )
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>llmeval report: {escape(', '.join(models))}</title>"
        f"<style>{CSS}</style></head><body>"
        f'<header><h1>llmeval report</h1><nav>{nav}</nav><p class="meta">llmeval '
        f"{escape(version)}</p></header><main>{body}</main>"
        f'<script type="application/json" id="llmeval-data">{_json_for_script(drill)}</script>'
        f"<script>{JS}</script></body></html>\n"
    )
    return doc.encode()


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0;color:#1d232a;background:#fff}
header{background:#1d3557;color:#fff;padding:10px 24px;position:sticky;top:0;z-index:2}
header h1{margin:0;font-size:20px;display:inline-block;margin-right:24px}
header nav{display:inline-block}header nav a{color:#dfe9f5;margin-right:14px;text-decoration:none}
header .meta{display:inline-block;float:right;margin:4px 0;color:#b9c9dc}
main{padding:8px 24px 40px}h2{border-bottom:2px solid #1d3557;padding-bottom:2px;margin-top:28px}
h3.cat{text-transform:capitalize;color:#1d3557}
table.data{border-collapse:collapse;margin:4px 0 10px;font-variant-numeric:tabular-nums}
table.data th,table.data td{border:1px solid #d5dbe1;padding:3px 8px;text-align:left;vertical-align:top}
table.data th{background:#eef2f6;cursor:pointer;user-select:none;white-space:nowrap}
table.data th.asc::after{content:" \\25B2"}table.data th.desc::after{content:" \\25BC"}
table.data caption{text-align:left;color:#5b6672;font-size:12px}
.ci{color:#5b6672;font-size:12px}.filter{margin:6px 8px 2px 0;padding:3px 6px;min-width:220px}
td.yes{background:#d8f3dc;font-weight:600}td.no{color:#5b6672}td.warn{background:#fff3bf}
td.missing,tr.unranked td{color:#8a949e;font-style:italic}
table.matrix td.c{text-align:center;cursor:pointer;white-space:nowrap;font-size:12px}
table.matrix td.task{cursor:pointer;color:#1d4ed8;white-space:nowrap}
td.c.pass{background:#b7e4c7}td.c.fail{background:#ffccd5}td.c.partial{background:#ffe8a3}
td.c.missing{background:#f1f3f5;color:#adb5bd}td.c.selected{outline:3px solid #1d3557}
svg.chart{display:block;margin:6px 0 16px;font:12px system-ui,"DejaVu Sans",sans-serif}
svg .ct{font-weight:600;fill:#1d232a}svg .grid{stroke:#e6e9ed}svg .tick{fill:#5b6672;font-size:11px}
svg .lab{fill:#1d232a}svg .val{fill:#1d232a}svg .bar{fill:#5e81ac}svg .ci{stroke:#1d232a;stroke-width:1.5}
svg .rankci{stroke:#5e81ac;stroke-width:6;stroke-linecap:round}svg .dot{fill:#1d3557}
.drill{position:fixed;top:60px;right:16px;bottom:16px;width:min(720px,55vw);overflow:auto;
background:#fff;border:2px solid #1d3557;box-shadow:0 4px 24px rgba(0,0,0,.25);padding:12px 16px;z-index:3}
.drill pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;border:1px solid #d5dbe1;padding:8px;margin:4px 0}
.drill .sample{border-top:1px solid #d5dbe1;margin-top:10px;padding-top:6px}
.badge{display:inline-block;padding:0 8px;border-radius:9px;font-weight:600;margin-right:6px}
.badge.pass{background:#b7e4c7}.badge.fail,.badge.error,.badge.timeout{background:#ffccd5}.badge.no_answer{background:#ffe8a3}
#drill-close{float:right}dl.overview{display:grid;grid-template-columns:max-content auto;gap:2px 14px}
dl.overview dt{font-weight:600}.sentences li{margin:2px 0}
"""

# Sorting, filtering and the drill-down. Untrusted text only ever reaches the page
# through textContent, never innerHTML.
JS = """
(function(){
"use strict";
var DATA=JSON.parse(document.getElementById("llmeval-data").textContent);
function cellValue(td){var v=td.getAttribute("data-v");if(v!==null&&v!==""&&!isNaN(+v))return +v;
 var t=td.textContent.trim();return (t!==""&&!isNaN(+t))?+t:t.toLowerCase();}
document.querySelectorAll("table.sortable").forEach(function(table){
 table.querySelectorAll("thead th").forEach(function(th,i){
  th.addEventListener("click",function(){
   var asc=!th.classList.contains("asc");
   table.querySelectorAll("thead th").forEach(function(h){h.classList.remove("asc","desc");});
   th.classList.add(asc?"asc":"desc");
   var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
   rows.sort(function(a,b){var x=cellValue(a.cells[i]),y=cellValue(b.cells[i]);
    if(typeof x!==typeof y){x=String(x);y=String(y);}
    return (x<y?-1:x>y?1:0)*(asc?1:-1);});
   rows.forEach(function(r){body.appendChild(r);});
  });
 });
});
function applyFilters(id){
 var table=document.getElementById(id);if(!table)return;
 var box=table.parentNode,text=box.querySelector("input.filter"),sel=box.querySelector("select.statefilter");
 var q=text?text.value.toLowerCase():"",state=sel?sel.value:"";
 Array.prototype.forEach.call(table.tBodies[0].rows,function(r){
  var ok=(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&(!state||r.getAttribute("data-state")===state);
  r.hidden=!ok;});
}
document.querySelectorAll("input.filter,select.statefilter").forEach(function(el){
 el.addEventListener("input",function(){applyFilters(el.getAttribute("data-table"));});
 el.addEventListener("change",function(){applyFilters(el.getAttribute("data-table"));});
});
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
 if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
function openTask(task,col){
 var drill=document.getElementById("drill");
 document.getElementById("drill-title").textContent=task;
 var prompt=DATA.prompts[task];
 document.getElementById("drill-prompt").textContent=(prompt===undefined||prompt===null)?"(not kept)":prompt;
 var box=document.getElementById("drill-samples");box.textContent="";
 var per=DATA.samples[task]||{},counts=(DATA.n||{})[task]||{};
 var cols=Object.keys(counts).sort();if(col){cols=[col].concat(cols.filter(function(c){return c!==col;}));}
 cols.forEach(function(c){
  var kept=per[c]||[];
  var head=el("h4",null,c+": "+kept.length+" of "+counts[c]+" samples shown");box.appendChild(head);
  kept.forEach(function(s){
   var div=el("div","sample");div.setAttribute("data-col",c);
   var line=el("p");line.appendChild(el("span","badge "+s.status,s.status));
   line.appendChild(el("span",null,(c===s.model?"":s.model+", ")+"sample "+s.sample+(s.run_id?" of run "+s.run_id:"")+(s.finish_reason?", finish "+s.finish_reason:"")+
    (s.tokens!==null&&s.tokens!==undefined?", "+s.tokens+" tokens":"")));div.appendChild(line);
   if(s.error){div.appendChild(el("h5",null,"generation error"));div.appendChild(el("pre","error",s.error));}
   div.appendChild(el("h5",null,"completion"));
   div.appendChild(el("pre","completion",s.completion===null?"(none)":s.completion));
   if(s.sanitized!==null&&s.sanitized!==undefined){div.appendChild(el("h5",null,"code run (sanitized)"));
    div.appendChild(el("pre","sanitized",s.sanitized));}
   if(s.extracted!==null||s.expected!==null){div.appendChild(el("p","answer",
    "extracted: "+(s.extracted===null?"(none)":s.extracted)+"  expected: "+(s.expected===null?"-":s.expected)));}
   if(s.detail){div.appendChild(el("h5",null,"verdict detail"));div.appendChild(el("pre","detail",s.detail));}
   box.appendChild(div);});
 });
 document.querySelectorAll("td.c.selected").forEach(function(td){td.classList.remove("selected");});
 drill.hidden=false;drill.scrollTop=0;
}
document.addEventListener("click",function(ev){
 var td=ev.target.closest?ev.target.closest("td[data-task]"):null;if(!td)return;
 openTask(td.getAttribute("data-task"),td.getAttribute("data-col"));
 if(td.classList.contains("c"))td.classList.add("selected");
});
document.getElementById("drill-close").addEventListener("click",function(){document.getElementById("drill").hidden=true;});
document.addEventListener("keydown",function(ev){if(ev.key==="Escape")document.getElementById("drill").hidden=true;});
})();
"""
