"""llmeval/paths.py: $LLMEVAL_HOME and every path derived from it."""

from pathlib import Path

from llmeval import paths


def test_home_and_derived_paths(monkeypatch, tmp_path):
    for var in ("LLMEVAL_HOME", "LLMEVAL_CACHE", "LLMEVAL_MODELS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert paths.home() == tmp_path / "user" / ".cache" / "llmeval"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.home() == tmp_path / "xdg" / "llmeval"
    monkeypatch.setenv("LLMEVAL_HOME", str(tmp_path / "h"))
    assert paths.home() == tmp_path / "h"
    assert paths.cache_dir() == tmp_path / "h" / "cache"
    assert paths.models_dir() == tmp_path / "h" / "models"
    assert paths.datasets_dir() == tmp_path / "h" / "datasets"
    assert paths.runs_dir() == tmp_path / "h" / "runs"
    monkeypatch.setenv("LLMEVAL_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("LLMEVAL_MODELS", str(tmp_path / "m"))
    assert paths.cache_dir() == tmp_path / "c" and paths.models_dir() == tmp_path / "m"


def test_checkout_paths_exist():
    assert (paths.PRESETS_DIR / "base.toml").is_file()
    assert paths.EVALUATION_DATA.is_dir()
    assert paths.REPO_ROOT == Path(__file__).resolve().parent.parent


def test_library_modules_import_neither_the_cli_nor_the_registry_for_paths():
    """The ground floor: paths, errors and vocabulary come from their own modules."""
    import re

    pkg = Path(paths.__file__).parent
    offenders = []
    for f in sorted(pkg.rglob("*.py")):
        text = f.read_text()
        if re.search(r"^\s*from llmeval\.cli import|^\s*from llmeval import .*\bcli\b", text, re.M):
            commands = ("resolve", "generate", "score", "aggregate", "monitor", "campaign", "cli")
            if f.stem not in commands:
                offenders.append(f"{f.name} imports the CLI module")
        if "user_cache_dir" in text:
            offenders.append(f"{f.name} uses user_cache_dir")
        if re.search(r"from llmeval\.datasets import .*\b(CODE_EXEC|EXACT_MATCH|SCORERS)\b", text):
            offenders.append(f"{f.name} takes scorer names from the dataset registry")
    assert offenders == []
