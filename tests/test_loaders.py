"""llmeval/loaders.py: each format's published files read into docs."""

import orjson
import pytest
from conftest import FIXTURES

from llmeval import loaders
from llmeval.datasets import REGISTRY
from llmeval.errors import DataError
from llmeval.vocab import STYLE_ASSERTS

MEDICAL = [
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
]


def docs(name, path, split=None, **kw):
    return list(loaders.load(REGISTRY[name], path, split, **kw))


def test_gsm8k_final_answer_without_separators():
    got = docs("gsm8k", FIXTURES / "gsm8k.jsonl")
    assert [d.reference["answer"] for d in got] == ["18", "3", "70000"]  # "#### 70,000"
    first = got[0]
    assert first.task_id == "0" and first.values["question"].startswith("Janet")
    assert first.reference["solution"].endswith("#### 18")
    assert first.reference["extractions"] == {
        "strict-match": "lm-eval/gsm8k/strict-match",
        "flexible-extract": "lm-eval/gsm8k/flexible-extract",
    }


def test_mbpp_entry_point_from_the_first_assert():
    first = docs("mbpp", FIXTURES / "mbpp.jsonl")[0]
    ref = first.reference
    assert ref["style"] == STYLE_ASSERTS and ref["test"].startswith("assert ")
    assert f"{ref['entry_point']}(" in ref["test"].splitlines()[0]
    assert first.values["tests"] == ref["test"] and first.values["text"].startswith("Write a")


def test_mmlu_directory_of_subject_csvs_by_split():
    test = docs("mmlu", FIXTURES / "mmlu")
    assert sorted({d.group for d in test}) == ["abstract_algebra", *MEDICAL]
    assert len(test) == 3 + 2 * 6
    first = test[0]
    assert first.task_id == "abstract_algebra/0" and first.group == "abstract_algebra"
    assert first.values["subject_text"] == "abstract algebra"
    assert first.values["choice_lines"] == "A. 0\nB. 4\nC. 2\nD. 6"
    assert first.reference == {
        "choices": ["0", "4", "2", "6"],
        "label": "B",
        "continuations": [" A", " B", " C", " D"],
        "loglikelihood": True,
    }
    dev = docs("mmlu", FIXTURES / "mmlu", "dev")
    assert len(dev) == 5 * 7 and dev[0].values["question"].startswith("Find all c in Z_3")


def test_mmlu_subjects_of_a_medical_spec(tmp_path):
    got = docs("mmlu_college_medicine", FIXTURES / "mmlu")
    assert [d.task_id for d in got] == ["college_medicine/0", "college_medicine/1"]
    (tmp_path / "anatomy_test.csv").write_bytes(
        (FIXTURES / "mmlu" / "anatomy_test.csv").read_bytes()
    )
    with pytest.raises(DataError) as exc:
        docs("mmlu_college_medicine", tmp_path)
    assert (
        str(exc.value)
        == f"{tmp_path}: no college_medicine_test.csv (subjects of mmlu_college_medicine)"
    )


def test_medqa_options_object_and_the_count_of_choices():
    (d, _) = docs("medqa", FIXTURES / "medqa.jsonl")
    assert d.reference["choices"][ord(d.reference["label"]) - 65] == "Nitrofurantoin"
    five = FIXTURES / "medqa" / "data_clean" / "questions" / "US" / "test.jsonl"
    assert [x.reference["label"] for x in docs("medqa_5options", five)] == ["E", "B", "A"]
    with pytest.raises(DataError) as exc:
        docs("medqa", five)  # the five-option file read as the four-option dataset
    assert str(exc.value) == f"{five}:1: 5 choices, but medqa has 4 (choices.count in medqa.toml)"


def test_medmcqa_json_lines_and_one_based_cop():
    got = docs("medmcqa", FIXTURES / "medmcqa" / "dev.json")
    assert [(d.task_id[:8], d.reference["label"]) for d in got] == [
        ("45258d3d", "A"),
        ("b2a7d1d0", "C"),
        ("6c1e2f3a", "B"),
    ]
    assert got[1].values["choice_lines"].splitlines()[2] == "C. Ethosuximide"
    # the hub's copy counts cop from 0: the [hub] fields override says so
    hub = docs("medmcqa", FIXTURES / "medmcqa" / "dev.json", hub=True)
    assert [d.reference["label"] for d in hub] == ["B", "D", "C"]


