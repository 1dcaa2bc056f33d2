"""llmeval/report.py: tables, CSV and sentences made from eval-aggregate's records."""

import csv
import io

from llmeval import report

METRIC = {
    "type": "metric",
    "model": "m",
    "dataset": "d",
    "metric": "pass@1",
    "value": 0.5,
    "ci_low": 0.25,
    "ci_high": 0.75,
    "ci_level": 0.9,
    "n_tasks": 4,
    "n_samples": 4,
    "counts": {"pass": 2, "fail": 2, "timeout": 0, "error": 0, "no_answer": 0},
}
COMPARISON = {
    "type": "comparison",
    "dataset": "d",
    "metric": "pass@1",
    "model_a": "a",
    "model_b": "b",
    "value_a": 0.75,
    "value_b": 0.25,
    "diff": 0.5,
    "ci_low": 0.1,
    "ci_high": 0.9,
    "ci_level": 0.9,
    "test": "mcnemar_exact",
    "p_value": 0.01,
    "p_holm": 0.02,
    "significant": True,
    "n_shared": 4,
    "only_a": [],
    "only_b": [],
    "discordant": {"a_only": 2, "b_only": 0},
}


def test_interval_label_follows_the_level():
    assert report.ci_label(0.95) == "95% CI" and report.ci_label(0.9) == "90% CI"
    table = report.render("table", [METRIC], [COMPARISON], ["model", "dataset"], 0.9).decode()
    assert "90% CI" in table and "95%" not in table
    assert "[0.2500, 0.7500]" in table
    assert report.plain_statement(COMPARISON) == (
        "a vs b on 4 shared tasks: pass@1 0.750 vs 0.250, difference +0.500 "
        "(90% CI +0.100 to +0.900), mcnemar_exact p=0.0100, Holm p=0.0200: a is better."
    )


def test_markdown_and_csv():
    md = report.render("markdown", [METRIC], [], ["model", "dataset"], 0.9).decode()
    assert md.splitlines()[0].startswith("| model | dataset | metric | value | 90% CI |")
    rows = list(csv.reader(io.StringIO(report.render("csv", [METRIC], [], ["model"], 0.9).decode())))
    assert rows[0][:4] == ["model", "metric", "value", "90% CI"]
    assert rows[1][:3] == ["m", "pass@1", "0.5000"]


BOARD = [
    {"type": "leaderboard", "scope": "all", "model": "m", "rank": 1, "rank_low": 1,
     "rank_high": 2, "value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n_tasks": 4, "missing": [],
     "datasets": ["d"], "categories": {"d": "coding"}, "metrics": {"d": "pass@1"},
     "n_models": 2, "ci_level": 0.9,
     "cells": {"d": {"metric": "pass@1", "value": 0.5, "ci_low": 0.25, "ci_high": 0.75,
                     "n_tasks": 4}}},
    {"type": "leaderboard", "scope": "all", "model": "x", "rank": None, "rank_low": None,
     "rank_high": None, "value": None, "ci_low": None, "ci_high": None, "n_tasks": 2,
     "missing": ["d"], "datasets": ["d"], "categories": {"d": "coding"},
     "metrics": {"d": "pass@1"}, "n_models": 2, "ci_level": 0.9, "cells": {}},
]  # fmt: skip


def test_leaderboard_table():
    text = report.render("table", [METRIC], [], ["model", "dataset"], 0.9, BOARD).decode()
    lines = text.splitlines()
    assert lines[0] == "leaderboard, all datasets: mean over 1 datasets, 2 ranked"
    assert lines[1].split() == ["rank", "rank", "90%", "CI", "model", "score", "90%", "CI",
                                "coding/d", "pass@1"]  # fmt: skip
    assert lines[2].split() == ["1", "1-2", "m", "0.5000", "[0.2500,", "0.7500]", "0.5000",
                                "[0.2500,", "0.7500]"]  # fmt: skip
    assert lines[3].split() == ["-", "not", "ranked", "x", "missing"]
    md = report.render("markdown", [METRIC], [], ["model", "dataset"], 0.9, BOARD).decode()
    assert md.startswith("## leaderboard, all datasets") and "| 1 | 1-2 | m | 0.5000 |" in md


def test_one_csv_for_every_kind_of_record():
    text = report.render("csv", [METRIC], [COMPARISON], ["model", "dataset"], 0.9, BOARD).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["type"] for r in rows] == ["metric", "comparison", "leaderboard", "leaderboard"]
    m, c, b, x = rows
    assert (m["model"], m["metric"], m["value"], m["90% CI"], m["ci_low"]) == (
        "m", "pass@1", "0.5000", "[0.2500, 0.7500]", "0.25"
    )  # fmt: skip
    assert (c["model"], c["dataset"], c["model_a"], c["model_b"], c["diff"], c["p_holm"]) == (
        "", "d", "a", "b", "0.5", "0.02"
    )  # fmt: skip
    assert (c["90% CI"], c["significant"], c["n_shared"], c["tasks"]) == (
        "[0.1000, 0.9000]", "true", "4", "4"
    )  # fmt: skip
    assert (b["model"], b["scope"], b["rank"], b["rank_low"], b["rank_high"]) == (
        "m", "all", "1", "1", "2"
    )  # fmt: skip
    assert (x["rank"], x["value"], x["90% CI"]) == ("", "", "")
