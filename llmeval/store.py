"""The results database: every run you ever made, in one SQLite file you query with SQL.

    eval-aggregate results/campaign-a/ --format sqlite -o results.db
    eval-aggregate results/campaign-b/ --format sqlite -o results.db   # same file: adds B
    sqlite3 results.db 'SELECT model, dataset, value FROM metrics WHERE metric = "pass@1"'

Tables (keys and columns in docs/records.md, "The results database"):
``runs`` (run records), ``tasks`` (prompts and references), ``samples``
(one generation each), ``scores`` (one verdict each), ``metrics``,
``comparisons`` and ``leaderboard`` (eval-aggregate's records), and the view
``scored`` (samples joined with their scores and runs).

Loading is idempotent by record key: a row whose key is already there is
left alone, so loading the same files again adds nothing, and loading a
campaign that shares runs with one loaded before adds only what is new. One
load is one transaction: a bad record rolls everything back, and a load
running beside another waits for it (SQLite's lock).

Why SQLite rather than DuckDB: it is in Python's standard library (nothing
to install on a login node), one file that every language and tool opens,
with transactions and a lock for loads from concurrent array tasks; the
tables are small (a million samples load in seconds, and queries over them
take well under a second). DuckDB is the better engine for scanning the
JSONL tree itself without loading anything (the README shows how), and it
reads this file too (its ``sqlite`` extension).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from llmeval.errors import DataError
from llmeval.records import Record
from llmeval.vocab import PASS

SCHEMA_VERSION = 1
BATCH = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    stage TEXT, started_at TEXT, host TEXT, user TEXT,
    slurm_job_id TEXT, slurm_array_job_id TEXT, slurm_array_task_id TEXT, slurm_node TEXT,
    preset TEXT, seed INTEGER, llmeval_version TEXT, llmeval_git TEXT,
    gpus TEXT, libraries TEXT, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT NOT NULL, dataset_hash TEXT NOT NULL,
    dataset TEXT, task_id TEXT, category TEXT, scorer TEXT,
    prompt TEXT, messages TEXT, reference TEXT,
    PRIMARY KEY (id, dataset_hash)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
    model TEXT, model_id TEXT, model_revision TEXT, backend TEXT, preset TEXT,
    dataset TEXT, task_id TEXT, category TEXT, dataset_hash TEXT,
    sample INTEGER, temperature REAL, top_p REAL, max_tokens INTEGER, seed INTEGER,
    completion TEXT, finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,
    error TEXT, cached INTEGER, llmeval_version TEXT, source TEXT,
    PRIMARY KEY (run_id, id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scores (
    score_run_id TEXT NOT NULL, run_id TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
    status TEXT NOT NULL, value REAL, passed INTEGER NOT NULL,
    extracted TEXT, expected TEXT, detail TEXT, sanitized TEXT, time_s REAL,
    PRIMARY KEY (score_run_id, run_id, id, key),
    FOREIGN KEY (run_id, id, key) REFERENCES samples (run_id, id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics (
    basis TEXT NOT NULL, metric TEXT NOT NULL, grp TEXT NOT NULL,
    model TEXT, dataset TEXT, category TEXT,
    value REAL, ci_low REAL, ci_high REAL, ci_level REAL,
    n_tasks INTEGER, n_samples INTEGER, counts TEXT, bootstrap INTEGER, seed INTEGER,
    run_ids TEXT, presets TEXT, dataset_hashes TEXT, llmeval_versions TEXT,
    started_at TEXT, record TEXT NOT NULL,
    PRIMARY KEY (basis, metric)
);
CREATE TABLE IF NOT EXISTS comparisons (
    basis TEXT NOT NULL, context TEXT NOT NULL, metric TEXT NOT NULL,
    model_a TEXT NOT NULL, model_b TEXT NOT NULL, dataset TEXT,
    value_a REAL, value_b REAL, diff REAL, ci_low REAL, ci_high REAL, ci_level REAL,
    test TEXT, p_value REAL, p_holm REAL, significant INTEGER, n_shared INTEGER,
    record TEXT NOT NULL,
    PRIMARY KEY (basis, context, metric, model_a, model_b)
);
CREATE TABLE IF NOT EXISTS leaderboard (
    basis TEXT NOT NULL, scope TEXT NOT NULL, model TEXT NOT NULL,
    rank INTEGER, rank_low INTEGER, rank_high INTEGER,
    value REAL, ci_low REAL, ci_high REAL, ci_level REAL, n_models INTEGER,
    datasets TEXT, record TEXT NOT NULL,
    PRIMARY KEY (basis, scope, model)
);
CREATE INDEX IF NOT EXISTS samples_model_dataset ON samples (model, dataset);
CREATE INDEX IF NOT EXISTS metrics_model_dataset ON metrics (model, dataset, metric);
CREATE VIEW IF NOT EXISTS scored AS
    SELECT s.*, sc.score_run_id, sc.status, sc.value, sc.passed, sc.extracted, sc.expected,
           sc.detail, sc.time_s, r.started_at, r.host, r.slurm_job_id
    FROM samples s
    JOIN scores sc ON sc.run_id = s.run_id AND sc.id = s.id AND sc.key = s.key
    LEFT JOIN runs r ON r.run_id = s.run_id;
"""

