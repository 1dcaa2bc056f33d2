import pytest

from llmeval.presets import PresetError, apply_overrides, load_preset, main


def test_h100_inherits_base():
    p = load_preset("h100")
    assert p["chain"] == ["base", "h100"]
    assert p["engine"]["backend"] == "vllm"
    assert p["engine"]["gpu_memory_utilization"] == 0.92
    # Inherited from base, not restated in h100.toml:
    assert p["sampling"]["seed"] == 1234
    assert p["scoring"]["timeout"] == 10.0
    assert p["slurm"]["gpus"] == 1


@pytest.mark.parametrize("name", ["base", "cpu", "balanced", "h100", "sampling"])
def test_shipped_presets_load(name):
    p = load_preset(name)
    assert p["chain"][0] == "base"
    assert set(p["sampling"]) >= {"temperature", "top_p", "max_tokens", "n", "seed"}


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('inherits = "base"\n[engine]\nbatchsize = 4\n')
    with pytest.raises(PresetError) as exc:
        load_preset(str(bad))
    assert str(exc.value).startswith(f"{bad}: unknown key engine.batchsize")


def test_unknown_section(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[engnie]\nx = 1\n")
    with pytest.raises(PresetError, match=r"bad.toml: unknown key engnie"):
        load_preset(str(bad))


def test_wrong_type_and_range(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('[sampling]\nmax_tokens = "many"\n')
    with pytest.raises(
        PresetError, match=r"t.toml: key sampling.max_tokens: expected int, got str"
    ):
        load_preset(str(bad))
    bad.write_text("[engine]\ngpu_memory_utilization = 1.5\n")
    with pytest.raises(PresetError, match=r"key engine.gpu_memory_utilization: 1.5 out of range"):
        load_preset(str(bad))
    bad.write_text("[engine]\nenable_prefix_caching = 1\n")
    with pytest.raises(PresetError, match=r"enable_prefix_caching: expected bool, got int"):
        load_preset(str(bad))


def test_cycle_and_missing_parent(tmp_path, monkeypatch):
    (tmp_path / "a.toml").write_text('inherits = "b"\n')
    (tmp_path / "b.toml").write_text('inherits = "a"\n')
    monkeypatch.setenv("LLMEVAL_PRESETS", str(tmp_path))
    with pytest.raises(PresetError, match="inheritance cycle"):
        load_preset("a")
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        load_preset("nope")


def test_overrides_win_and_are_checked():
    p = apply_overrides(load_preset("cpu"), "sampling", temperature=0.7, n=None)
    assert p["sampling"]["temperature"] == 0.7
    assert p["sampling"]["n"] == 1
    with pytest.raises(PresetError, match="command line: key sampling.n: 0 out of range"):
        apply_overrides(p, "sampling", n=0)


def test_print_effective(capsys):
    assert main(["cpu"]) == 0
    out = capsys.readouterr().out
    assert '"backend": "hf"' in out and '"chain"' in out
    assert main(["nope"]) == 1


def test_every_key_is_listed_with_its_type_and_meaning(capsys):
    from llmeval.presets import SCHEMA

    assert main(["--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("\t") for line in lines]
    assert [r[0] for r in rows] == [f"{s}.{k}" for s in SCHEMA for k in SCHEMA[s]]
    assert all(len(r) == 3 and r[1] and r[2] for r in rows), [r for r in rows if not r[2]]
    assert "engine.gpu_memory_utilization\tfloat > 0 <= 1\tvLLM KV-cache share" in lines
    assert "engine.backend\tstr in auto|vllm|hf|openai|reference\tgeneration backend" in lines
