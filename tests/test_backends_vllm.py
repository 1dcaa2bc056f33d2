"""The vllm backend against the vLLM test double (tests/stubs/vllm), which rejects what vLLM rejects."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import BIN, REPO, STUBS, run_cmd

from llmeval.generate import Settings, Tally, generate, main
from llmeval.models import resolve_model


def numbered(records):
    return [(f"test:{i + 1}", r) for i, r in enumerate(records)]


def model_folder(tmp_path: Path, max_len: int = 4096) -> Path:
    """A model folder without tokenizer files: the double uses its word tokenizer."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": max_len}))
    return folder


def prompts_file(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def backend(folder: Path, engine: dict | None = None):
    from llmeval.backends.vllm import VLLMBackend
    from llmeval.presets import load_preset

    return VLLMBackend(
        resolve_model(str(folder)), {**load_preset("h100")["engine"], **(engine or {})}, lambda m: None
    )


RECS = [{"id": f"d/{i}", "prompt": f"prompt number {i}", "stop": ["\n\n"]} for i in range(5)]


def test_engine_settings_reach_llm(vllm_standin, tmp_path):
    folder = model_folder(tmp_path)
    src = prompts_file(tmp_path, RECS[:2])
    rc = main(
        [str(src), "--model", str(folder), "--preset", "h100", "--max-tokens", "16", "--no-cache", "-o", str(tmp_path / "o.jsonl"),
         "--engine", "tensor_parallel_size=2", "--engine", "enforce_eager=true",
         "--engine", "vllm.max_lora_rank=32", "--engine", "max_model_len=1024",
         "--engine", 'hf_overrides={"rope_theta": 1e6}']
    )
    assert rc == 0
    (llm,) = vllm_standin.LLM.instances
    args = llm.engine_args
    assert args.tensor_parallel_size == 2 and args.enforce_eager is True and args.max_lora_rank == 32
    assert args.max_model_len == 1024 and args.hf_overrides == {"rope_theta": 1e6}
    # The preset's own vLLM settings, and stats on for the heartbeat's figures.
    assert args.gpu_memory_utilization == 0.92 and args.max_num_seqs == 512
    assert args.max_num_batched_tokens == 16384 and args.enable_prefix_caching is True
    assert args.dtype == "bfloat16" and args.disable_log_stats is False
    run = read(tmp_path / "o.jsonl.runs.jsonl")[0]
    assert run["backend"]["engine"]["vllm"] == {
        "enforce_eager": True, "max_lora_rank": 32, "hf_overrides": {"rope_theta": 1e6}
    }


def test_bad_engine_option_is_one_line(vllm_standin, tmp_path):
    folder = model_folder(tmp_path)
    out = run_cmd(
        ["eval-generate", "--model", str(folder), "--backend", "vllm", "--engine", "max_num_seq=4"],
        input=b"",
        env={"PYTHONPATH": f"{STUBS}:{REPO}"},
    )
    assert out.returncode == 1
    (line,) = out.stderr.decode().splitlines()
    assert line.startswith("eval-generate: error: --engine: unknown key max_num_seq (known for vllm:")
    out = run_cmd(
        ["eval-generate", "--model", str(folder), "--backend", "vllm", "--engine", "enforce_eager=yes please"],
        input=b"",
    )
    assert out.returncode == 1
    assert out.stderr.decode().strip() == (
        "eval-generate: error: --engine: key engine.vllm.enforce_eager: expected bool, got str 'yes please'"
    )
    # A field of the installed vLLM's EngineArgs that llmeval's table does not list is accepted.
    from llmeval.backends.options import apply_flags
    from llmeval.presets import load_preset

    p = apply_flags(load_preset("h100"), ["max_parallel_loading_workers=2"], "vllm")
    assert p["engine"]["vllm"] == {"max_parallel_loading_workers": 2}


def test_greedy_n3_is_one_request_per_prompt_and_three_samples(vllm_standin, tmp_path):
    folder = model_folder(tmp_path)
    src = prompts_file(tmp_path, RECS)
    out = tmp_path / "gen.jsonl"
    rc = main([str(src), "--model", str(folder), "--backend", "vllm", "-n", "3", "--temperature", "0",
               "--max-tokens", "16", "--no-cache", "-o", str(out)])
    assert rc == 0
    recs = read(out)
    assert sorted((r["id"], r["sample"]) for r in recs) == [(f"d/{i}", s) for i in range(5) for s in range(3)]
    assert not any(r["error"] for r in recs)
    for i in range(5):
        texts = {r["completion"] for r in recs if r["id"] == f"d/{i}"}
        assert len(texts) == 1 and texts != {""}
        assert len({r["key"] for r in recs if r["id"] == f"d/{i}"}) == 3
    (llm,) = vllm_standin.LLM.instances
    added = llm.llm_engine.added
    assert len(added) == 5  # one engine request per prompt, not per sample
    assert all(p.n == 1 and p.temperature == 0 and p.seed is None for _, _, p in added)


def test_sampled_samples_are_one_request_each_with_their_own_seed(vllm_standin, tmp_path):
    be = backend(model_folder(tmp_path), {"max_model_len": 200})
    recs = [*RECS, {"id": "d/long", "prompt": "word " * 500, "stop": []}]
    out = list(generate(numbered(recs), be, Settings(0.8, 0.95, 16, 3, 11, 4096), run_id="r", preset_name="h100"))
    (llm,) = vllm_standin.LLM.instances
    added = llm.llm_engine.added
    assert len(added) == 15  # 5 prompts x 3 samples; the long prompt never reached the engine
    assert all(p.n == 1 and p.temperature == 0.8 and p.top_p == 0.95 and p.max_tokens == 16 for _, _, p in added)
    assert all(p.stop == ["\n\n"] for _, _, p in added)
    assert len({p.seed for _, _, p in added}) == 15
    assert all(set(prompt) == {"prompt_token_ids"} for _, prompt, _ in added)  # TokensPrompt only
    good = [r for r in out if not r["error"]]
    assert len(good) == 15 and {r["sample"] for r in good} == {0, 1, 2}
    assert all(r["usage"]["prompt_tokens"] == 4 for r in good)  # BOS + 3 words
    assert all(r["finish_reason"] in ("stop", "length") for r in good)
    bad = [r for r in out if r["error"]]
    assert len(bad) == 3 and all(
        r["id"] == "d/long" and r["error"].startswith("prompt too long: 501 prompt tokens") for r in bad
    )


def test_raising_n_with_the_cache_keeps_every_sample(vllm_standin, tmp_path):
    """-n 2 then -n 4 with the cache gives the samples 2-3 a cold -n 4 gives: a sample is its key."""
    folder = model_folder(tmp_path)
    src = prompts_file(tmp_path, RECS)
    common = [str(src), "--model", str(folder), "--backend", "vllm", "--temperature", "0.8", "--max-tokens", "12"]
    assert main([*common, "-n", "4", "--no-cache", "-o", str(tmp_path / "cold.jsonl")]) == 0
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "-n", "2", *cache, "-o", str(tmp_path / "warm2.jsonl")]) == 0
    assert main([*common, "-n", "4", *cache, "-o", str(tmp_path / "warm4.jsonl")]) == 0
    cold = {(r["id"], r["sample"]): r["completion"] for r in read(tmp_path / "cold.jsonl")}
    warm = read(tmp_path / "warm4.jsonl")
    assert sum(r["cached"] for r in warm) == 10  # samples 0-1 came from the cache
    assert {(r["id"], r["sample"]): r["completion"] for r in warm} == cold
    assert len(set(cold.values())) == 20  # and the draws differ from one another