TABLES = ("runs", "tasks", "samples", "scores", "metrics", "comparisons", "leaderboard")


def _json(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def _sql(v: Any) -> Any:
    """A field as SQLite stores it: text and numbers as they are, anything else as JSON text."""
    t = type(v)
    return v if t is str or t is int or t is float or v is None else _json(v)


SAMPLE_FIELDS = ("model", "model_id", "model_revision", "backend", "preset", "dataset",
                 "task_id", "category")  # fmt: skip
PARAM_FIELDS = ("temperature", "top_p", "max_tokens", "seed")
SCORE_FIELDS = ("extracted", "expected", "detail", "sanitized", "time_s")


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def sample_key(rec: Record) -> str:
    """The record's generation ``key``; records without one get a content hash instead."""
    key = rec.get("key")
    if isinstance(key, str) and key:
        return key
    ident = [rec.get("model"), rec.get("id"), rec.get("sample"), rec.get("completion")]
    return "nokey:" + hashlib.sha256(orjson.dumps(ident)).hexdigest()


def basis(data: Any) -> str:
    """A content hash of what a derived number was computed from (its identity in the store)."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class Store:
    """One load into a results database: open, stream records in, add summaries, commit."""

    def __init__(self, path: str):
        self.path = path
        self.created = not os.path.exists(path)
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise DataError(path, "its directory does not exist")
        try:
            self.db = sqlite3.connect(path, timeout=300, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys = OFF")  # scores may arrive before samples
            self.db.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages: big loads stay fast
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DataError(
                    path, f"results database schema {version} is newer than this llmeval's"
                )
            self.db.execute("BEGIN IMMEDIATE")  # one load is one transaction
            for statement in SCHEMA.split(";\n"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self._discard()
            raise DataError(path, f"not a usable SQLite database ({exc})") from None
        self.before = self.counts()
        self._samples: list[tuple[Any, ...]] = []
        self._scores: list[tuple[Any, ...]] = []
        self._tasks: list[tuple[Any, ...]] = []
        self._seen_tasks: set[tuple[str, str]] = set()

    # -- streaming records

    def tee(
        self, numbered: Iterable[tuple[str, Record]], source: str | None = None
    ) -> Iterator[tuple[str, Record]]:
        """Pass records on; store each once the consumer has accepted it (asked for the next)."""
        for where, rec in numbered:
            yield where, rec
            self.add(rec, where.rsplit(":", 1)[0] if source is None else source)

    def add(self, rec: Record, source: str | None = None) -> None:
        """Queue one scored record (written in batches)."""
        get = rec.get
        run_id = get("run_id")
        if type(run_id) is not str:
            run_id = ""
        rid = str(get("id") or get("task_id"))
        key = sample_key(rec)
        params = get("params")
        params = params if type(params) is dict else {}
        usage = get("usage")
        usage = usage if type(usage) is dict else {}
        dhash = get("dataset_hash")
        if type(dhash) is not str:
            dhash = ""
        cached = get("cached")
        self._samples.append(
            (
                run_id, rid, key,
                *[_sql(get(f)) for f in SAMPLE_FIELDS], dhash, _sql(get("sample")),
                *[_sql(params.get(f)) for f in PARAM_FIELDS],
                _sql(get("completion")), _sql(get("finish_reason")),
                _sql(usage.get("prompt_tokens")), _sql(usage.get("completion_tokens")),
                _sql(get("error")), None if cached is None else int(bool(cached)),
                _sql(get("llmeval_version")), source,
            )
        )  # fmt: skip
        score = rec["score"]
        score_run = score.get("run_id")
        if type(score_run) is not str:
            score_run = ""
        status = score["status"]
        self._scores.append(
            (
                score_run, run_id, rid, key, status, _sql(score.get("value")),
                int(status == PASS), *[_sql(score.get(f)) for f in SCORE_FIELDS],
            )
        )  # fmt: skip
        if (rid, dhash) not in self._seen_tasks:
            # Each task is written once per load (prompts and references are the big parts).
            self._seen_tasks.add((rid, dhash))
            self._tasks.append(
                (
                    rid, dhash, _sql(get("dataset")), _sql(get("task_id")),
                    _sql(get("category")), _sql(get("scorer")), _sql(get("prompt")),
                    _json(get("messages")), _json(get("reference")),
                )
            )  # fmt: skip
        if len(self._samples) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows (INSERT OR IGNORE: rows whose key is there stay as they are)."""
        ex = self.db.executemany
        if self._samples:
            ex(f"INSERT OR IGNORE INTO samples VALUES ({','.join('?' * 25)})", self._samples)
            ex(f"INSERT OR IGNORE INTO scores VALUES ({','.join('?' * 12)})", self._scores)
            self._samples, self._scores = [], []
        if self._tasks:
            ex(f"INSERT OR IGNORE INTO tasks VALUES ({','.join('?' * 9)})", self._tasks)
            self._tasks = []

    # -- runs and summaries

    def add_runs(self, runs: Iterable[Record]) -> None:
        """The run records behind this load (``runs`` table)."""
        rows = []
        for r in runs:
            slurm = _obj(r.get("slurm"))
            ll = _obj(r.get("llmeval"))
            preset = r.get("preset")
            rows.append(
                (
                    r["run_id"], _sql(r.get("stage")), _sql(r.get("started_at")),
                    _sql(r.get("host")), _sql(r.get("user")),
                    _sql(slurm.get("job_id")), _sql(slurm.get("array_job_id")),
                    _sql(slurm.get("array_task_id")), _sql(slurm.get("node")),
                    _sql(preset.get("name") if isinstance(preset, dict) else preset),
                    _sql(r.get("seed")), _sql(ll.get("version")), _sql(ll.get("git")),
                    _json(r.get("gpus")), _json(r.get("libraries")), _json(r),
                )
            )  # fmt: skip
        self.db.executemany(f"INSERT OR IGNORE INTO runs VALUES ({','.join('?' * 16)})", rows)

    def add_summary(
        self,
        by: list[str],
        metrics: list[tuple[str, Record]],
        comps: list[Record],
        board: list[Record],
        load_basis: str,
        started: dict[str, str],
    ) -> None:
        """eval-aggregate's records. ``metrics`` pairs each with its group's basis (a content
        hash of the group's per-task counts, runs and the statistics' settings); comparisons
        and leaderboard rows take ``load_basis``, the hash of every group of this load."""
        rows = []
        for b, r in metrics:
            times = [started[x] for x in r.get("run_ids", []) if x in started]
            group = {f: r[f] for f in by}
            rows.append(
                (
                    b, r["metric"], _json(group), r.get("model"), r.get("dataset"),
                    r.get("category"), r["value"], r["ci_low"], r["ci_high"], r["ci_level"],
                    r["n_tasks"], r["n_samples"], _json(r["counts"]), r["bootstrap"], r["seed"],
                    _json(r["run_ids"]), _json(r["presets"]), _json(r["dataset_hashes"]),
                    _json(r["llmeval_versions"]), min(times) if times else None, _json(r),
                )
            )  # fmt: skip
        self.db.executemany(f"INSERT OR IGNORE INTO metrics VALUES ({','.join('?' * 21)})", rows)
        from llmeval.report import COMPARISON_FIELDS

        self.db.executemany(
            f"INSERT OR IGNORE INTO comparisons VALUES ({','.join('?' * 18)})",
            [
                (
                    load_basis, _json({k: v for k, v in c.items() if k not in COMPARISON_FIELDS}),
                    c["metric"], c["model_a"], c["model_b"], c.get("dataset"),
                    c["value_a"], c["value_b"], c["diff"], c["ci_low"], c["ci_high"],
                    c.get("ci_level"), c["test"], c["p_value"], c["p_holm"],
                    int(bool(c["significant"])), c["n_shared"], _json(c),
                )
                for c in comps
            ],
        )  # fmt: skip
        self.db.executemany(
            f"INSERT OR IGNORE INTO leaderboard VALUES ({','.join('?' * 13)})",
            [
                (
                    load_basis, r["scope"], r["model"], r["rank"], r["rank_low"], r["rank_high"],
                    r["value"], r["ci_low"], r["ci_high"], r["ci_level"], r["n_models"],
                    _json(r["datasets"]), _json(r),
                )
                for r in board
            ],
        )  # fmt: skip

    # -- the end of a load

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}

    def commit(self) -> dict[str, int]:
        """Write everything; return how many rows each table gained."""
        self.flush()
        after = self.counts()
        self.db.execute("COMMIT")
        self.db.close()
        return {t: after[t] - self.before[t] for t in TABLES}

    def abort(self) -> None:
        """Roll the load back; a database this load created is removed again."""
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._discard()

    def _discard(self) -> None:
        try:
            self.db.close()
        except (sqlite3.Error, AttributeError):
            pass
        if self.created:
            for suffix in ("", "-journal"):
                try:
                    os.unlink(self.path + suffix)
                except OSError:
                    pass

