"""Benchmark: the hf backend beside a plain ``model.generate`` loop, on this CPU, real Gemma 3 270M.

Same prompts (the first HumanEval problems), same batch (the cpu preset's,
8), greedy, same new-token budget, fp32, and the same model object in memory
(the backend loads it; the plain loop calls its ``generate`` with the model's
own generation config put back), loaded before timing: only the code around
``model.generate`` differs.
Three ways, interleaved over ``--rounds`` rounds (the best round of each is
reported, as the machine is shared):

- ``plain``: ``tok(prompts, padding=True)`` then one ``model.generate`` per
  batch, as one would write it by hand (stops at EOS only);
- ``hf, no stop``: the backend on exactly that work (no stop sequences);
  its greedy outputs must equal the plain loop's, token for token;
- ``hf, stop``: the backend as eval-generate runs it, with the records' stop
  sequences (rows end at ``\\ndef`` etc.; a batch ends when all rows have).

Then the wall time of a fully cached re-run of eval-generate as a fraction of
the first run. The model is converted into a models cache first (not timed).

    python bench/bench_generate.py [--prompts 8] [--max-tokens 64] [--rounds 2]
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
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    opts = ap.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        os.environ["LLMEVAL_HOME"] = str(tmpd / "home")
        os.environ.setdefault("LLMEVAL_MODELS", str(tmpd / "models"))
        side_by_side(opts)
        cached_rerun(opts, tmpd)
    return 0


def side_by_side(opts: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    from llmeval.backends import Request, Sampling
    from llmeval.backends.hf import HFBackend
    from llmeval.models import materialize, resolve_model
    from llmeval.presets import load_preset
    from llmeval.resolve import resolve

    engine = load_preset("cpu")["engine"]
    batch = int(engine["batch_size"])
    records = list(resolve(["humaneval"], limit=opts.prompts))
    prompts = [r["prompt"] for r in records]
    ref = resolve_model("gemma3-270m")
    path = materialize(ref)

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    backend = HFBackend(ref, engine, lambda m: None)
    backend._load()  # loaded before any timing
    model = backend._model
    own_config, neutral = GenerationConfig.from_pretrained(path), model.generation_config
    eos = set(backend._eos)

    def plain() -> tuple[float, int, list[list[int]]]:
        model.generation_config = own_config  # as the model comes: what a plain loop gets
        t = time.perf_counter()
        outs = []
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=opts.max_tokens, do_sample=False)
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                cut = next((k + 1 for k, t_ in enumerate(row) if t_ in eos), len(row))
                outs.append(row[:cut])
        wall = time.perf_counter() - t
        model.generation_config = neutral
        return wall, sum(len(o) for o in outs), outs

    def via_backend(stop: bool) -> tuple[float, int, list[str]]:
        reqs = [
            Request(r["prompt"], None, [0], [None], Sampling(0.0, 1.0, opts.max_tokens, tuple(r["stop"]) if stop else ()), tag=i)
            for i, r in enumerate(records)
        ]
        t = time.perf_counter()
        done = sorted(backend.generate(reqs), key=lambda c: c.request.tag)
        wall = time.perf_counter() - t
        return wall, sum(c.completion_tokens or 0 for c in done), [c.text or "" for c in done]

    best: dict[str, tuple[float, int]] = {}
    walls: dict[str, list[float]] = {}
    same = True
    for _ in range(opts.rounds):
        for name, run in (("plain", plain), ("hf, no stop", lambda: via_backend(False)), ("hf, stop", lambda: via_backend(True))):
            wall, tokens, outs = run()
            if name == "plain":
                plain_texts = [tok.decode(o, skip_special_tokens=True) for o in outs]
            elif name == "hf, no stop":
                same = same and outs == plain_texts
            walls.setdefault(name, []).append(wall)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, tokens)
    print(
        f"{opts.prompts} HumanEval prompts, batch {batch}, greedy, {opts.max_tokens} new tokens, fp32, "
        f"{torch.get_num_threads()} threads; best of {opts.rounds} rounds"
    )
    base_wall = best["plain"][0]
    for name, (wall, tokens) in best.items():
        print(
            f"  {name:12s} {wall:6.1f} s  {tokens:4d} tokens  {tokens / wall:5.1f} tokens/s  "
            f"speed {base_wall / wall:.2f}x plain"
        )
    for name in ("hf, no stop", "hf, stop"):
        ratios = sorted(p / w for p, w in zip(walls["plain"], walls[name]))
        print(
            f"  {name}: speed vs plain in each round (run side by side): "
            + ", ".join(f"{r:.2f}x" for r in ratios)
            + f"; median {ratios[len(ratios) // 2]:.2f}x"
        )
    print(f"  hf (no stop) greedy outputs identical to the plain loop's: {same}")


def cached_rerun(opts: argparse.Namespace, tmpd: Path) -> None:
    env = dict(os.environ)
    prompts = tmpd / "prompts.jsonl"
    subprocess.run(
        [sys.executable, str(BIN / "eval-resolve"), "humaneval", "--limit", str(opts.prompts), "-o", str(prompts)],
        check=True,
        env=env,
    )
    args = [sys.executable, str(BIN / "eval-generate"), str(prompts), "--model", "gemma3-270m", "--preset", "cpu",
            "--max-tokens", str(opts.max_tokens)]
    walls = []
    for _ in range(2):
        t = time.perf_counter()
        out = subprocess.run(args, capture_output=True, env=env, check=True)
        walls.append(time.perf_counter() - t)
    recs = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert all(r["cached"] for r in recs), out.stderr.decode()
    print(
        f"eval-generate first run {walls[0]:.2f} s, fully cached re-run {walls[1]:.2f} s = "
        f"{walls[1] / walls[0]:.3f} of the first run ({len(recs)} samples, 0 generated)"
    )


if __name__ == "__main__":
    sys.exit(main())