def test_chat_prompt_has_one_bos(vllm_standin, tmp_path):
    """The template writes <bos>; the ids vLLM gets start with exactly one BOS."""
    folder = model_folder(tmp_path)
    recs = [{"id": "c/0", "prompt": "hi", "messages": [{"role": "user", "content": "hello there"}], "stop": []}]
    src = prompts_file(tmp_path, recs)
    assert main([str(src), "--model", str(folder), "--backend", "vllm", "--no-cache", "-o", str(tmp_path / "o.jsonl")]) == 0
    (llm,) = vllm_standin.LLM.instances
    ((_, prompt, _),) = llm.llm_engine.added
    tok = llm.get_tokenizer()
    assert prompt["prompt_token_ids"] == tok.encode("<bos> <user> hello there <assistant>", add_special_tokens=False)
    assert prompt["prompt_token_ids"][:2] != [tok.bos_token_id] * 2
    # What LLM.chat would have sent is the same.
    chat = llm.chat(recs[0]["messages"], vllm_standin.SamplingParams(temperature=0, max_tokens=4))
    assert chat[0].prompt_token_ids == prompt["prompt_token_ids"]


def test_system_prompt_reaches_the_template_and_the_key(vllm_standin, tmp_path):
    folder = model_folder(tmp_path)
    recs = [{"id": "c/0", "prompt": "hi", "messages": [{"role": "user", "content": "hello"}], "stop": []}]
    src = prompts_file(tmp_path, recs)
    base = [str(src), "--model", str(folder), "--backend", "vllm", "--no-cache"]
    assert main([*base, "-o", str(tmp_path / "a.jsonl")]) == 0
    assert main([*base, "--system-prompt", "Be brief.", "-o", str(tmp_path / "b.jsonl")]) == 0
    (a,), (b,) = read(tmp_path / "a.jsonl"), read(tmp_path / "b.jsonl")
    assert a["key"] != b["key"] and b["system_prompt"] == "Be brief." and "system_prompt" not in a
    assert b["messages"] == recs[0]["messages"]  # the input field is not rewritten
    _, llm = vllm_standin.LLM.instances
    ((_, prompt, _),) = llm.llm_engine.added
    tok = llm.get_tokenizer()
    assert tok.decode(prompt["prompt_token_ids"]) == "<system> Be brief. <user> hello <assistant>"


