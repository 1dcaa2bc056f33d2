"""Every sh block of the README runs as written (except those marked as not run, with the reason)."""

import os
import re
import subprocess

import orjson
import pytest
from conftest import REPO

SKIP = "<!-- not run by tests/test_readme.py"


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = []
    for m in re.finditer(r"(<!--[^\n]*-->\n)?```sh\n(.*?)```", text, re.S):
        if m.group(1) and m.group(1).startswith(SKIP):
            assert "not run by tests/test_readme.py: " in m.group(1), "say why a block is not run"
            continue
        blocks.append(m.group(2))
    return blocks


def test_readme_blocks_are_found():
    blocks = readme_blocks()
    assert blocks[0].strip() == "make demo"
    assert any("jq" in b for b in blocks) and any("eval-campaign" in b for b in blocks)


@pytest.mark.slow
def test_readme_commands_run_as_written(real_model, tmp_path):
    env = {
        **os.environ,
        "LLMEVAL_HOME": str(tmp_path / "home"),
        "LLMEVAL_MODELS": os.environ["LLMEVAL_MODELS"],
    }
    env.pop("VIRTUAL_ENV", None)
    script = "set -e\n" + "\n".join(
        f"echo '>>> block {i}'\n{b}" for i, b in enumerate(readme_blocks())
    )
    first = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, timeout=1800
    )
    out, err = first.stdout.decode(), first.stderr.decode()
    assert first.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    # The demo printed a real pass@1 with its interval, and compared with the reference solutions.
    assert re.search(
        r"gemma3-270m\s+humaneval\s+pass@1\s+\d\.\d{4}\s+\[\d\.\d{4}, \d\.\d{4}\]\s+40\s+40", out
    )
    assert "vs reference on 40 shared tasks" in out
    assert "40 samples: 40 generated, 0 from cache" in err
    assert (REPO / "demo-out" / "pass1.png").read_bytes()[:4] == b"\x89PNG"
    # Run again: every generation from the cache, and the output says so.
    again = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, timeout=600)
    assert again.returncode == 0
    assert "40 samples: 0 generated, 40 from cache" in again.stderr.decode()
    gen = [
        orjson.loads(x)
        for x in (REPO / "demo-out" / "gemma3-270m.gen.jsonl").read_bytes().splitlines()
    ]
    assert len(gen) == 40 and all(r["cached"] for r in gen)
