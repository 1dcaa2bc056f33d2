"""llmeval/html_report.py: the self-contained HTML report, checked in a real headless Chromium."""

import html.parser
import random
import subprocess

import numpy as np
import orjson
import pytest
import trees
from chromium import Browser
from conftest import run_cmd

from llmeval.html_report import SampleKeeper, _json_for_script

HOSTILE_TASKS = {}  # task id -> the hostile completion the "evil" model wrote for it


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two real campaigns (tests/trees.py): real prompts, real Gemma outputs, real verdicts."""
    return trees.build(tmp_path_factory)


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    proc = run_cmd(
        [
            "eval-aggregate",
            str(results / "spring"),
            str(results / "summer"),
            "--format",
            "html",
            "--samples",
            "2",
            "-o",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr.decode()
    jsonl = run_cmd(["eval-aggregate", str(results / "spring"), str(results / "summer")])
    summary = [orjson.loads(x) for x in jsonl.stdout.splitlines()]
    evil = [
        orjson.loads(x)
        for d in ("humaneval", "gsm8k")
        for x in (results / "spring" / "evil" / f"{d}.scored.jsonl").read_bytes().splitlines()
    ]
    HOSTILE_TASKS.update({r["id"]: r["completion"] for r in evil})
    return out, summary


# ---------------------------------------------------------------------------- without a browser


def test_json_in_a_script_block_cannot_end_it():
    data = {"t": "</script><script>alert(1)</script> <!-- \u2028\u2029 & </textarea>"}
    text = _json_for_script(data)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert orjson.loads(text) == data


def test_sample_keeper_keeps_the_lowest_samples_whatever_the_order():
    recs = [
        {"id": f"d/{t}", "model": "m", "dataset": "d", "sample": s, "prompt": "p" * 50,
         "completion": f"c{s}" + "x" * 100, "score": {"status": "fail", "detail": "y" * 100}}
        for t in range(3)
        for s in range(10)
    ]  # fmt: skip
    kept = []
    for seed in (1, 2):
        shuffled = recs[:]
        random.Random(seed).shuffle(shuffled)
        keeper = SampleKeeper(["model", "dataset"], per_task=2, text_cap=20)
        list(keeper.tee((f"x:{i}", r) for i, r in enumerate(shuffled)))
        kept.append(keeper.samples)
    assert kept[0] == kept[1]
    cell = kept[0][(("m", "d"), "d/1")]
    assert [s["sample"] for s in cell] == [0, 1]
    assert cell[0]["completion"].startswith("c0" + "x" * 18 + "\n… [82 more characters")


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "action", "srcset", "data") or (v or "").startswith("http"):
                self.refs.append((tag, k, v))


def test_the_report_needs_nothing_outside_itself(report):
    path, _ = report
    text = path.read_text()
    parser = Links()
    parser.feed(text)
    # Only in-page anchors; no stylesheet, script, image or font from anywhere.
    assert all(k == "href" and v.startswith("#") for _, k, v in parser.refs), parser.refs
    assert "link" not in parser.tags and "img" not in parser.tags and "iframe" not in parser.tags
    assert parser.tags.count("script") == 2 and parser.tags.count("svg") >= 4
    assert "http://" not in text and "https://" not in text
    # The hostile completions are nowhere as markup: only inside the escaped JSON block.
    assert "window.__pwned" in text and "<script>window" not in text and "<img" not in text


def test_the_same_inputs_give_the_same_bytes(report, results, tmp_path):
    path, _ = report
    again = tmp_path / "again.html"
    proc = run_cmd(
        ["eval-aggregate", str(results / "summer"), str(results / "spring"), "--format", "html",
         "--samples", "2", "-o", str(again)]
    )  # fmt: skip
    assert proc.returncode == 0
    assert again.read_bytes() == path.read_bytes()


# ---------------------------------------------------------------------------- in Chromium


def visible_rows(b, table_id):
    return b.eval(
        f"Array.prototype.filter.call(document.getElementById('{table_id}').tBodies[0].rows,"
        "function(r){return !r.hidden;}).map(function(r){return r.cells[0].textContent;})"
    )


def test_report_in_chromium(report, tmp_path):
    path, summary = report
    metric = {
        (r["model"], r["dataset"], r["metric"]): r for r in summary if r["type"] == "metric"
    }
    with Browser() as b:
        b.open(path.as_uri())
        # Nothing but the file itself was requested, and no hostile text ran.
        assert b.requests() == [path.as_uri()]
        assert b.eval("typeof window.__pwned") == "undefined"
        assert b.eval("document.scripts.length") == 2
        assert b.eval("document.images.length") == 0
        assert b.eval("document.title") == "llmeval report: evil, gemma-greedy, gemma-t0.8"

        # Every model's metrics with their intervals, as eval-aggregate computed them.
        rows = b.eval(
            "Array.prototype.map.call(document.querySelectorAll('#results-coding-humaneval tbody tr'),"
            "function(r){return [r.cells[0].textContent, r.cells[1].textContent];})"
        )
        expected = []
        for model in ("evil", "gemma-greedy", "gemma-t0.8"):
            r = metric[(model, "humaneval", "pass@1")]
            expected.append(
                [model, f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"]
            )
        assert rows == expected
        assert rows[1][1] == "0.556 [0.222, 0.889]"

        # The leaderboard: three scopes, ranks with intervals; gemma-t0.8 has no gsm8k.
        assert b.eval("document.querySelectorAll('#leaderboard table').length") == 3
        board = b.eval(
            "Array.prototype.map.call(document.querySelectorAll('#board-all tbody tr'),"
            "function(r){return [r.cells[0].textContent, r.cells[1].textContent, r.cells[2].textContent];})"
        )
        assert board == [["1", "1-1", "gemma-greedy"], ["2", "2-2", "evil"],
                         ["-", "not ranked", "gemma-t0.8"]]  # fmt: skip

        # Sorting: a click on a header sorts by it, a second click reverses.
        b.click("#results-coding-humaneval thead th:nth-child(2)")
        assert visible_rows(b, "results-coding-humaneval") == ["evil", "gemma-t0.8", "gemma-greedy"]
        b.click("#results-coding-humaneval thead th:nth-child(2)")
        assert visible_rows(b, "results-coding-humaneval")[0] == "gemma-greedy"

        # Filtering by text, and the matrix's "every model fails".
        b.type_text("input[data-table='comparisons-table']", "gemma-t0.8")
        assert len(visible_rows(b, "comparisons-table")) == 2
        b.eval(
            "var s=document.querySelector(\"select[data-table='matrix-humaneval']\");"
            "s.value='all-fail';s.dispatchEvent(new Event('change'))"
        )
        assert visible_rows(b, "matrix-humaneval") == [
            f"humaneval/HumanEval/{t}" for t in (0, 1, 2, 46)
        ]

        # The matrix: 9 tasks x 3 models; greedy Gemma passes 5 of them.
        assert b.eval("document.querySelectorAll('#matrix-humaneval td.c').length") == 27
        passes = b.eval(
            "Array.prototype.map.call(document.querySelectorAll('#matrix-humaneval td.c.pass'),"
            "function(td){return td.getAttribute('data-col')+' '+td.getAttribute('data-task');})"
        )
        assert sorted(passes) == sorted(
            f"gemma-greedy {t}" for t in trees.GREEDY_PASSES if t.startswith("humaneval")
        )

        # Drill down: a real click on the hostile model's cell shows its completion as text.
        task = "humaneval/HumanEval/0"
        hostile = HOSTILE_TASKS[task]
        assert "<" in hostile
        assert b.eval("document.getElementById('drill').hidden") is True
        b.click(f"#matrix-humaneval td.c[data-col='evil'][data-task='{task}']")
        assert b.eval("document.getElementById('drill').hidden") is False
        assert b.eval("document.getElementById('drill-title').textContent") == task
        prompt = b.eval("document.getElementById('drill-prompt').textContent")
        assert prompt.startswith("from typing import List") and "has_close_elements" in prompt
        first = b.eval(
            "(function(){var s=document.querySelector('#drill-samples .sample');"
            "return [s.getAttribute('data-col'), s.querySelector('.badge').textContent,"
            "s.querySelector('pre.completion').textContent];})()"
        )
        assert first == ["evil", "fail", hostile]
        assert b.eval("document.querySelectorAll('#drill script, #drill img, #drill textarea').length") == 0
        assert b.eval("typeof window.__pwned") == "undefined"
        # ... and every model's sample for that task, with its verdict detail.
        heads = b.eval(
            "Array.prototype.map.call(document.querySelectorAll('#drill-samples h4'),"
            "function(h){return h.textContent;})"
        )
        assert heads == ["evil: 1 of 1 samples shown", "gemma-greedy: 1 of 1 samples shown",
                         "gemma-t0.8: 1 of 1 samples shown"]  # fmt: skip
        details = b.eval(
            "Array.prototype.map.call(document.querySelectorAll('#drill .sample'),"
            "function(s){var d=s.querySelector('pre.detail');return d?d.textContent:null;})"
        )
        assert details[0].startswith("the code does not load: SyntaxError")
        assert details[1].startswith("assertion failed: assert candidate(")
        png = b.screenshot(full_page=False)

        # Every kind of hostile completion (</script>, </textarea>, an onerror image, <!--,
        # U+2028) reaches the page as the very text the model wrote, and nothing runs.
        by_text = {}
        for t, text in sorted(HOSTILE_TASKS.items()):
            by_text.setdefault(text, t)
        assert sorted(by_text) == sorted(trees.HOSTILE)
        b.eval(
            "var s=document.querySelector(\"select[data-table='matrix-humaneval']\");"
            "s.value='';s.dispatchEvent(new Event('change'))"
        )
        assert len(visible_rows(b, "matrix-humaneval")) == 9
        for text, t in by_text.items():
            ds = t.split("/")[0]
            b.click(f"#matrix-{ds} td.c[data-col='evil'][data-task='{t}']")
            shown = b.eval(
                "document.querySelector(\"#drill .sample[data-col='evil'] pre.completion\").textContent"
            )
            assert shown == text
        assert b.eval("typeof window.__pwned") == "undefined"
        assert b.eval("document.scripts.length") == 2 and b.eval("document.images.length") == 0

        # Extraction health and provenance.
        health = b.eval(
            "Array.prototype.map.call(document.querySelectorAll('#health-table tbody tr'),"
            "function(r){return [r.cells[0].textContent, r.cells[1].textContent, r.cells[5].textContent];})"
        )
        assert ["gemma-greedy", "gsm8k", "1"] in health  # "I do not know." has no number
        runs = b.eval("document.getElementById('runs-table').textContent")
        assert "4240_1 (job 4242)" in runs and "node1.cluster" in runs
        assert "NVIDIA H100 80GB HBM3" in runs and "generate-summer-gemma-t0.8-humaneval" in runs

    (tmp_path / "report.png").write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(str(tmp_path / "report.png"))
    assert img.shape[:2] == (1000, 1400)
    colors = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colors) > 50  # text, tables, the matrix's colours, the drill-down
    # The drill-down panel (right side) is drawn over the page: it is not blank.
    right = img[100:900, 900:1380, :3]
    assert right.std() > 0.05


def test_chromium_is_really_headless_chromium():
    from chromium import chromium_path

    version = subprocess.run([chromium_path(), "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("Chromium ")
