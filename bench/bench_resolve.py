"""Benchmark: wall time of `eval-resolve humaneval` (issue: well under a second, no heavy import).

Runs the real command as a subprocess several times and prints the median and
worst wall time, plus `python -c pass` on the same interpreter as the floor.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 15


def wall(cmd: list[str]) -> list[float]:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    assert cmd[-1] != "humaneval" or out.stdout.count(b"\n") == 164
    return times


def main() -> int:
    resolve = wall([sys.executable, str(REPO / "bin" / "eval-resolve"), "humaneval"])
    floor = wall([sys.executable, "-c", "pass"])
    mods = subprocess.run(
        [sys.executable, "-c", "import sys, llmeval.resolve; print(len(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        f"eval-resolve humaneval (164 records): median {statistics.median(resolve) * 1000:.0f} ms, "
        f"max {max(resolve) * 1000:.0f} ms over {RUNS} runs"
    )
    print(f"python -c pass (interpreter floor):   median {statistics.median(floor) * 1000:.0f} ms")
    print(
        f"ratio to the floor: {statistics.median(resolve) / statistics.median(floor):.1f}x; "
        f"modules imported by llmeval.resolve: {mods}"
    )
    return 0 if statistics.median(resolve) < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
