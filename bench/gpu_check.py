"""The GPU check (issue 12): the hf backend on CUDA at a realistic model shape, beside a plain loop.

Run through ``bench/gpu_check.sh OUT_DIR`` on a machine with an NVIDIA GPU,
PyTorch and transformers; it needs no network, no hub and no vLLM:

1. builds a Llama-3-8B-shaped model (32 layers, hidden 4096, GQA 32/8,
   vocab 128256, bf16) with random weights, on the GPU, from a config, and a
   byte-level tokenizer of the same vocabulary size; saves both to a folder;
2. times a plain ``model.generate`` loop over the prompts at the h100
   preset's batch size (greedy, fixed new-token budget);
3. times the hf backend on the same prompts, batch and budget (in-process,
   model loaded first), and compares its greedy outputs with the loop's;
4. runs ``eval-generate --preset h100 --backend hf`` end to end on the same
   prompts and takes ``eval-monitor --once --json`` snapshots while it runs
   (the GPU through NVML, the run's state and engine figures);
5. writes everything it measured to OUT_DIR: ``results.json``,
   ``summary.md``, ``monitor-*.json*``, ``gen.jsonl`` (+ heartbeat, run
   record), ``eval-generate.stderr``, ``nvidia-smi.txt``.

``--tiny --device cpu`` runs the same steps with a two-layer model on the CPU
(what the test suite does, so the script is known to run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "bin"

LLAMA3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TINY = {**LLAMA3_8B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}
BOS, EOS = 128000, 128001
PARAGRAPH = (
    "def merge_intervals(intervals):\n"
    '    """Merge overlapping intervals and return them sorted by start."""\n'
    "    intervals = sorted(intervals, key=lambda iv: iv[0])\n"
    "    merged = []\n"
    "    for start, end in intervals:\n"
    "        if merged and start <= merged[-1][1]:\n"
    "            merged[-1][1] = max(merged[-1][1], end)\n"
    "        else:\n"
    "            merged.append([start, end])\n"
    "    return merged\n\n"
    "Question: a train leaves at 9:40 and arrives at 13:05. How long is the trip, in minutes?\n"
)


def log(msg: str) -> None:
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)


def byte_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with ``vocab_size`` ids (no merges), BOS added to every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {s: i for i, s in enumerate(sorted(byte_symbols))}
    specials = {"<|begin_of_text|>": BOS, "<|end_of_text|>": EOS}
    names = {i: t for t, i in specials.items()}
    for i in range(len(vocab), vocab_size):
        # Filler ids (a random model writes them; they decode to text), and the two specials.
        vocab[names.get(i, f"<r{i}>")] = i
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(list(specials))
    tk.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", BOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
    )


def build_model(folder: Path, shape: dict[str, Any], device: str) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.monotonic()
    config = LlamaConfig(**shape, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialised in bf16: 16 GB, not 32 GB then 16
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    params = sum(p.numel() for p in model.parameters())
    built = time.monotonic() - t0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    byte_tokenizer(shape["vocab_size"]).save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"parameters": params, "build_s": round(built, 1), "save_s": round(time.monotonic() - t0 - built, 1)}


def make_prompts(path: Path, n: int, tiny: bool) -> list[dict[str, Any]]:
    """``n`` prompts of 150-600 bytes (= tokens), sorted by length so both runs batch them alike."""
    text = PARAGRAPH * 8
    lengths = [(40 if tiny else 150) + (i * 97) % (60 if tiny else 450) for i in range(n)]
    recs = [
        {"id": f"synthetic/{i}", "prompt": text[(i * 31) % 200 : (i * 31) % 200 + k], "stop": []}
        for i, k in enumerate(lengths)
    ]
    recs.sort(key=lambda r: len(r["prompt"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def plain_loop(folder: Path, prompts: list[str], batch: int, max_new: int, device: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device).eval()

    def run(model: Any, ps: list[str], new: int) -> tuple[float, list[list[int]]]:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        outs = []
        for i in range(0, len(ps), batch):
            enc = tok(ps[i : i + batch], return_tensors="pt", padding=True).to(device)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=new, do_sample=False)
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                cut = next((k + 1 for k, x in enumerate(row) if x == EOS), len(row))
                outs.append(row[:cut])
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, outs

    run(model, prompts[:batch], 4)  # warm-up: CUDA context, kernels
    wall, outs = run(model, prompts, max_new)
    tokens = sum(len(o) for o in outs)
    texts = [tok.decode(o, skip_special_tokens=True) for o in outs]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"wall_s": round(wall, 2), "output_tokens": tokens, "tokens_per_s": round(tokens / wall, 1), "texts": texts}


def backend_run(folder: Path, engine: dict[str, Any], recs: list[dict[str, Any]], max_new: int) -> dict[str, Any]:
    import torch

    from llmeval.backends import Request, Sampling
    from llmeval.backends.hf import HFBackend
    from llmeval.models import resolve_model

    be = HFBackend(resolve_model(str(folder)), engine, lambda m: log(m))
    be._load()
    cuda = be._device == "cuda"

    def run(be: Any, rs: list[dict[str, Any]], new: int) -> tuple[float, list[Any]]:
        reqs = [Request(r["prompt"], None, [0], [None], Sampling(0.0, 1.0, new, ()), tag=i) for i, r in enumerate(rs)]
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        done = sorted(be.generate(reqs), key=lambda c: c.request.tag)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, done

    run(be, recs[: int(engine["batch_size"])], 4)  # warm-up
    wall, done = run(be, recs, max_new)
    errors = [c.error for c in done if c.error]
    tokens = sum(c.completion_tokens or 0 for c in done)
    facts = dict(be.facts)
    be.close()
    del be
    if cuda:
        torch.cuda.empty_cache()
    return {"wall_s": round(wall, 2), "output_tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "texts": [c.text for c in done], "errors": errors[:3], "facts": facts}


def end_to_end(folder: Path, prompts: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """eval-generate as a user runs it, with eval-monitor snapshots while it works."""
    gen = out / "gen.jsonl"
    for p in (gen, Path(f"{gen}.metrics.json"), Path(f"{gen}.runs.jsonl")):
        p.unlink(missing_ok=True)
    env = {**os.environ, "LLMEVAL_HEARTBEAT_S": "2"}
    cmd = [sys.executable, str(BIN / "eval-generate"), str(prompts), "--model", str(folder), "--backend", "hf",
           "--preset", "h100", "--device", args.device, "--dtype", "bfloat16", "--max-tokens", str(args.max_tokens),
           "--no-cache", "--no-progress", "-o", str(gen)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    t0 = time.monotonic()
    with open(out / "eval-generate.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        snaps = []
        while proc.poll() is None:
            time.sleep(args.monitor_every)
            if not Path(f"{gen}.metrics.json").exists():
                continue
            snap = subprocess.run([sys.executable, str(BIN / "eval-monitor"), str(out), "--once", "--json",
                                   "--stall", "30"], capture_output=True, timeout=60, env=env)
            if snap.returncode == 0 and snap.stdout.strip():
                snaps.append(json.loads(snap.stdout))
        rc = proc.wait()
    wall = time.monotonic() - t0
    with open(out / "monitor-during.jsonl", "w") as fh:
        fh.writelines(json.dumps(s) + "\n" for s in snaps)
    recs = [json.loads(x) for x in gen.read_text().splitlines()] if gen.exists() else []
    metrics = json.loads(Path(f"{gen}.metrics.json").read_text()) if Path(f"{gen}.metrics.json").exists() else {}
    runs = [r for s in snaps for r in s.get("runs", [])]
    gpus_seen = [g for s in snaps for g in s.get("gpus", [])]
    return {
        "exit_status": rc,
        "wall_s_with_load": round(wall, 1),
        "records": len(recs),
        "errors": sum(1 for r in recs if r.get("error")),
        "output_tokens": metrics.get("output_tokens"),
        "load_s": (metrics.get("backend_facts") or {}).get("load_s"),
        "monitor_snapshots": len(snaps),
        "monitor_states": sorted({r["state"] for r in runs}),
        "monitor_engine_phases": sorted({(r.get("engine") or {}).get("phase") for r in runs} - {None}),
        "monitor_gpu_util_max": max((g.get("util_percent") or 0 for g in gpus_seen), default=None),
        "monitor_gpu_memory_used_mb_max": max((g.get("memory_used_mb") or 0 for g in gpus_seen), default=None),
        "monitor_gpu_names": sorted({g.get("name") for g in gpus_seen}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="llmeval GPU check (bench/gpu_check.sh)")
    ap.add_argument("--out", required=True, help="directory for everything measured")
    ap.add_argument("--model-dir", help="where the random model is written (default: a temp dir, removed)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="a two-layer model (CPU test of the script)")
    ap.add_argument("--prompts", type=int, default=128, help="prompts (default 128: two h100 batches)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, help="default: the h100 preset's")
    ap.add_argument("--monitor-every", type=float, default=3.0)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from llmeval.presets import load_preset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        log("no CUDA device visible to torch; use --device cpu --tiny for a dry run")
        return 2
    engine = {**load_preset("h100")["engine"], "backend": "hf", "device": args.device, "dtype": "bfloat16"}
    if args.batch_size:
        engine["batch_size"] = args.batch_size
    batch = int(engine["batch_size"])
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model_shape": "tiny (2 layers)" if args.tiny else "Llama-3-8B (random weights, bf16)",
        "batch_size": batch,
        "prompts": args.prompts,
        "max_new_tokens": args.max_tokens,
    }
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True)
        (out / "nvidia-smi.txt").write_text(smi.stdout + smi.stderr)
    idle = subprocess.run([sys.executable, str(BIN / "eval-monitor"), str(out), "--once", "--json"],
                          capture_output=True, text=True)
    (out / "monitor-idle.json").write_text(idle.stdout)
    tmp = None
    folder = Path(args.model_dir) if args.model_dir else Path(tmp := __import__("tempfile").mkdtemp(prefix="llmeval-gpu-check-"))
    try:
        log(f"building the model in {folder}")
        results["model"] = build_model(folder, TINY if args.tiny else LLAMA3_8B, args.device)
        recs = make_prompts(out / "prompts.jsonl", args.prompts, args.tiny)
        log("plain model.generate loop")
        plain = plain_loop(folder, [r["prompt"] for r in recs], batch, args.max_tokens, args.device)
        log("hf backend")
        hf = backend_run(folder, engine, recs, args.max_tokens)
        results["plain_generate_loop"] = {k: v for k, v in plain.items() if k != "texts"}
        results["hf_backend"] = {k: v for k, v in hf.items() if k != "texts"}
        results["hf_vs_plain_speed"] = round(plain["wall_s"] / hf["wall_s"], 3)
        results["identical_greedy_outputs"] = plain["texts"] == hf["texts"]
        results["identical_greedy_outputs_share"] = round(
            sum(a == b for a, b in zip(plain["texts"], hf["texts"])) / max(1, len(recs)), 3
        )
        log("eval-generate end to end, with eval-monitor")
        results["eval_generate"] = end_to_end(folder, out / "prompts.jsonl", out, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    p, h, e = results["plain_generate_loop"], results["hf_backend"], results["eval_generate"]
    summary = (
        f"# llmeval GPU check, {results['gpu'] or args.device}\n\n"
        f"{results['model_shape']}, {results['model']['parameters'] / 1e9:.2f} B parameters; "
        f"{args.prompts} prompts, batch {batch}, greedy, {args.max_tokens} new tokens; "
        f"torch {results['torch']}, transformers {results['transformers']}.\n\n"
        f"| run | wall s | output tokens | tokens/s |\n|---|---|---|---|\n"
        f"| plain model.generate loop | {p['wall_s']} | {p['output_tokens']} | {p['tokens_per_s']} |\n"
        f"| hf backend | {h['wall_s']} | {h['output_tokens']} | {h['tokens_per_s']} |\n\n"
        f"hf backend speed: {results['hf_vs_plain_speed']}x the plain loop; identical greedy outputs: "
        f"{results['identical_greedy_outputs_share']:.0%} of prompts.\n\n"
        f"eval-generate end to end: exit {e['exit_status']}, {e['records']} records, {e['errors']} errors, "
        f"{e['wall_s_with_load']} s with a {e['load_s']} s load; eval-monitor saw states {e['monitor_states']}, "
        f"engine phases {e['monitor_engine_phases']}, GPUs {e['monitor_gpu_names']} "
        f"(max utilisation {e['monitor_gpu_util_max']}%, max memory {e['monitor_gpu_memory_used_mb_max']} MiB).\n"
    )
    (out / "summary.md").write_text(summary)
    print(summary)
    ok = e["exit_status"] == 0 and e["records"] == args.prompts and not h["errors"]
    if args.device == "cuda":
        ok = ok and bool(e["monitor_gpu_names"]) and "stalled" not in e["monitor_states"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