def test_records_are_written_while_the_engine_works(vllm_standin, tmp_path):
    """Every pending request is in the engine at once; results come out as requests finish."""
    be = backend(model_folder(tmp_path), {"max_num_seqs": 8})
    recs = [{"id": f"d/{i}", "prompt": f"prompt {i} " * (1 + i % 5), "stop": []} for i in range(40)]
    ticks = []
    tally = Tally()

    def progress(t):
        ticks.append(dict(t.engine))

    seen = []
    for _rec in generate(numbered(recs), be, Settings(0.7, 1.0, 30, 2, 1, 4096), run_id="r",
                        preset_name="h100", tally=tally, on_progress=progress):
        seen.append(be._engine.get_num_unfinished_requests())
    assert len(seen) == 80
    engine = vllm_standin.LLM.instances[0].llm_engine
    assert engine.max_unfinished == 80  # all pending requests were in the engine together
    assert seen[0] > 40  # the first record came out with most of the work still running
    assert engine.steps > 30
    be.TICK_S = 0  # (ticks are rate-limited to one a second; the run above may be faster)
    stats = be._stats({"x": None}, "generating")
    assert stats["phase"] == "generating" and stats["unfinished"] == 0
    assert {"running", "waiting", "kv_cache_usage"} <= set(stats)
    assert stats["prefix_cache_hit_rate"] > 0  # two samples of each prompt share it


