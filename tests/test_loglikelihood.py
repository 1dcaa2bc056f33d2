"""Multiple choice by log-likelihood (llmeval/loglikelihood.py) on the embedded model, and the
done-when pipeline: resolve | generate --loglikelihood | score | aggregate."""

import os
import subprocess
import sys

import orjson
import pytest
from conftest import BIN, FIXTURES, REPO, require_in_ci, run_cmd

from llmeval.backends import LoglikRequest, continuation_token_ids
from llmeval.loglikelihood import loglikelihood, pick, request_key
from llmeval.models import ModelRef

MODEL = ModelRef("m", "local", "/m", "local:1", "tok", None)


def numbered(records):
    return [(f"test:{i + 1}", r) for i, r in enumerate(records)]


def resolved(fewshot: int, limit: int) -> list[dict]:
    out = run_cmd(
        ["eval-resolve", "mmlu", "--data-dir", str(FIXTURES), "--num-fewshot", str(fewshot),
         "--limit", str(limit)]
    )
    assert out.returncode == 0, out.stderr
    return [orjson.loads(line) for line in out.stdout.splitlines()]


# ---------------------------------------------------------------------------- no model


def test_pick_takes_the_first_maximum_and_normalises_by_bytes():
    assert pick([-1.0, -0.5, -0.5], [1, 1, 1]) == (1, 1)  # a tie goes to the first, as argmax
    # " B" is likelier, but " A longer one" is likelier per byte: acc and acc_norm differ.
    assert pick([-6.0, -2.0], [12, 2]) == (1, 0)
    assert pick([-3.0, -3.0], [6, 3]) == (0, 0)  # per byte: -0.5 vs -1.0


def test_the_key_says_log_likelihood_and_names_the_continuations():
    rec = {"prompt": "Q?\nAnswer:"}
    a = request_key(MODEL, rec, None, [" A", " B"])
    assert a != request_key(MODEL, rec, None, [" A", " C"])
    assert a != request_key(MODEL, {"prompt": "Q? \nAnswer:"}, None, [" A", " B"])
    from llmeval.generate import Settings, sample_key

    # Never the key of a generation of the same prompt, whatever its settings.
    assert a != sample_key(MODEL, rec, Settings(0.0, 1.0, 1, 1, 0, 8), [], 0)


class WordTok:
    """A tokenizer whose words merge: enough to see lm-eval's split (no model needed)."""

    bos_token, chat_template = "<s>", None

    def encode(self, text, add_special_tokens=True):
        ids = [{"<s>": 1}.get(w, 100 + sum(map(ord, w))) for w in text.replace(" ", " _").split(" ")]
        return ([1] if add_special_tokens else []) + [i for i in ids if i != 100]


def test_trailing_space_moves_to_the_continuation():
    req = LoglikRequest("Answer: ", None, ["B"])
    ctx, (cont,) = continuation_token_ids(WordTok(), req)
    tok = WordTok()
    assert ctx == tok.encode("Answer:")  # the space left the context...
    assert cont == tok.encode("Answer: B")[len(ctx):]  # ...and scores with the continuation
    # A prompt that already starts with the BOS text gets no second BOS.
    ctx2, _ = continuation_token_ids(tok, LoglikRequest("<s> Answer:", None, [" B"]))
    assert ctx2.count(1) == 1


class FakeBackend:
    """Answers from the request alone; counts what it was asked."""

    name = "fake"

    def __init__(self):
        self.model = MODEL
        self.asked = 0

    def loglikelihood(self, requests):
        for req in requests:
            self.asked += 1
            n = len(req.continuations)
            from llmeval.backends import LoglikResult

            yield LoglikResult(req, [-float(i + 1) for i in range(n)], [1] * n, [i == 0 for i in range(n)], 3)


