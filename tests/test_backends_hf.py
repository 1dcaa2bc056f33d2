"""The hf backend with a real (tiny, randomly initialised) Gemma 3 and Gemma's real tokenizer."""

import json
import re
import sys

import pytest

from llmeval.backends import Request, Sampling
from llmeval.generate import Settings, generate
from llmeval.models import resolve_model

pytest.importorskip("transformers")


def hf_backend(folder, **engine):
    from llmeval.backends.hf import HFBackend

    return HFBackend(
        resolve_model(str(folder)),
        {"device": "cpu", "dtype": "float32", "batch_size": 8, **engine},
        lambda m: None,
    )


def argmax_decode(folder, ids, steps):
    """Greedy decoding by hand: argmax of the logits, nothing else."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(torch.tensor([seq])).logits[0, -1]
            seq.append(int(logits.argmax()))
    return seq[len(ids) :]


def test_generation_config_does_not_leak_but_its_eos_ids_count(chat_model_dir, tmp_path):
    """The tiny model's generation_config asks for sampling, top_k 64 and repetition_penalty 2.0:
    none of it may apply. Its eos_token_id list must."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    prompt = "def add(a, b):"
    ids = tok(prompt)["input_ids"]
    expected = argmax_decode(chat_model_dir, ids, 12)
    # The check means something only if a repetition penalty would have changed the output.
    assert len(set(expected)) < len(expected)
    eos = [t for t in expected if t in (1, 106)]
    assert not eos, "pick another prompt: the random model ends early"

    be = hf_backend(chat_model_dir)
    req = Request(prompt, None, [0], [None], Sampling(0.0, 1.0, 12, ()))
    (c,) = be.generate([req])
    assert c.completion_tokens == 12 and c.finish_reason == "length"
    assert c.text == tok.decode(expected, skip_special_tokens=True)
    assert be.facts["eos_token_ids"] == [1, 106]

    # A model whose end-of-turn token is the 4th token it would write: it stops there.
    other = tmp_path / "eot"
    other.mkdir()
    for f in chat_model_dir.iterdir():
        if f.name != "generation_config.json":
            (other / f.name).symlink_to(f)
    stop_at = next(i for i, t in enumerate(expected) if t not in expected[:i])
    stop_at = max(stop_at, 3)
    while expected[stop_at] in expected[:stop_at]:
        stop_at += 1
    (other / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [1, expected[stop_at]], "repetition_penalty": 1.3})
    )
    be2 = hf_backend(other)
    (c2,) = be2.generate([Request(prompt, None, [0], [None], Sampling(0.0, 1.0, 12, ()))])
    assert c2.finish_reason == "stop" and c2.completion_tokens == stop_at + 1
    # The end token is decoded like any other, special tokens skipped: as vLLM keeps stop
    # token ids in the text "unless the stop tokens are special tokens" (SamplingParams).
    assert c2.text == tok.decode(expected[: stop_at + 1], skip_special_tokens=True)


def test_hf_and_vllm_feed_the_model_the_same_ids(chat_model_dir, vllm_standin, monkeypatch):
    """The same records through both backends: identical prompt token ids, one BOS."""
    records = [
        {"id": "chat/0", "prompt": "Add two numbers.", "stop": [],
         "messages": [{"role": "user", "content": "Add two numbers."}]},
        {"id": "text/0", "prompt": "def add(a, b):", "stop": ["\ndef"]},
        {"id": "bos/0", "prompt": "<bos>The capital of France is", "stop": []},
    ]
    numbered = [(f"t:{i}", r) for i, r in enumerate(records)]
    settings = Settings(0.0, 1.0, 4, 1, 1, 64)

    be = hf_backend(chat_model_dir, batch_size=1)
    be._load()
    fed = []
    real = be._model.generate

    def spy(*, input_ids, attention_mask, **kw):
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            fed.append([t for t, m in zip(row, mask) if m])
        return real(input_ids=input_ids, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(be._model, "generate", spy)
    hf_out = {r["id"]: r for r in generate(numbered, be, settings, run_id="r", preset_name="cpu")}
    assert not any(r["error"] for r in hf_out.values())

    from llmeval.backends.vllm import VLLMBackend

    vb = VLLMBackend(resolve_model(str(chat_model_dir)), {"max_model_len": 1024}, lambda m: None)
    v_out = {r["id"]: r for r in generate(numbered, vb, settings, run_id="r", preset_name="h100")}
    engine = vllm_standin.LLM.instances[0].llm_engine
    vllm_ids = {p["prompt_token_ids"][0:3].__repr__(): p["prompt_token_ids"] for _, p, _ in engine.added}
    assert sorted(map(tuple, fed)) == sorted(map(tuple, vllm_ids.values()))
    by_len = sorted(fed, key=len)
    chat_ids = next(x for x in fed if x[1] == 105)  # <start_of_turn>
    assert chat_ids[:3] == [2, 105, 2364]  # <bos><start_of_turn>user: one BOS
    assert all(x[0] == 2 and x[1] != 2 for x in by_len)  # never two BOS, text prompts included
    assert hf_out["chat/0"]["usage"]["prompt_tokens"] == v_out["chat/0"]["usage"]["prompt_tokens"]


def test_transformers_lower_bound_matches_the_code():
    from pathlib import Path

    from llmeval.backends import hf

    text = (Path(hf.__file__).resolve().parent.parent.parent / "pyproject.toml").read_text()
    (bound,) = re.findall(r'"transformers>=([\d.]+)"', text)
    assert tuple(int(x) for x in bound.split(".")) == hf.MIN_TRANSFORMERS


def test_old_transformers_is_one_line(chat_model_dir, monkeypatch):
    import transformers

    from llmeval.cli import StageError

    monkeypatch.setattr(transformers, "__version__", "4.45.2")
    with pytest.raises(StageError, match=r"the hf backend needs transformers >= 4.56, found 4.45.2"):
        hf_backend(chat_model_dir)._load()


def test_sampled_rows_do_not_depend_on_their_batch(chat_model_dir):
    """Seeded per row: a sample's text is the same alone or in a batch of other prompts."""
    be = hf_backend(chat_model_dir)
    s = Sampling(0.9, 0.95, 8, ())
    alone = list(be.generate([Request("def f(x):", None, [0, 1], [11, 12], s)]))
    batch = list(
        be.generate(
            [
                Request("import os", None, [0], [5], s),
                Request("def f(x):", None, [0, 1], [11, 12], s),
                Request("The end of the story", None, [0], [7], s),
            ]
        )
    )
    mine = sorted((c.sample, c.text) for c in batch if c.request.prompt == "def f(x):")
    assert mine == sorted((c.sample, c.text) for c in alone)
    assert mine[0][1] != mine[1][1]  # two seeds, two draws


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
