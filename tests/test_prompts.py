"""llmeval/prompts.py: lm-eval's few-shot layout, seeded example choice, system prompts."""

import hashlib

import pytest
from conftest import FIXTURES

from llmeval import loaders, prompts
from llmeval.datasets import REGISTRY
from llmeval.errors import DataError
from llmeval.loaders import Doc


def split_docs(name, path, split=None):
    return list(loaders.load(REGISTRY[name], path, split))


def test_mmlu_five_shot_is_lm_evals_layout():
    spec = REGISTRY["mmlu"]
    test = split_docs("mmlu", FIXTURES / "mmlu")
    pools = prompts.fewshot_pools(split_docs("mmlu", FIXTURES / "mmlu", "dev"))
    doc = next(d for d in test if d.group == "anatomy")
    shots = prompts.choose_examples(spec, doc, pools, 5)
    assert [s.task_id for s in shots] == [f"anatomy/{i}" for i in range(5)]  # first_n, same subject

    # lm-eval: description + (doc_to_text + " " + choice + "\n\n") per example + doc_to_text
    def text(d):
        q = d.values["question"]
        return (
            q
            + "\n"
            + "\n".join(f"{L}. {c}" for L, c in zip("ABCD", d.reference["choices"]))
            + "\nAnswer:"
        )

    expected = "The following are multiple choice questions (with answers) about anatomy.\n\n"
    expected += "".join(text(s) + " " + s.reference["label"] + "\n\n" for s in shots) + text(doc)
    assert prompts.build_prompt(spec, doc, shots) == expected
    assert prompts.build_prompt(spec, doc, []) == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n" + text(doc)
    )


def test_gsm8k_examples_are_whole_worked_solutions():
    spec = REGISTRY["gsm8k"]
    (doc, *_) = split_docs("gsm8k", FIXTURES / "gsm8k.jsonl")
    pools = prompts.fewshot_pools(split_docs("gsm8k", FIXTURES / "gsm8k" / "train.jsonl", "train"))
    shots = prompts.choose_examples(spec, doc, pools, 2)
    out = prompts.build_prompt(spec, doc, shots)
    first = shots[0]
    assert out.startswith(
        f"Question: {first.values['question']}\nAnswer: {first.values['answer']}\n\nQuestion: "
    )
    assert out.endswith(f"\n\nQuestion: {doc.values['question']}\nAnswer:")
    assert out.count("#### ") == 2


def pool_of(n):
    return {None: [Doc(f"p{i}", {}, {}) for i in range(n)]}


def test_random_sampler_follows_the_documented_rule():
    spec = REGISTRY["gsm8k"]  # random, seed 1234
    pools = pool_of(50)
    doc = Doc("17", {}, {})
    got = [d.task_id for d in prompts.choose_examples(spec, doc, pools, 5)]
    want, j = [], 0
    while len(want) < 5:
        i = int(hashlib.sha256(f"1234:17:{j}".encode()).hexdigest()[:16], 16) % 50
        if f"p{i}" not in want:
            want.append(f"p{i}")
        j += 1
    assert got == want
    # a function of the task alone: the same whatever else is asked, and other tasks differ
    again = [d.task_id for d in prompts.choose_examples(spec, Doc("17", {}, {}), pools, 5)]
    assert again == got
    others = {
        tuple(d.task_id for d in prompts.choose_examples(spec, Doc(str(t), {}, {}), pools, 5))
        for t in range(20)
    }
    assert len(others) == 20
    # k equal to the pool: every example once
    assert sorted(d.task_id for d in prompts.choose_examples(spec, doc, pool_of(5), 5)) == [
        f"p{i}" for i in range(5)
    ]


def test_not_enough_examples_names_the_group():
    spec = REGISTRY["mmlu"]
    doc = Doc("anatomy/0", {}, {}, group="anatomy")
    with pytest.raises(DataError) as exc:
        prompts.choose_examples(spec, doc, {"anatomy": [doc]}, 2)
    assert (
        str(exc.value)
        == "mmlu: the few-shot split 'dev' has 1 examples for anatomy, --num-fewshot asks for 2"
    )
    assert prompts.choose_examples(spec, doc, {}, 0) == []


def test_system_prompt_joins_like_lm_eval():
    assert prompts.join_system("Be exact.", "Desc.\n\nQ") == "Be exact.\n\nDesc.\n\nQ"
    assert prompts.join_system("Be exact.\n", "Q") == "Be exact.\nQ"
    assert prompts.join_system("Be exact.", " Q") == "Be exact. Q"
    assert prompts.join_system("Be exact.", "") == "Be exact."
    spec = REGISTRY["gsm8k"]
    assert prompts.messages(spec, "Question: q\nAnswer:", "Be exact.") == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": spec.chat_instruction + "Question: q\nAnswer:"},
    ]
    assert prompts.messages(spec, "p", None) == [
        {"role": "user", "content": spec.chat_instruction + "p"}
    ]


def test_missing_template_field_names_the_row(tmp_path):
    from llmeval.specs import build_registry

    path = tmp_path / "qa.toml"
    path.write_text(
        'category = "x"\nscorer = "exact_match"\n[source]\nformat = "rows"\nfiles = ["qa.jsonl"]\n'
        '[fields]\nquestion = "q"\nanswer = "a"\n[prompt]\ntemplate = "{q} ({hint})"\n'
    )
    spec = build_registry([path])["qa"]
    doc = Doc("1", {"q": "?"}, {"answer": "1"}, where="qa.jsonl:1")
    with pytest.raises(DataError) as exc:
        prompts.build_prompt(spec, doc, [])
    assert str(exc.value) == 'qa.jsonl:1: no field "hint" (used by prompt.template of qa.toml)'
