"""llmeval/datasets.py: the registry and where a dataset's files are found."""

import shutil

import pytest
from conftest import FIXTURES

from llmeval import datasets, paths
from llmeval.errors import DataError
from llmeval.specs import SpecError
from llmeval.vocab import SCORERS


def test_registry_specs_are_consistent():
    for name, spec in datasets.REGISTRY.items():
        assert spec.name == name and spec.scorer in SCORERS and spec.files
        assert spec.category in datasets.CATEGORIES
    assert datasets.CATEGORIES == tuple(sorted(datasets.CATEGORIES))


def test_search_order_data_dir_then_env_then_bundled(tmp_path, monkeypatch):
    spec = datasets.REGISTRY["gsm8k"]
    env_dir = tmp_path / "env"
    (env_dir / "math").mkdir(parents=True)
    shutil.copy(FIXTURES / "gsm8k.jsonl", env_dir / "math" / "gsm8k.jsonl")
    monkeypatch.setenv("LLMEVAL_DATA", str(env_dir))
    found = datasets.locate(spec, [str(FIXTURES)])
    assert (found.path, found.source) == (FIXTURES / "gsm8k.jsonl", "--data-dir")
    found = datasets.locate(spec)
    assert (found.path, found.source) == (env_dir / "math" / "gsm8k.jsonl", "$LLMEVAL_DATA")


def test_package_then_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMEVAL_HOME", str(tmp_path))
    found = datasets.locate(datasets.REGISTRY["humaneval"])
    assert found.source == "package" and found.path.name == "HumanEval.jsonl.gz"
    cached = paths.datasets_dir() / "math" / "gsm8k.jsonl"
    cached.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "gsm8k.jsonl", cached)
    found = datasets.locate(datasets.REGISTRY["gsm8k"])
    assert (found.path, found.source) == (cached, "cache")


def test_not_found_says_where_it_looked_and_why_not_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = datasets.locate(datasets.REGISTRY["mbpp"])
    assert found.path is None
    assert found.problem == "offline: HF_HUB_OFFLINE is set"
    assert str(paths.EVALUATION_DATA) in found.searched
    assert (
        found.searched[-1] == "hub google-research-datasets/mbpp (offline: HF_HUB_OFFLINE is set)"
    )


def test_unknown_dataset_message_lists_names_and_places():
    msg = datasets.unknown_dataset_message("gsm9k", None)
    assert msg.startswith("unknown dataset 'gsm9k': known datasets are gsm8k, humaneval")
    assert "a path to a .jsonl/.json/.csv/.parquet file also works" in msg


def candidate_names(spec):
    splits = {spec.split, spec.fewshot_split} - {None}
    names = {p.replace("{split}", s) for p in (*spec.files, *spec.fewshot_files) for s in splits}
    return {n for n in names}


def test_no_two_datasets_claim_one_file_name():
    """Each published name belongs to one dataset; specs that read another's files (MMLU's
    subjects) share them with their owner only."""
    owners: dict[str, str] = {}
    for spec in datasets.REGISTRY.values():
        for name in candidate_names(spec):
            other = owners.setdefault(name, spec.source_owner)
            assert other == spec.source_owner, (name, other, spec.name)
    generic = {"test.jsonl", "train.jsonl", "dev.jsonl", "test.json", "dev.json", "train.json"}
    assert not generic & set(owners)
    assert {s.name for s in datasets.REGISTRY.values() if s.source_owner == "mmlu"} == {
        "mmlu",
        "mmlu_anatomy",
        "mmlu_clinical_knowledge",
        "mmlu_college_biology",
        "mmlu_college_medicine",
        "mmlu_medical_genetics",
        "mmlu_professional_medicine",
    }


