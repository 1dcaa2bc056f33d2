"""The vLLM behaviour llmeval relies on, checked against the test double AND real vLLM.

Every test runs twice: against tests/stubs/vllm (always), and against the
installed vLLM on a GPU (marked ``gpu``; skipped where vLLM is not installed,
as on CPU machines). If real vLLM and the double ever disagree on one of these
rules, the ``gpu`` run says so: the double must then be corrected, since the
backend is tested against it everywhere else.

The model is a randomly initialised two-layer Llama with Gemma 3's real
tokenizer (its BOS is 2): built from a config, no hub, no download.
"""

import importlib
import sys

import pytest
from conftest import STUBS

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, gemma_tokenizer_dir):
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=262144,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    d = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(d)
    for f in gemma_tokenizer_dir.iterdir():
        shutil.copy(f, d / f.name)
    return d


def _load(which: str):
    for mod in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[mod]
    if which == "double":
        sys.path.insert(0, str(STUBS))
        try:
            return importlib.import_module("vllm")
        finally:
            sys.path.remove(str(STUBS))
    return pytest.importorskip("vllm", reason="real vLLM is not installed (GPU machines only)")


@pytest.fixture(
    scope="module", params=["double", pytest.param("real", marks=pytest.mark.gpu)]
)
def engine(request, tiny_llama):
    vllm = _load(request.param)
    llm = vllm.LLM(
        model=str(tiny_llama),
        max_model_len=512,
        gpu_memory_utilization=0.3,
        enforce_eager=True,
        disable_log_stats=False,
    )
    yield vllm, llm
    del llm
    for mod in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[mod]


def greedy(vllm, max_tokens=8, **kw):
    return vllm.SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def test_greedy_with_n_above_1_is_refused(engine):
    vllm, _ = engine
    with pytest.raises(Exception, match=r"(n|best_of) must be 1 when using greedy sampling"):
        vllm.SamplingParams(n=3, temperature=0.0)
    assert vllm.SamplingParams(n=3, temperature=0.7).n == 3


def test_unknown_llm_keyword_is_a_type_error(engine, tiny_llama):
    vllm, _ = engine
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_num_seq'"):
        vllm.LLM(model=str(tiny_llama), max_num_seq=4)


def test_text_prompts_get_the_tokenizers_special_tokens(engine):
    vllm, llm = engine
    tok = llm.get_tokenizer()
    (out,) = llm.generate(["The capital of France is"], greedy(vllm), use_tqdm=False)
    assert list(out.prompt_token_ids) == tok.encode("The capital of France is")
    assert out.prompt_token_ids[0] == tok.bos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    (chat_as_text,) = llm.generate([text], greedy(vllm), use_tqdm=False)
    assert list(chat_as_text.prompt_token_ids[:2]) == [2, 2]  # why llmeval never sends chat as text


def test_token_prompts_are_taken_as_given(engine):
    vllm, llm = engine
    tok = llm.get_tokenizer()
    ids = tok.encode("def add(a, b):")
    for prompt in ({"prompt_token_ids": ids}, vllm.TokensPrompt(prompt_token_ids=ids)):
        (out,) = llm.generate([prompt], greedy(vllm), use_tqdm=False)
        assert list(out.prompt_token_ids) == ids
    (text_prompt,) = llm.generate([vllm.TextPrompt(prompt="def add(a, b):")], greedy(vllm), use_tqdm=False)
    assert list(text_prompt.prompt_token_ids) == ids


def test_chat_renders_the_template_and_adds_no_second_bos(engine):
    vllm, llm = engine
    tok = llm.get_tokenizer()
    messages = [{"role": "user", "content": "Add two numbers."}]
    (out,) = llm.chat(messages, greedy(vllm), use_tqdm=False)
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert list(out.prompt_token_ids) == tok.encode(text, add_special_tokens=False)
    assert list(out.prompt_token_ids[:2]) == [2, 105]  # <bos><start_of_turn>


def test_output_fields(engine):
    vllm, llm = engine
    (out,) = llm.generate(["Hello"], greedy(vllm, max_tokens=5), use_tqdm=False)
    assert isinstance(out.request_id, str) and out.finished is True and out.prompt_token_ids
    (choice,) = out.outputs
    assert choice.index == 0 and isinstance(choice.text, str)
    assert 1 <= len(choice.token_ids) <= 5
    assert choice.finish_reason in ("stop", "length")
    assert choice.finish_reason != "length" or len(choice.token_ids) == 5


def test_a_seeded_sample_is_reproducible_and_n_draws_use_seed_plus_index(engine):
    vllm, llm = engine
    p = {"prompt_token_ids": llm.get_tokenizer().encode("Once upon a time")}

    def sampled(seed, n=1):
        return vllm.SamplingParams(n=n, temperature=1.0, seed=seed, max_tokens=12)

    a1, a2 = (llm.generate([p], sampled(1234), use_tqdm=False)[0].outputs[0].text for _ in range(2))
    assert a1 == a2
    # n = 2 with seed s gives the draws of seeds s and s + 1 (V1's parallel sampling): so
    # with one seed for n samples, sample i depends on the request, not on its own key.
    (both,) = llm.generate([p], sampled(1234, n=2), use_tqdm=False)
    singles = llm.generate([p, p], [sampled(1234), sampled(1235)], use_tqdm=False)
    assert sorted(o.text for o in both.outputs) == sorted(o.outputs[0].text for o in singles)


def test_a_prompt_longer_than_the_context_is_refused(engine):
    vllm, llm = engine
    with pytest.raises(ValueError, match="longer than the maximum model length"):
        llm.generate([{"prompt_token_ids": [2] + [10] * 600}], greedy(vllm), use_tqdm=False)
    # The engine is still usable afterwards.
    assert llm.generate(["ok"], greedy(vllm), use_tqdm=False)[0].finished


def test_the_engine_can_be_driven_request_by_request(engine):
    vllm, llm = engine
    eng = llm.llm_engine
    ids = llm.get_tokenizer().encode("Count: one, two,")
    params = []
    for i in range(6):
        sp = vllm.SamplingParams(temperature=0.8, seed=i, max_tokens=6 + i)
        sp.output_kind = vllm.sampling_params.RequestOutputKind.FINAL_ONLY
        params.append(sp)
        eng.add_request(f"req-{i}", {"prompt_token_ids": ids}, sp)
    assert eng.get_num_unfinished_requests() == 6
    done = {}
    while eng.has_unfinished_requests():
        for out in eng.step():
            assert out.finished  # FINAL_ONLY: only finished requests come back
            done[out.request_id] = out
    assert sorted(done) == [f"req-{i}" for i in range(6)]
    assert all(len(done[f"req-{i}"].outputs[0].token_ids) <= 6 + i for i in range(6))
    eng.add_request("req-x", {"prompt_token_ids": ids}, params[0])
    eng.abort_request(["req-x"])
    assert not eng.has_unfinished_requests()
    names = {m.name for m in llm.get_metrics()}
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting"} <= names
