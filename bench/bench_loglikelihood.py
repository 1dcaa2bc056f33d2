"""Benchmark: the hf backend's log-likelihoods beside lm-evaluation-harness's ``HFLM``, real Gemma 3 270M.

Same questions (the MMLU fixture, ``--num-fewshot`` examples each), same
model object in memory (the backend loads it; ``HFLM`` is handed it), same
batch size, fp32 on this CPU. lm-eval gets one ``loglikelihood`` request per
(question, choice), as its ``multiple_choice`` tasks make them; llmeval one
request per question. Interleaved over ``--rounds`` rounds, best of each
reported (the machine is shared); the numbers of both must agree to 1e-4.

    python bench/bench_loglikelihood.py [--num-fewshot 5] [--rounds 2] [--batch-size 8]
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
BIN = REPO / "bin"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-fewshot", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    opts = ap.parse_args()
    sys.path.insert(0, str(REPO))
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        print("lm_eval is not installed: pip install 'lm_eval>=0.4.13,<0.5'", file=sys.stderr)
        return 1
    from llmeval.backends import LoglikRequest
    from llmeval.backends.hf import HFBackend
    from llmeval.models import resolve_model

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLMEVAL_HOME"] = str(Path(tmp) / "home")
        os.environ.setdefault("LLMEVAL_MODELS", str(Path(tmp) / "models"))
        out = subprocess.run(
            [sys.executable, str(BIN / "eval-resolve"), "mmlu", "--data-dir",
             str(REPO / "tests" / "fixtures"), "--num-fewshot", str(opts.num_fewshot)],
            capture_output=True, check=True,
        )
        recs = [orjson.loads(line) for line in out.stdout.splitlines()]
        engine = {"backend": "hf", "device": "cpu", "dtype": "float32", "batch_size": opts.batch_size}
        be = HFBackend(resolve_model("gemma3-270m"), engine, lambda m: None)
        reqs = [LoglikRequest(r["prompt"], None, r["reference"]["continuations"]) for r in recs]
        list(be.loglikelihood(reqs[:1]))  # load the model (not timed)
        lm = HFLM(pretrained=be._model, tokenizer=be._tok, batch_size=opts.batch_size, device="cpu")
        pairs = [(r.prompt, c) for r in reqs for c in r.continuations]
        instances = [
            Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
            for i, pair in enumerate(pairs)
        ]
        best = {"llmeval": float("inf"), "lm_eval": float("inf")}
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(opts.rounds):
            t0 = time.perf_counter()
            ours = [lp for res in be.loglikelihood(reqs) for lp in (res.logprobs or [])]
            best["llmeval"] = min(best["llmeval"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = [ll for ll, _ in lm.loglikelihood(instances, disable_tqdm=True)]
            best["lm_eval"] = min(best["lm_eval"], time.perf_counter() - t0)
        worst = max(abs(a - b) for a, b in zip(ours, theirs))
        print(
            f"{len(recs)} questions x {len(reqs[0].continuations)} choices, {opts.num_fewshot}-shot, "
            f"batch {opts.batch_size}: llmeval hf {best['llmeval']:.2f} s, lm_eval HFLM "
            f"{best['lm_eval']:.2f} s, ratio lm_eval/llmeval {best['lm_eval'] / best['llmeval']:.2f}; "
            f"max |difference| {worst:.2e}"
        )
        return 0 if worst < 1e-4 and len(ours) == len(theirs) else 1


if __name__ == "__main__":
    sys.exit(main())
