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
    check_demo_report(REPO / "demo-out" / "report.html", tmp_path)
    # Run again: every generation from the cache, and the output says so.
    again = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, timeout=600)
    assert again.returncode == 0
    assert "40 samples: 0 generated, 40 from cache" in again.stderr.decode()
    gen = [
        orjson.loads(x)
        for x in (REPO / "demo-out" / "gemma3-270m.gen.jsonl").read_bytes().splitlines()
    ]
    assert len(gen) == 40 and all(r["cached"] for r in gen)


def check_demo_report(report, tmp_path):
    """make demo's report.html, rendered in a real headless Chromium: a click into a task, a screenshot."""
    from chromium import Browser

    with Browser() as b:
        b.open(report.as_uri())
        assert b.requests() == [report.as_uri()]  # self-contained
        assert b.eval("document.title") == "llmeval report: gemma3-270m, reference"
        assert b.eval("document.querySelectorAll('#matrix-humaneval tbody tr').length") == 40
        assert b.eval("document.querySelectorAll('#matrix-humaneval td.c.pass[data-col=reference]').length") == 40
        b.click("#matrix-humaneval td.c[data-col='gemma3-270m']")
        assert b.eval("document.getElementById('drill').hidden") is False
        task = b.eval("document.getElementById('drill-title').textContent")
        assert task.startswith("humaneval/HumanEval/")
        completion = b.eval(
            "document.querySelector(\"#drill .sample[data-col='gemma3-270m'] pre.completion\").textContent"
        )
        gen = {
            r["id"]: r["completion"]
            for r in map(orjson.loads, (report.parent / "gemma3-270m.scored.jsonl").read_bytes().splitlines())
        }
        assert completion == gen[task]
        png = b.screenshot(full_page=False)
    (tmp_path / "demo-report.png").write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
