"""llmeval/loaders.py: each dataset's published format read into tasks."""

import pytest
from conftest import FIXTURES

from llmeval import loaders
from llmeval.errors import DataError
from llmeval.vocab import STYLE_ASSERTS


def test_gsm8k_final_answer_without_separators():
    tasks = list(loaders.load_gsm8k(FIXTURES / "gsm8k.jsonl"))
    assert [t[2]["answer"] for t in tasks] == ["18", "3", "70000"]  # "#### 70,000"
    task_id, prompt, ref = tasks[0]
    assert task_id == "0" and prompt.startswith("Question: ") and prompt.endswith("\nAnswer:")
    assert ref["solution"].endswith("#### 18")


def test_mbpp_entry_point_from_the_first_assert():
    (task, *_) = list(loaders.load_mbpp(FIXTURES / "mbpp.jsonl"))
    _, prompt, ref = task
    assert ref["style"] == STYLE_ASSERTS and ref["test"].startswith("assert ")
    assert f"{ref['entry_point']}(" in ref["test"].splitlines()[0]
    assert "Your code should pass these tests" in prompt


def test_mmlu_directory_of_subject_csvs():
    tasks = list(loaders.load_mmlu(FIXTURES / "mmlu"))
    subjects = {t[0].split("/")[0] for t in tasks}
    assert subjects == {"abstract_algebra", "anatomy"}
    _, prompt, ref = tasks[0]
    assert prompt.startswith("The following are multiple choice questions (with answers) about")
    assert prompt.endswith("\nAnswer:") and ref["label"] in "ABCD" and len(ref["choices"]) == 4


def test_medqa_options_object():
    tasks = list(loaders.load_medqa(FIXTURES / "medqa.jsonl"))
    _, prompt, ref = tasks[0]
    assert ref["choices"][ord(ref["label"]) - 65] in prompt


def test_choice_label_accepts_letters_and_indices():
    assert loaders.choice_label("b", 4, "x") == "B"
    assert loaders.choice_label(2, 4, "x") == "C"
    assert loaders.choice_label("3", 4, "x") == "D"
    with pytest.raises(DataError, match="x: answer index 4 out of range for 4 choices"):
        loaders.choice_label(4, 4, "x")
    with pytest.raises(DataError, match="x: answer 'maybe' is neither a letter nor an index"):
        loaders.choice_label("maybe", 4, "x")


def test_malformed_rows_name_file_and_row(tmp_path):
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text('{"question": "q", "answer": "no final answer"}\n')
    with pytest.raises(DataError) as exc:
        list(loaders.load_gsm8k(bad))
    assert str(exc.value) == f'{bad}:1: field "answer": no "#### N" final answer'
    csv = tmp_path / "mmlu"
    csv.mkdir()
    (csv / "x_test.csv").write_text("q,a,b,c\n")
    with pytest.raises(DataError, match=r"x_test.csv:1: expected 6 columns"):
        list(loaders.load_mmlu(csv))


def test_function_name_from_assert():
    assert loaders.function_name_from_assert("assert f(1) == 2") == "f"
    assert loaders.function_name_from_assert("assert math.isclose(area(2), 4)") == "area"
    assert loaders.function_name_from_assert("assert set(g([1])) == {1}") == "g"
    assert loaders.function_name_from_assert("x = 1") is None
