"""Benchmark: eval-aggregate on 1,000,000 scored records, beside pandas on the same file.

Writes a synthetic campaign (4 models x 5 datasets x 500 tasks x 100 samples,
records shaped like eval-score's), then runs, each in its own process:
eval-aggregate (default metrics, --bootstrap 200), and
pandas.read_json(lines=True) plus a groupby computing the pass rate per
(model, dataset). Prints wall time, records/s and peak memory (max RSS) of each.

    python bench/bench_aggregate.py [--records 1000000]
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
PANDAS = """
import sys, pandas as pd
df = pd.read_json(sys.argv[1], lines=True)
df["passed"] = df["score"].str["status"] == "pass"
print(df.groupby(["model", "dataset"])["passed"].mean().size)
"""


def measure(cmd: list[str]) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{cmd[:3]} failed with status {status}")
    return wall, usage.ru_maxrss / 1024  # MiB


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    n = ap.parse_args().records
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "campaign.scored.jsonl"
        models, datasets, samples = 4, 5, 100
        tasks = max(1, n // (models * datasets * samples))
        written = 0
        with open(path, "wb") as fh:
            for m in range(models):
                for d in range(datasets):
                    for t in range(tasks):
                        for s in range(samples):
                            status = "pass" if (t * 7 + s * 3 + m) % 10 < 3 + m else "fail"
                            fh.write(
                                orjson.dumps(
                                    {
                                        "id": f"ds{d}/{t}",
                                        "dataset": f"ds{d}",
                                        "task_id": str(t),
                                        "model": f"model-{m}",
                                        "sample": s,
                                        "scorer": "code_exec",
                                        "usage": {"completion_tokens": 50 + s},
                                        "key": f"{m}-{d}-{t}-{s}",
                                        "run_id": f"run-{m}",
                                        "preset": "h100",
                                        "dataset_hash": f"sha256:{d}",
                                        "llmeval_version": "0.1.0",
                                        "score": {
                                            "status": status,
                                            "value": float(status == "pass"),
                                        },
                                    }
                                )
                                + b"\n"
                            )
                            written += 1
        size = path.stat().st_size / 2**20
        print(f"{written} scored records, {size:.0f} MiB")
        ours = measure(
            [sys.executable, str(REPO / "bin" / "eval-aggregate"), str(path), "--bootstrap", "200"]
        )
        pandas = measure([sys.executable, "-c", PANDAS, str(path)])
    for name, (wall, rss) in (("eval-aggregate", ours), ("pandas read_json+groupby", pandas)):
        print(f"{name:26s} {wall:6.1f} s  {written / wall:9.0f} records/s  peak RSS {rss:7.0f} MiB")
    print(
        f"speed ratio {pandas[0] / ours[0]:.1f}x, memory ratio {pandas[1] / ours[1]:.1f}x (pandas / eval-aggregate)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