def test_pubmedqa_object_keyed_by_pmid_and_text_choices():
    got = docs("pubmedqa", FIXTURES / "pubmedqa" / "test_set.json")
    assert [(d.task_id, d.reference["label"]) for d in got] == [
        ("21645374", "A"),
        ("16418930", "B"),
        ("17208539", "C"),
    ]
    assert got[0].reference["continuations"] == [" yes", " no", " maybe"]
    assert got[0].values["label_text"] == "yes"
    assert isinstance(got[0].values["CONTEXTS"], list)


def test_choice_label_accepts_letters_indices_and_texts():
    assert loaders.choice_label("b", 4, "x") == "B"
    assert loaders.choice_label(2, 4, "x") == "C"
    assert loaders.choice_label("3", 4, "x") == "D"
    assert loaders.choice_label(4, 4, "x", base=1) == "D"
    assert loaders.choice_label(" Maybe", 3, "x", ["yes", "no", "maybe"]) == "C"
    with pytest.raises(DataError, match="x: answer index 4 out of range for 4 choices"):
        loaders.choice_label(4, 4, "x")
    with pytest.raises(
        DataError, match=r"x: answer index 0 out of range for 4 choices \(numbered from 1\)"
    ):
        loaders.choice_label(0, 4, "x", base=1)
    with pytest.raises(DataError, match="x: answer 'maybe' is neither a letter nor an index"):
        loaders.choice_label("maybe", 4, "x")
    with pytest.raises(DataError, match="x: answer 'perhaps' is not a letter, an index or one of"):
        loaders.choice_label("perhaps", 3, "x", ["yes", "no", "maybe"])
    with pytest.raises(DataError, match="x: answer True is neither"):
        loaders.choice_label(True, 4, "x")


def test_malformed_rows_name_file_and_row(tmp_path):
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text('{"question": "q", "answer": "no final answer"}\n')
    with pytest.raises(DataError) as exc:
        docs("gsm8k", bad)
    assert str(exc.value) == f'{bad}:1: field "answer": no "#### N" final answer'
    bad.write_text('{"question": "q", "answer": "#### 1"}\n\n{"q": 1}\n')
    with pytest.raises(DataError) as exc:
        docs("gsm8k", bad)
    assert str(exc.value) == f'{bad}:3: no field "question" (fields.question in gsm8k.toml)'
    csv = tmp_path / "mmlu"
    csv.mkdir()
    (csv / "x_test.csv").write_text("q,a,b,c\n")
    with pytest.raises(DataError, match=r"x_test.csv:1: expected 6 columns"):
        docs("mmlu", csv)
    (csv / "x_test.csv").write_text("q,a,b,c,d,Z\n")
    with pytest.raises(DataError, match=r'x_test.csv:1: field "answer": answer \'Z\' is neither'):
        docs("mmlu", csv)


def test_json_files_array_object_and_lines(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    (tmp_path / "arr.json").write_bytes(orjson.dumps(rows))
    (tmp_path / "obj.json").write_bytes(orjson.dumps({"k1": rows[0], "k2": rows[1]}))
    (tmp_path / "lines.json").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert [(r.key, r.data) for r in loaders.json_items(tmp_path / "arr.json")] == [
        (None, {"a": 1}),
        (None, {"a": 2}),
    ]
    assert [r.key for r in loaders.json_items(tmp_path / "obj.json")] == ["k1", "k2"]
    assert [r.where for r in loaders.json_items(tmp_path / "lines.json")] == [
        f"{tmp_path / 'lines.json'}:1",
        f"{tmp_path / 'lines.json'}:2",
    ]
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(DataError, match=r"bad.json: invalid JSON"):
        list(loaders.json_items(tmp_path / "bad.json"))
    (tmp_path / "scalar.json").write_text("[1]")
    with pytest.raises(DataError, match=r"scalar.json:1: expected a JSON object"):
        list(loaders.json_items(tmp_path / "scalar.json"))


def test_function_name_from_assert():
    assert loaders.function_name_from_assert("assert f(1) == 2") == "f"
    assert loaders.function_name_from_assert("assert math.isclose(area(2), 4)") == "area"
    assert loaders.function_name_from_assert("assert set(g([1])) == {1}") == "g"
    assert loaders.function_name_from_assert("x = 1") is None
