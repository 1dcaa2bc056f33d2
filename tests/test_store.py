"""llmeval/store.py: the results database, loaded from two real campaigns and queried as the README does."""

import re
import sqlite3
import subprocess
import sys

import orjson
import pytest
import trees
from conftest import REPO, require_in_ci, run_cmd

from llmeval.store import TABLES


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two real campaigns (tests/trees.py): real prompts, real Gemma outputs, real verdicts."""
    return trees.build(tmp_path_factory)


def load(db, *inputs, extra=()):
    return run_cmd(
        ["eval-aggregate", *map(str, inputs), "--compare", "--leaderboard", "--format", "sqlite",
         "-o", str(db), *extra]
    )  # fmt: skip


def dump(db):
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def readme_sql() -> dict[str, str]:
    """The README's SQL examples, by their first comment line."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    return {b.splitlines()[0].removeprefix("-- ").split(" (")[0]: b for b in blocks}


def scored_records(results):
    return [
        orjson.loads(x)
        for p in sorted(results.glob("*/*/*.scored.jsonl"))
        for x in p.read_bytes().splitlines()
    ]


def query(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_two_campaigns_answer_the_readme_questions_and_loading_twice_changes_nothing(
    results, tmp_path
):
    db = tmp_path / "results.db"
    first = load(db, results / "spring")
    assert first.returncode == 0, first.stderr.decode()
    second = load(db, results / "summer")
    assert second.returncode == 0, second.stderr.decode()
    recs = scored_records(results)
    assert len(recs) == 9 * 2 + 3 * 2 + 9 * 2  # spring: 2 models x 12 tasks; summer: 2 x 9
    counts = {t: query(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}
    assert counts["samples"] == counts["scores"] == len(recs)
    assert counts["runs"] == 2 * 6  # a generation and a scoring run for each of the 6 files
    assert counts["tasks"] == 12

    sql = readme_sql()
    assert set(sql) == {"best model per category", "pass@1 by preset over time",
                        "tasks every model fails"}  # fmt: skip
    # What the answers must be, computed here from the JSONL files themselves.
    rate: dict = {}
    for r in recs:
        rate.setdefault((r["category"], r["model"], r["dataset"]), []).append(
            r["score"]["status"] == "pass"
        )
    per_model: dict = {}
    for (cat, model, _), v in rate.items():
        per_model.setdefault((cat, model), []).append(sum(v) / len(v))
    best = {}
    for (cat, model), v in per_model.items():
        score = sum(v) / len(v)
        if cat not in best or score > best[cat][1]:
            best[cat] = (model, score)
    assert query(db, sql["best model per category"]) == [
        (cat, model, round(score, 3)) for cat, (model, score) in sorted(best.items())
    ]
    assert query(db, sql["best model per category"]) == [
        ("coding", "gemma-greedy", 0.556), ("math", "gemma-greedy", 0.333)
    ]  # fmt: skip

    over_time = query(db, sql["pass@1 by preset over time"])
    assert over_time == [
        ("evil", "cpu", "2026-03", "gsm8k", 3, 0.0),
        ("gemma-greedy", "cpu", "2026-03", "gsm8k", 3, 0.333),
        ("evil", "cpu", "2026-03", "humaneval", 9, 0.0),
        ("gemma-greedy", "cpu", "2026-03", "humaneval", 9, 0.556),
        ("gemma-greedy", "cpu", "2026-06", "humaneval", 9, 0.556),
        ("gemma-t0.8", "sampling", "2026-06", "humaneval", 9, 0.0),
    ]

    failed_by_all = sorted(
        {(r["dataset"], r["id"]) for r in recs}
        - {(r["dataset"], r["id"]) for r in recs if r["score"]["status"] == "pass"}
    )
    got = query(db, sql["tasks every model fails"])
    assert [(d, i) for d, i, _ in got] == failed_by_all
    assert failed_by_all == [("gsm8k", "gsm8k/1"), ("gsm8k", "gsm8k/2")] + [
        ("humaneval", f"humaneval/HumanEval/{t}") for t in (0, 1, 2, 46)
    ]
    assert [m for *_, m in got] == [2, 2, 3, 3, 3, 3]

    # Loading both campaigns again, one by one or together, adds nothing.
    before = dump(db)
    for inputs in ([results / "spring"], [results / "summer"]):
        again = load(db, *inputs)
        assert again.returncode == 0
        assert again.stderr.decode().endswith("(nothing new)\n"), again.stderr.decode()
    assert dump(db) == before


def test_what_is_stored_and_its_keys(results, tmp_path):
    db = tmp_path / "r.db"
    assert load(db, results / "spring", results / "summer").returncode == 0
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    # The sample keys: the same generation from two campaigns is two rows (two runs);
    # one run's record twice is one row.
    rows = con.execute(
        "SELECT run_id, COUNT(*) AS n FROM samples WHERE model = 'gemma-greedy' "
        "AND dataset = 'humaneval' GROUP BY run_id ORDER BY run_id"
    ).fetchall()
    assert [(r["run_id"], r["n"]) for r in rows] == [
        ("generate-spring-gemma-greedy-humaneval", 9),
        ("generate-summer-gemma-greedy-humaneval", 9),
    ]
    hostile = con.execute(
        "SELECT completion FROM samples WHERE model = 'evil' ORDER BY id"
    ).fetchall()
    assert {r[0] for r in hostile} == set(trees.HOSTILE)  # stored as written
    run = con.execute("SELECT * FROM runs WHERE run_id = 'generate-spring-evil-gsm8k'").fetchone()
    assert (run["host"], run["slurm_job_id"], run["slurm_array_job_id"], run["preset"]) == (
        "node2.cluster", "4242", "4240", "cpu"
    )
    score_runs = con.execute("SELECT COUNT(*) FROM runs WHERE stage = 'score'").fetchone()[0]
    assert score_runs == 6  # one eval-score run per scored file, found beside it
    metric = con.execute(
        "SELECT * FROM metrics WHERE model = 'gemma-greedy' AND dataset = 'gsm8k' "
        "AND metric = 'accuracy'"
    ).fetchone()
    assert (metric["value"], metric["n_tasks"], metric["category"]) == (1 / 3, 3, "math")
    assert orjson.loads(metric["counts"]) == {
        "pass": 1, "fail": 1, "timeout": 0, "error": 0, "no_answer": 1
    }  # fmt: skip
    assert metric["started_at"] == "2026-03-01T10:00:00Z"
    board = con.execute(
        "SELECT scope, model, rank, rank_low, rank_high FROM leaderboard ORDER BY scope, model"
    ).fetchall()
    assert [tuple(r) for r in board if r["scope"] == "coding"] == [
        ("coding", "evil", 2, 2, 2), ("coding", "gemma-greedy", 1, 1, 1),
        ("coding", "gemma-t0.8", 2, 2, 2),
    ]  # fmt: skip
    sig = con.execute("SELECT COUNT(*), SUM(significant) FROM comparisons").fetchone()
    assert tuple(sig) == (4, 0)
    # Every status of a sample reaches the scores table.
    statuses = dict(con.execute("SELECT status, COUNT(*) FROM scores GROUP BY status").fetchall())
    assert statuses == {"pass": 5 + 5 + 1, "fail": 29, "timeout": 1, "no_answer": 1}  # 42 in all
    con.close()


def test_tables_and_keys_are_documented():
    doc = (REPO / "docs" / "records.md").read_text()
    section = doc.split("## The results database", 1)[1]
    for table in (*TABLES, "scored"):
        assert f"`{table}`" in section, table
    for key in ("(run_id, id, key)", "(score_run_id, run_id, id, key)", "(basis, metric)",
                "(id, dataset_hash)", "(basis, scope, model)"):  # fmt: skip
        assert key in section, key


def test_a_bad_record_rolls_the_whole_load_back(results, tmp_path):
    db = tmp_path / "r.db"
    assert load(db, results / "spring").returncode == 0
    before = dump(db)
    bad = tmp_path / "bad"
    bad.mkdir()
    good = (results / "summer" / "gemma-t0.8" / "humaneval.scored.jsonl").read_bytes()
    lines = good.splitlines()
    broken = orjson.loads(lines[4])
    broken["score"]["status"] = "passed"
    (bad / "x.scored.jsonl").write_bytes(
        b"\n".join([*lines[:4], orjson.dumps(broken), *lines[5:]]) + b"\n"
    )
    out = load(db, bad)
    assert out.returncode == 1
    assert out.stderr.decode() == (
        f'eval-aggregate: error: {bad / "x.scored.jsonl"}:5: field "score.status" must be one '
        "of pass, fail, timeout, error, no_answer, got str 'passed'\n"
    )
    assert dump(db) == before
    # A database the failed load would have created is not left behind.
    fresh = tmp_path / "fresh.db"
    assert load(fresh, bad).returncode == 1
    assert not fresh.exists()


def test_usage_and_foreign_files(results, tmp_path):
    out = run_cmd(["eval-aggregate", str(results / "spring"), "--format", "sqlite"])
    assert out.returncode == 2
    assert out.stderr.decode() == (
        "eval-aggregate: error: --format sqlite loads a database: name it with -o FILE.db\n"
    )
    notdb = tmp_path / "notes.txt"
    notdb.write_bytes(b"these are my notes, not a database\n" * 100)
    out = load(notdb, results / "spring")
    assert out.returncode == 1
    assert out.stderr.decode().startswith(
        f"eval-aggregate: error: {notdb}: not a usable SQLite database ("
    )
    assert notdb.read_bytes() == b"these are my notes, not a database\n" * 100
    scored = results / "spring" / "evil" / "gsm8k.scored.jsonl"
    content = scored.read_bytes()
    out = load(scored, results / "spring")
    assert out.returncode == 2 and b"is also an input" in out.stderr
    assert scored.read_bytes() == content


def test_duckdb_reads_the_jsonl_tree_as_the_readme_shows(results):
    require_in_ci("duckdb")
    text = (REPO / "README.md").read_text()
    (cmd,) = [line for line in text.splitlines() if line.startswith('python -c "import duckdb')]
    code = cmd.removeprefix('python -c "').removesuffix('"').replace('\\"', '"')
    code = code.replace("demo-out/*.scored.jsonl", str(results / "**" / "*.scored.jsonl"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line.split("│")[1:-1] for line in out.stdout.splitlines() if line.count("│") == 5]
    table = [[c.strip() for c in r] for r in rows]
    assert ["gemma-greedy", "humaneval", "18", "0.556"] in table  # both campaigns' files
    assert ["evil", "gsm8k", "3", "0.0"] in table