def test_heartbeat_carries_engine_figures_and_run_is_never_stalled(vllm_standin, tmp_path):
    """A slow engine: heartbeats keep coming between finished requests; eval-monitor says running."""
    folder = model_folder(tmp_path)
    src = prompts_file(tmp_path, [{"id": f"d/{i}", "prompt": f"p {i}", "stop": []} for i in range(6)])
    out = tmp_path / "gen.jsonl"
    slow = tmp_path / "slow"
    slow.mkdir()
    # A sitecustomize that slows the double's step() down: 0.25 s per step.
    (slow / "sitecustomize.py").write_text(
        "import time\n"
        "import vllm.engine.llm_engine as e\n"
        "_step = e.LLMEngine.step\n"
        "def step(self):\n"
        "    time.sleep(0.25)\n"
        "    return _step(self)\n"
        "e.LLMEngine.step = step\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{slow}:{STUBS}:{REPO}",
        "LLMEVAL_HEARTBEAT_S": "0.5",
    }
    proc = subprocess.Popen(
        [sys.executable, str(BIN / "eval-generate"), str(src), "--model", str(folder), "--backend", "vllm",
         "--max-tokens", "40", "--temperature", "0.5", "--no-cache", "-o", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    metrics = Path(str(out) + ".metrics.json")
    snaps = []
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        time.sleep(1.0)
        if metrics.exists():
            snap = run_cmd(["eval-monitor", str(tmp_path), "--once", "--json", "--stall", "5"])
            snaps.append(orjson.loads(snap.stdout))
    proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read().decode()
    running = [s["runs"][0] for s in snaps if s["runs"] and s["runs"][0]["state"] != "finished"]
    assert running, "the run finished before eval-monitor looked at it"
    assert all(r["state"] == "running" for r in running), [r["reason"] for r in running]
    assert any((r.get("engine") or {}).get("phase") == "generating" for r in running)
    assert any("kv_cache_usage" in (r.get("engine") or {}) for r in running)


def test_a_failing_request_is_isolated(vllm_standin, tmp_path):
    be = backend(model_folder(tmp_path))
    vllm_standin.LLM.fail_on = "poison"
    recs = [{"id": "a", "prompt": "fine one"}, {"id": "b", "prompt": "poison pill"}, {"id": "c", "prompt": "fine two"}]
    out = {r["id"]: r for r in generate(numbered(recs), be, Settings(0.0, 1.0, 16, 1, 7, 64), run_id="r", preset_name="base")}
    assert out["b"]["error"] == "vLLM generate failed: RuntimeError: stand-in engine failure"
    assert out["a"]["completion"] and out["c"]["completion"] and not out["a"]["error"] and not out["c"]["error"]
    assert not be._engine.has_unfinished_requests()



def test_a_failing_request_costs_a_few_batched_rounds_not_one_by_one(vllm_standin, tmp_path, monkeypatch):
    """After a failed step the requests go back in together and the set is halved on each
    failure: the healthy ones still run batched (vLLM's throughput), the bad one ends alone."""
    be = backend(model_folder(tmp_path))
    vllm_standin.LLM.fail_on = "poison"
    recs = [{"id": str(i), "prompt": f"fine prompt {i}"} for i in range(15)]
    recs.insert(5, {"id": "bad", "prompt": "poison pill"})
    from vllm.engine.llm_engine import LLMEngine

    together, real_step = [], LLMEngine.step

    def step(engine):
        together.append(engine.get_num_unfinished_requests())
        return real_step(engine)

    monkeypatch.setattr(LLMEngine, "step", step)
    out = {r["id"]: r for r in generate(numbered(recs), be, Settings(0.0, 1.0, 16, 1, 7, 64), run_id="r", preset_name="base")}
    assert out["bad"]["error"] == "vLLM generate failed: RuntimeError: stand-in engine failure"
    assert all(out[str(i)]["completion"] and out[str(i)]["error"] is None for i in range(15))
    assert together[0] == 16 and together[1] == 16  # the first step failed; all went back in
    assert max(together[2:]) >= 8  # then a half of them, batched, never one by one
    assert not be._engine.has_unfinished_requests()


def test_a_dead_engine_stops_the_run_with_one_line(vllm_standin, tmp_path):
    folder = model_folder(tmp_path)
    src = prompts_file(tmp_path, [{"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "fatal input"}])
    env = {"PYTHONPATH": f"{tmp_path}:{STUBS}:{REPO}"}
    (tmp_path / "sitecustomize.py").write_text(
        "from vllm.entrypoints.llm import LLM\nLLM.dead_on = 'fatal'\n"
    )
    out = run_cmd(["eval-generate", str(src), "--model", str(folder), "--backend", "vllm", "--no-cache",
                   "-o", str(tmp_path / "o.jsonl")], env=env)
    assert out.returncode == 1
    assert out.stderr.decode().splitlines()[-1] == (
        "eval-generate: error: the vLLM engine died (EngineCore encountered an issue. See stack trace "
        "(above) for the root cause.); run the same command again to resume"
    )


def test_without_the_engine_api_one_generate_call_and_leftovers_are_not_ours(vllm_standin, tmp_path, monkeypatch):
    """An LLM whose engine cannot be stepped: LLM.generate per chunk; a failed call's leftovers ignored."""
    from vllm.entrypoints.llm import LLM

    class Opaque:  # an engine object with nothing to drive step by step
        def __init__(self, engine):
            self.model_config = engine.model_config
            self.get_tokenizer = engine.get_tokenizer

    real_init = LLM.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self._engine = self.llm_engine
        self.llm_engine = Opaque(self._engine)

    def generate(self, prompts, sampling_params=None, **kw):
        self.llm_engine, opaque = self._engine, self.llm_engine
        try:
            return LLM.generate.__wrapped__(self, prompts, sampling_params, **kw)
        finally:
            self.llm_engine = opaque

    generate.__wrapped__ = LLM.generate
    monkeypatch.setattr(LLM, "__init__", init)
    monkeypatch.setattr(LLM, "generate", generate)
    LLM.leftovers = True  # vLLM <= 0.9: a failed generate() leaves its added requests behind
    be = backend(model_folder(tmp_path, max_len=64), {"max_model_len": 0})
    # "too long" passes llmeval's own check only because it is made of ids the double counts alike;
    # a request the engine refuses at add time (out of vocabulary) fails the batched call midway.
    recs = [{"id": "a", "prompt": "fine one"}, {"id": "b", "prompt": "fine two"}, {"id": "c", "prompt": "fine three"}]
    real_add = vllm_standin.engine.llm_engine.LLMEngine.add_request

    def add(self, rid, prompt, params, **kw):
        if prompt["prompt_token_ids"][-1] == self.tokenizer.encode("two", add_special_tokens=False)[0]:
            raise ValueError("Token id 999999 is out of vocabulary")
        return real_add(self, rid, prompt, params, **kw)

    monkeypatch.setattr(vllm_standin.engine.llm_engine.LLMEngine, "add_request", add)
    out = {r["id"]: r for r in generate_all(be, recs)}
    assert be.facts["stepwise"] is False
    assert out["b"]["error"] == "vLLM generate failed: ValueError: Token id 999999 is out of vocabulary"
    assert out["a"]["completion"] and out["c"]["completion"]
    assert not out["a"]["error"] and not out["c"]["error"]
    llm = vllm_standin.LLM.instances[0]
    assert llm.generate_calls == 4  # the batch, then a, b, c one at a time


def generate_all(be, recs):
    return list(generate(numbered(recs), be, Settings(0.0, 1.0, 8, 1, 7, 64), run_id="r", preset_name="base"))


def test_stdout_carries_only_jsonl(vllm_standin, tmp_path):
    """vLLM logs to stdout and its workers inherit descriptor 1: none of it may reach the JSONL."""
    folder = model_folder(tmp_path)
    src = prompts_file(tmp_path, RECS[:3])
    # An option outside llmeval's table makes eval-generate import vllm early, to check it.
    out = run_cmd(["eval-generate", str(src), "--model", str(folder), "--backend", "vllm", "--no-cache",
                   "--engine", "max_parallel_loading_workers=2"],
                  env={"PYTHONPATH": f"{STUBS}:{REPO}"})
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and all(orjson.loads(x)["backend"] == "vllm" for x in lines)
    err = out.stderr.decode()
    assert "Initializing a V1 LLM engine" in err and "(EngineCore_0 pid=0) INFO worker started" in err


def test_wrong_engine_arg_fails_like_vllm(vllm_standin):
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_num_seq'"):
        vllm_standin.LLM("org/model", max_num_seq=4)
    with pytest.raises(ValueError, match="top_p must be in"):
        vllm_standin.SamplingParams(top_p=0.0)


def test_settings_the_engine_refuses_are_one_line(vllm_standin, tmp_path):
    folder = model_folder(tmp_path)
    src = prompts_file(tmp_path, RECS[:1])
    env = {"PYTHONPATH": f"{STUBS}:{REPO}"}
    for flag, message in (
        ("quantization=nonsense", "ValueError: Unknown quantization method: nonsense."),
        ("tensor_parallel_size=16", "ValueError: The number of required GPUs exceeds"),
    ):
        out = run_cmd(["eval-generate", str(src), "--model", str(folder), "--backend", "vllm",
                       "--no-cache", "--engine", flag], env=env)
        assert out.returncode == 1 and out.stdout == b""
        last = out.stderr.decode().splitlines()[-1]
        assert last.startswith(f"eval-generate: error: vLLM could not load '{folder}': {message}")


def test_an_engine_option_that_would_break_llmeval_is_refused(vllm_standin, tmp_path):
    """skip_tokenizer_init is an EngineArgs field, but llmeval encodes every prompt with the
    engine's tokenizer: refused in one line, before any load."""
    out = run_cmd(
        ["eval-generate", "--model", str(model_folder(tmp_path)), "--backend", "vllm",
         "--engine", "skip_tokenizer_init=true"],
        input=b"",
        env={"PYTHONPATH": f"{STUBS}:{REPO}"},
    )  # fmt: skip
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode().splitlines() == [
        "eval-generate: error: --engine: key engine.vllm.skip_tokenizer_init is not supported: "
        "llmeval encodes prompts with the model's tokenizer (chat templates, TokensPrompt) and "
        "reads it from the engine"
    ]


# ---------------------------------------------------------------------------- log-likelihood


def _loglik(be, recs):
    from llmeval.loglikelihood import loglikelihood

    return list(loglikelihood(numbered(recs), be, fields=lambda r: {}, messages_of=lambda r: None))


MC_RECS = [
    {"id": "a", "prompt": "Question: 2+2?\nAnswer: ", "reference": {"label": "B", "continuations": ["three", "four or so"]}},
    {"id": "b", "prompt": "Is it? Answer:", "reference": {"label": "A", "continuations": [" yes", " no", " maybe"]}},
]


def test_loglikelihood_sums_the_continuations_prompt_logprobs(vllm_standin, chat_model_dir):
    be = backend(chat_model_dir)
    out = _loglik(be, MC_RECS)
    (llm,) = vllm_standin.LLM.instances
    engine = llm.llm_engine
    tok = engine.tokenizer
    for rec, got in zip(MC_RECS, out):
        assert got["error"] is None
        ctx = tok.encode(rec["prompt"].rstrip())
        want, lengths = [], []
        for c in rec["reference"]["continuations"]:
            whole = tok.encode(rec["prompt"] + c)
            want.append(sum(engine.token_logprob(whole[:i], whole[i]) for i in range(len(ctx), len(whole))))
            lengths.append(len(whole) - len(ctx))
        assert got["choice_logprobs"] == pytest.approx(want, abs=1e-9)
        assert got["choice_tokens"] == lengths
    assert out[0]["choice_tokens"][1] >= 2  # a continuation of several tokens
    # One TokensPrompt per choice, asking for what lm-eval asks: one alternative per position.
    assert len(engine.added) == 5
    for _, prompt, params in engine.added:
        assert set(prompt) == {"prompt_token_ids"}
        assert (params.prompt_logprobs, params.max_tokens, params.temperature) == (1, 1, 0.0)


def test_the_double_returns_vllms_prompt_logprobs_shape(vllm_standin, chat_model_dir):
    llm = vllm_standin.LLM(model=str(chat_model_dir))
    ids = llm.get_tokenizer().encode("one two three")
    (out,) = llm.generate([{"prompt_token_ids": ids}], vllm_standin.SamplingParams(max_tokens=1, prompt_logprobs=0))
    entries = out.prompt_logprobs
    assert len(entries) == len(ids) and entries[0] is None
    assert all(list(e) == [t] for e, t in zip(entries[1:], ids[1:]))  # 0: the prompt token only
    assert all(e[t].rank >= 1 for e, t in zip(entries[1:], ids[1:]))
    (out,) = llm.generate([{"prompt_token_ids": ids}], vllm_standin.SamplingParams(max_tokens=1, prompt_logprobs=3))
    assert all(3 <= len(e) <= 4 for e in out.prompt_logprobs[1:])
    with pytest.raises(ValueError, match="greater than max allowed: 20"):
        llm.generate([{"prompt_token_ids": ids}], vllm_standin.SamplingParams(max_tokens=1, prompt_logprobs=21))
    with pytest.raises(ValueError, match="prompt_logprobs must be non-negative"):
        vllm_standin.SamplingParams(prompt_logprobs=-2)


def test_prompt_logprobs_over_the_engine_limit_are_error_records(vllm_standin, chat_model_dir, monkeypatch):
    from llmeval.backends.vllm import VLLMBackend

    monkeypatch.setattr(VLLMBackend, "PROMPT_LOGPROBS", 21)
    out = _loglik(backend(chat_model_dir), MC_RECS)
    assert [r["error"] for r in out] == [
        "vLLM log-likelihood failed: ValueError: Requested prompt logprobs of 21, which is "
        "greater than max allowed: 20"
    ] * 2
    assert all(r["choice_logprobs"] is None for r in out)