def test_records_without_continuations_are_errors_and_the_run_goes_on(tmp_path):
    from llmeval.cache import GenerationCache

    recs = [
        {"id": "a", "prompt": "p1", "reference": {"label": "A", "continuations": [" A", " B"]}},
        {"id": "b", "prompt": "code", "reference": {"entry_point": "f", "test": "t"}},
        {"id": "c", "prompt": "p2", "reference": {"label": "B", "continuations": [" yes", " no"]}},
    ]
    be = FakeBackend()
    cache = GenerationCache(tmp_path / "c")
    run = lambda: list(  # noqa: E731
        loglikelihood(numbered(recs), be, fields=lambda r: {"model": "m"}, messages_of=lambda r: None, cache=cache)
    )
    out = run()
    assert [r["id"] for r in out] == ["a", "b", "c"]  # input order
    assert out[1]["error"].startswith('no "reference.continuations" to score')
    assert out[1]["choice_logprobs"] is None and out[1]["finish_reason"] == "error"
    assert out[0]["choice_logprobs"] == [-1.0, -2.0] and out[0]["choice_bytes"] == [2, 2]
    assert out[2]["choice_bytes"] == [4, 3] and out[2]["choice_greedy"] == [True, False]
    assert out[0]["finish_reason"] == "loglikelihood" and out[0]["completion"] is None
    assert be.asked == 2
    again = run()
    assert be.asked == 2  # all from the cache
    assert [r["cached"] for r in again] == [True, False, True]
    assert [r["choice_logprobs"] for r in again] == [r["choice_logprobs"] for r in out]


