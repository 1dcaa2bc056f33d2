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