def test_a_bare_test_jsonl_is_nobodys(tmp_path, monkeypatch):
    """MedQA's published test.jsonl dropped in a data dir is not read as GSM8K (nor anything)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    us = FIXTURES / "medqa" / "data_clean" / "questions" / "US"
    shutil.copy(us / "test.jsonl", tmp_path / "test.jsonl")
    (tmp_path / "math").mkdir()
    shutil.copy(us / "test.jsonl", tmp_path / "math" / "test.jsonl")
    for spec in datasets.REGISTRY.values():
        found = datasets.locate(spec, [str(tmp_path)])
        assert found.path is None or found.source == "package", (spec.name, found.path)
    # in MedQA's own published layout it is MedQA's five-option test split
    shutil.copytree(FIXTURES / "medqa" / "data_clean", tmp_path / "data_clean")
    found = datasets.locate(datasets.REGISTRY["medqa_5options"], [str(tmp_path)])
    assert found.path == tmp_path / "data_clean" / "questions" / "US" / "test.jsonl"
    assert datasets.locate(datasets.REGISTRY["gsm8k"], [str(tmp_path)]).path is None


def test_the_fewshot_split_is_found_beside_the_evaluated_one(tmp_path):
    reg = datasets.REGISTRY
    found = datasets.locate(reg["medqa_5options"], [str(FIXTURES)])
    fs = datasets.locate_fewshot(reg["medqa_5options"], found, [str(FIXTURES)])
    assert fs.path == found.path.with_name("train.jsonl") and fs.source == "beside it"
    found = datasets.locate(reg["mmlu"], [str(FIXTURES)])
    assert (
        datasets.locate_fewshot(reg["mmlu"], found).path == FIXTURES / "mmlu"
    )  # splits in one folder
    found = datasets.locate(reg["pubmedqa"], [str(FIXTURES)])
    fs = datasets.locate_fewshot(reg["pubmedqa"], found)
    assert fs.path == FIXTURES / "pubmedqa" / "pqal_fold0" / "train_set.json"
    # the published split folders: mmlu/test -> mmlu/dev
    for split in ("test", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
        shutil.copy(FIXTURES / "mmlu" / f"anatomy_{split}.csv", tmp_path / "mmlu" / split)
    found = datasets.locate(reg["mmlu"], [str(tmp_path)])
    assert found.path == tmp_path / "mmlu"  # "mmlu" comes first; the format reads mmlu/test
    found = datasets.Resolution(
        reg["mmlu"], tmp_path / "mmlu" / "test", "x", [], base=tmp_path, pattern="mmlu/{split}"
    )
    assert datasets.locate_fewshot(reg["mmlu"], found).path == tmp_path / "mmlu" / "dev"
    # a file named on the command line: its sibling with the split's name changed
    shutil.copy(FIXTURES / "gsm8k.jsonl", tmp_path / "test.jsonl")
    shutil.copy(FIXTURES / "gsm8k" / "train.jsonl", tmp_path / "train.jsonl")
    found = datasets.Resolution(reg["gsm8k"], tmp_path / "test.jsonl", "file", [])
    assert datasets.locate_fewshot(reg["gsm8k"], found).path == tmp_path / "train.jsonl"


def test_no_fewshot_split_is_an_error_naming_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = datasets.REGISTRY
    found = datasets.locate(reg["humaneval"])
    with pytest.raises(
        DataError,
        match=r"humaneval: has no few-shot split \(.*humaneval.toml has no \[fewshot\]\); use --num-fewshot 0",
    ):
        datasets.locate_fewshot(reg["humaneval"], found)
    shutil.copy(FIXTURES / "gsm8k.jsonl", tmp_path / "gsm8k.jsonl")
    found = datasets.locate(reg["gsm8k"], [str(tmp_path)])
    with pytest.raises(DataError) as exc:
        datasets.locate_fewshot(reg["gsm8k"], found, [str(tmp_path)])
    msg = str(exc.value)
    assert msg.startswith(
        "gsm8k: few-shot split 'train' not found (gsm8k/train.jsonl, gsm8k_train.jsonl, "
        "grade_school_math/data/train.jsonl; offline: HF_HUB_OFFLINE is set); searched "
        f"{tmp_path}, "
    )


def test_user_specs_from_data_dirs_and_spec_paths(tmp_path):
    spec = (
        'category = "trivia"\nscorer = "exact_match"\n[source]\nformat = "rows"\n'
        'files = ["capitals.jsonl"]\n[fields]\nquestion = "q"\nanswer = "a"\n'
        '[prompt]\ntemplate = "Q: {q}\\nA:"\n'
    )
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "capitals.toml").write_text(spec)
    reg = datasets.registry([str(tmp_path)])
    assert reg.get("capitals").path == tmp_path / "specs" / "capitals.toml"
    assert "trivia" in reg.categories() and "capitals" not in datasets.REGISTRY
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "caps.toml").write_text(spec.replace("capitals.jsonl", "caps.jsonl"))
    assert datasets.registry(None, [str(other)]).get("caps") is not None
    assert datasets.registry(None, [str(other / "caps.toml")]).get("caps") is not None
    assert datasets.registry().get("medqa_4options").name == "medqa"  # an alias
    # other TOML files of a data directory are not read as specs; a dataset's is, even broken
    (other / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (other / "campaign.toml").write_text('datasets = ["gsm8k"]\n[[models]]\nmodel = "m"\n')
    assert datasets.registry([str(other)]).get("caps") is not None
    (other / "broken.toml").write_text('scorer = "exact_match"\n[prompt]\ntemplate = 3\n')
    with pytest.raises(SpecError, match=r"broken.toml: key prompt.template: expected str, got int 3"):
        datasets.registry([str(other)])
    with pytest.raises(DataError, match="nope: no such spec file or directory"):
        datasets.registry(None, ["nope"])