def test_a_backend_that_cannot_is_one_line(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_bytes(
        orjson.dumps({"id": "a", "prompt": "p", "reference": {"continuations": [" A"]}}) + b"\n"
    )
    out = run_cmd(["eval-generate", str(src), "--backend", "reference", "--model", "x", "--loglikelihood"])
    assert out.returncode == 1
    assert out.stderr.decode().strip().splitlines()[-1] == (
        "eval-generate: error: the reference backend cannot score log-likelihoods "
        "(--loglikelihood): use --backend hf, vllm or openai"
    )
    assert out.stdout == b""


# ---------------------------------------------------------------------------- the embedded model


@pytest.fixture(scope="module")
def gemma(models_dir):
    """The hf backend on gemma3-270m, and a separately loaded plain transformers model."""
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmeval.backends.hf import HFBackend
    from llmeval.models import materialize, resolve_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMEVAL_MODELS", str(models_dir))
        ref = resolve_model("gemma3-270m")
        path = materialize(ref)
        engine = {"backend": "hf", "device": "cpu", "dtype": "float32", "batch_size": 8}
        be = HFBackend(ref, engine, lambda m: None)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        yield ref, be, tok, model, engine


def plain_loglikelihood(tok, model, prompt: str, continuation: str) -> float:
    """One unbatched, unpadded forward over context + continuation, as lm-eval splits them."""
    import torch

    ctx_text = prompt.rstrip()
    cont_text = prompt[len(ctx_text):] + continuation
    ctx = tok.encode(ctx_text)
    cont = tok.encode(ctx_text + cont_text)[len(ctx):]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = model(ids).logits[0, len(ctx) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum())


def test_hf_equals_a_plain_forward_pass_batched_or_not_and_cached(gemma, tmp_path):
    from llmeval.backends.hf import HFBackend
    from llmeval.cache import GenerationCache

    ref, be, tok, model, engine = gemma
    recs = resolved(1, 2) + resolved(3, 1) + resolved(5, 2)
    # A continuation of several tokens, whose context ends with a space, beside the letters.
    recs.append({"id": "x/1", "prompt": "The sky is ", "reference": {"label": "B", "continuations": ["green grass", "blue", "a"]}})
    fields = lambda r: {}  # noqa: E731
    msgs = lambda r: None  # noqa: E731
    cache = GenerationCache(tmp_path / "cache")
    out8 = list(loglikelihood(numbered(recs), be, fields=fields, messages_of=msgs, cache=cache))
    assert [r["id"] for r in out8] == [r["id"] for r in recs]
    assert not any(r["error"] for r in out8)
    for rec, got in zip(recs, out8):
        want = [plain_loglikelihood(tok, model, rec["prompt"], c) for c in rec["reference"]["continuations"]]
        assert got["choice_logprobs"] == pytest.approx(want, abs=1e-4), rec["id"]
    assert out8[-1]["choice_tokens"][0] >= 2 and out8[0]["choice_tokens"] == [1, 1, 1, 1]

    be.engine["batch_size"] = 1
    try:
        out1 = list(loglikelihood(numbered(recs), be, fields=fields, messages_of=msgs))
    finally:
        be.engine["batch_size"] = 8
    for a, b in zip(out1, out8):
        assert a["choice_logprobs"] == pytest.approx(b["choice_logprobs"], abs=1e-4)
        assert a["choice_greedy"] == b["choice_greedy"]

    cold = HFBackend(ref, engine, lambda m: None)  # never loaded: the cache answers everything
    again = list(loglikelihood(numbered(recs), cold, fields=fields, messages_of=msgs, cache=cache))
    assert cold._model is None
    assert all(r["cached"] for r in again)
    assert [r["choice_logprobs"] for r in again] == [r["choice_logprobs"] for r in out8]


@pytest.mark.slow
def test_done_when_pipeline_prints_acc_and_acc_norm_with_intervals(models_dir, tmp_path):
    pytest.importorskip("transformers")
    env = {**os.environ, "LLMEVAL_MODELS": str(models_dir), "PYTHONPATH": str(REPO)}
    py = sys.executable
    pipeline = (
        f"{py} {BIN}/eval-resolve mmlu --num-fewshot 5 --data-dir {FIXTURES} "
        f"| {py} {BIN}/eval-generate --model gemma3-270m --loglikelihood --cache-dir {tmp_path}/c "
        f"| {py} {BIN}/eval-score | {py} {BIN}/eval-aggregate"
    )
    out = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    metrics = {m["metric"]: m for m in map(orjson.loads, out.stdout.splitlines())}
    n = len(resolved(5, 1000))
    assert n == 15
    for name in ("acc", "acc_norm"):
        m = metrics[name]
        assert m["n_samples"] == n and m["n_tasks"] == n and m["dataset"] == "mmlu"
        assert 0.0 <= m["ci_low"] <= m["value"] <= m["ci_high"] <= 1.0
        assert sum(m["counts"].values()) == n and m["counts"]["error"] == 0
    assert metrics["acc"]["value"] == metrics["accuracy"]["value"]
    # the summary counts the prompt tokens scored (no tokens are generated: no "0.0 tokens/s")
    summary = [x for x in out.stderr.decode().splitlines() if x.startswith("eval-generate: 15 samples")]
    assert len(summary) == 1 and summary[0].endswith(" prompt tokens/s)"), summary


LMEVAL_TASK = """\
task: llmeval_fixture_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.mark.slow
def test_same_predictions_and_logprobs_as_lm_evaluation_harness(gemma, tmp_path):
    """lm-eval's own hf model on a local task whose documents are our prompts (few-shot
    examples included, so both harnesses see the same text): the same log-likelihoods and
    the same acc / acc_norm per question."""
    require_in_ci("lm_eval")
    from llmeval.models import materialize
    from llmeval.score import score

    ref, be, _, _, _ = gemma
    recs = resolved(2, 3) + resolved(4, 2)
    data = tmp_path / "test.jsonl"
    data.write_bytes(
        b"".join(
            orjson.dumps({"id": r["id"], "prompt": r["prompt"], "label": "ABCD".index(r["reference"]["label"])}) + b"\n"
            for r in recs
        )
    )
    (tmp_path / "task.yaml").write_text(LMEVAL_TASK.format(data=data))
    env = {
        **os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    out = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf",
         "--model_args", f"pretrained={materialize(ref)},dtype=float32", "--device", "cpu",
         "--tasks", "llmeval_fixture_mc", "--include_path", str(tmp_path), "--log_samples",
         "--output_path", str(tmp_path / "out"), "--batch_size", "4"],
        capture_output=True, env=env, timeout=900, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    (samples,) = (tmp_path / "out").rglob("samples_llmeval_fixture_mc_*.jsonl")
    theirs = sorted((orjson.loads(line) for line in samples.read_bytes().splitlines()), key=lambda d: d["doc_id"])
    assert len(theirs) == len(recs)
    ours = list(loglikelihood(numbered(recs), be, fields=lambda r: {"completion": None}, messages_of=lambda r: None))
    scored = list(score(numbered(ours), None, run_id="r"))
    for doc, mine in zip(theirs, scored):
        lls = [float(ll) for ll, _ in doc["filtered_resps"]]
        greedy = [g == "True" for _, g in doc["filtered_resps"]]
        assert mine["choice_logprobs"] == pytest.approx(lls, abs=1e-4), mine["id"]
        assert mine["choice_greedy"] == greedy
        assert (mine["score"]["status"] == "pass") == (doc["acc"] == 1.0)
        assert (mine["score"]["status_norm"] == "pass") == (doc["acc_norm"] == 1.0)
