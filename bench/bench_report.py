"""Benchmark: eval-aggregate's HTML report and results database on many scored records.

Writes a synthetic campaign (4 models x 5 datasets x tasks x 10 samples,
records shaped like eval-score's, with 300-character completions), then
runs, each in its own process: eval-aggregate --format html, eval-aggregate
--format sqlite into a new database, the same load again (nothing new), and
DuckDB loading the same JSONL into a table of its own (the reference: a
columnar engine reading JSON as fast as it goes). Prints wall time,
records/s, peak memory (max RSS) and output size of each.

    python bench/bench_report.py [--records 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
DUCKDB = """
import sys, duckdb
con = duckdb.connect(sys.argv[2])
con.execute("CREATE TABLE scored AS SELECT * FROM read_json_auto(?, union_by_name = true)", [sys.argv[1]])
print(con.execute("SELECT count(*) FROM scored").fetchone()[0])
"""


def measure(cmd: list[str]) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{cmd[:4]} failed with status {status}")
    return wall, usage.ru_maxrss / 1024  # MiB


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    n = ap.parse_args().records
    agg = [sys.executable, str(REPO / "bin" / "eval-aggregate")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "campaign.scored.jsonl"
        models, datasets, samples = 4, 5, 10
        tasks = max(1, n // (models * datasets * samples))
        written = 0
        with open(path, "wb") as fh:
            for m in range(models):
                for d in range(datasets):
                    for t in range(tasks):
                        for s in range(samples):
                            status = "pass" if (t * 7 + s * 3 + m) % 10 < 3 + m else "fail"
                            rec = {
                                "id": f"ds{d}/{t}", "dataset": f"ds{d}", "task_id": str(t),
                                "category": "coding" if d < 3 else "math",
                                "prompt": f"def f{t}(x):\n    " + "# task text " * 20,
                                "model": f"model-{m}", "sample": s, "scorer": "code_exec",
                                "completion": "    return x\n" * 25,
                                "finish_reason": "stop",
                                "usage": {"prompt_tokens": 60, "completion_tokens": 50 + s},
                                "key": f"{m:04d}{d:04d}{t:08d}{s:04d}" * 3,
                                "run_id": f"run-{m}", "preset": "h100",
                                "dataset_hash": f"sha256:{d}", "llmeval_version": "0.1.0",
                                "score": {"status": status, "value": float(status == "pass"),
                                          "detail": None if status == "pass" else "assertion failed",
                                          "run_id": f"score-{m}"},
                            }  # fmt: skip
                            fh.write(orjson.dumps(rec) + b"\n")
                            written += 1
        size = path.stat().st_size / 2**20
        print(f"{written} scored records, {size:.0f} MiB")
        html, db, duck = Path(tmp) / "r.html", Path(tmp) / "r.db", Path(tmp) / "r.duckdb"
        runs = [
            ("eval-aggregate --format html", agg + [str(path), "--format", "html", "-o", str(html),
                                                    "--bootstrap", "200"], html),
            ("eval-aggregate --format sqlite", agg + [str(path), "--format", "sqlite", "-o", str(db),
                                                      "--bootstrap", "200"], db),
            ("  the same load again", agg + [str(path), "--format", "sqlite", "-o", str(db),
                                             "--bootstrap", "200"], db),
            ("duckdb read_json_auto -> table", [sys.executable, "-c", DUCKDB, str(path), str(duck)],
             duck),
        ]  # fmt: skip
        results = []
        for name, cmd, out in runs:
            wall, rss = measure(cmd)
            results.append((name, wall, rss, out.stat().st_size / 2**20))
    for name, wall, rss, mib in results:
        print(
            f"{name:32s} {wall:6.1f} s  {written / wall:8.0f} records/s  "
            f"peak RSS {rss:6.0f} MiB  output {mib:6.1f} MiB"
        )
    print(f"sqlite load / duckdb load time ratio: {results[1][1] / results[3][1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
