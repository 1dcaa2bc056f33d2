"""Benchmark: the hf backend on this CPU with the embedded default model.

Prints output tokens/s at batch 1 and at the cpu preset's batch size on the
same prompts (greedy, so the outputs must also be identical), and the wall time
of a fully cached re-run as a fraction of the first run. The model is
converted into a temporary models cache first (not timed).

    python bench/bench_generate.py [--prompts 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "bin"


def run(args: list[str], prompts: Path, env: dict[str, str]) -> tuple[float, list[dict], str]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(BIN / "eval-generate"), str(prompts), *args],
        capture_output=True,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - t
    return wall, [orjson.loads(x) for x in out.stdout.splitlines()], out.stderr.decode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    opts = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from llmeval.presets import load_preset

    batch = load_preset("cpu")["engine"]["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        env = {
            **os.environ,
            "LLMEVAL_HOME": str(tmpd / "home"),
            "LLMEVAL_MODELS": os.environ.get("LLMEVAL_MODELS", str(tmpd / "models")),
        }
        prompts = tmpd / "prompts.jsonl"
        subprocess.run(
            [
                sys.executable,
                str(BIN / "eval-resolve"),
                "humaneval",
                "--limit",
                str(opts.prompts),
                "-o",
                str(prompts),
            ],
            check=True,
            env=env,
        )
        common = ["--model", "gemma3-270m", "--preset", "cpu", "--max-tokens", str(opts.max_tokens)]
        # Warm-up: converts the model once (not part of any figure).
        subprocess.run(
            [
                sys.executable,
                str(BIN / "eval-generate"),
                str(prompts),
                *common,
                "--no-cache",
                "--limit",
                "1",
                "--max-tokens",
                "1",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        results = {}
        for b in (1, batch):
            wall, recs, err = run([*common, "--batch-size", str(b), "--no-cache"], prompts, env)
            tokens = sum(r["usage"]["completion_tokens"] for r in recs)
            gen_s = float(re.search(r"\(([\d.]+) s, [\d.]+ tokens/s\)", err).group(1))
            results[b] = (tokens / gen_s, recs, wall)
            print(
                f"hf batch {b:>2}: {tokens} output tokens in {gen_s:.1f} s = {tokens / gen_s:.1f} tokens/s "
                f"(wall {wall:.1f} s incl. model load)"
            )
        same = sorted((r["key"], r["completion"]) for r in results[1][1]) == sorted(
            (r["key"], r["completion"]) for r in results[batch][1]
        )
        print(
            f"speed-up batch {batch} vs 1: {results[batch][0] / results[1][0]:.2f}x; "
            f"identical greedy outputs: {same}"
        )
        first, _, _ = run(common, prompts, env)
        cached, recs, err = run(common, prompts, env)
        assert all(r["cached"] for r in recs), err
        print(
            f"first run {first:.2f} s, fully cached re-run {cached:.2f} s = "
            f"{cached / first:.3f} of the first run ({len(recs)} samples, 0 generated)"
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
