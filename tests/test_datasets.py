"""llmeval/datasets.py: the registry and where a dataset's files are found."""

import shutil

from conftest import FIXTURES

from llmeval import datasets, paths
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
    assert found.searched[-1] == "hub google-research-datasets/mbpp (offline: HF_HUB_OFFLINE is set)"


def test_unknown_dataset_message_lists_names_and_places():
    msg = datasets.unknown_dataset_message("gsm9k", None)
    assert msg.startswith("unknown dataset 'gsm9k': known datasets are gsm8k, humaneval")
    assert "a path to a .jsonl/.json/.csv/.parquet file also works" in msg
