"""The command harness (llmeval/cli.py): shared flags, inputs, outputs, errors, exit codes.

Each rough edge a new user hit is a test here, run through the real commands
(subprocess) so the stderr line and the exit status are the ones people see.
"""

import gzip
import os

import orjson
import pytest
from conftest import FIXTURES, run_cmd

import llmeval
from llmeval import cli

COMMANDS = [
    "eval-resolve",
    "eval-generate",
    "eval-score",
    "eval-aggregate",
    "eval-monitor",
    "eval-campaign",
]


def write_jsonl(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def lines(data: bytes):
    return [orjson.loads(x) for x in data.splitlines() if x.strip()]


def gsm8k_generated(tmp_path, n=2):
    """Generation records (reference backend: each task's own answer) for a few GSM8K tasks."""
    prompts = tmp_path / "prompts.jsonl"
    out = run_cmd(
        ["eval-resolve", "gsm8k", "--data-dir", str(FIXTURES), "--limit", str(n), "-o", str(prompts)]
    )
    assert out.returncode == 0, out.stderr
    gen = tmp_path / "gen.jsonl"
    out = run_cmd(
        ["eval-generate", str(prompts), "--backend", "reference", "--model", "ref", "-o", str(gen)]
    )
    assert out.returncode == 0, out.stderr
    return prompts, gen


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_version_and_help(command):
    out = run_cmd([command, "--version"])
    assert out.returncode == 0
    assert out.stdout.decode() == f"{command} (llmeval) {llmeval.__version__}\n"
    out = run_cmd([command, "--help"])
    assert out.returncode == 0
    text = out.stdout.decode()
    assert "-v, --verbose" in text and "show tracebacks" in text and "debug" not in text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", 12345, 'field "prompt" must be a string or null, got int 12345'),
        ("sample", "abc", "field \"sample\" must be an integer >= 0, got str 'abc'"),
        ("completion", ["x"], 'field "completion" must be a string or null, got list'),
        ("scorer", "regex", 'field "scorer" must be one of code_exec, exact_match, multiple_choice'),
        ("reference", "42", 'field "reference" must be an object, got str'),
    ],
)
def test_score_wrong_type_names_file_line_and_field(tmp_path, field, value, message):
    _, gen = gsm8k_generated(tmp_path)
    recs = lines(gen.read_bytes())
    recs[1][field] = value
    bad = write_jsonl(tmp_path / "bad.jsonl", recs)
    out_file = tmp_path / "scored.jsonl"
    out_file.write_bytes(b'{"kept": 1}\n')
    out = run_cmd(["eval-score", str(bad), "-o", str(out_file)])
    assert out.returncode == 1
    stderr = out.stderr.decode()
    assert stderr.splitlines()[-1].startswith(f"eval-score: error: {bad}:2: {message}")
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1
    # the first (good) record may be scored, the file keeps what it had
    assert out_file.read_bytes().startswith(b'{"kept": 1}\n')


def test_score_wrong_reference_field_type(tmp_path):
    _, gen = gsm8k_generated(tmp_path)
    recs = lines(gen.read_bytes())
    recs[0]["reference"]["answer"] = [1, 2]
    bad = write_jsonl(tmp_path / "bad.jsonl", recs)
    out = run_cmd(["eval-score", str(bad)])
    assert out.returncode == 1
    assert out.stderr.decode() == (
        f'eval-score: error: {bad}:1: field "reference.answer" must be a string or a number, '
        "got list\n"
    )


def test_generate_wrong_type_names_file_line_and_field(tmp_path):
    prompts, _ = gsm8k_generated(tmp_path)
    recs = lines(prompts.read_bytes())
    recs[1]["stop"] = "\n"
    bad = write_jsonl(tmp_path / "bad.jsonl", recs)
    out = run_cmd(["eval-generate", str(bad), "--backend", "reference", "--model", "ref"])
    assert out.returncode == 1
    assert out.stderr.decode().splitlines()[-1] == (
        f"eval-generate: error: {bad}:2: field \"stop\" must be a list of strings, got str '\\n'"
    )


def test_aggregate_wrong_status_names_file_line_and_field(tmp_path):
    bad = write_jsonl(
        tmp_path / "s.jsonl", [{"model": "m", "dataset": "d", "id": "d/1", "score": {"status": 1}}]
    )
    out = run_cmd(["eval-aggregate", str(bad)])
    assert out.returncode == 1
    assert out.stderr.decode().startswith(
        f'eval-aggregate: error: {bad}:1: field "score.status" must be one of pass, fail'
    )


@pytest.mark.parametrize("command", ["eval-score", "eval-generate"])
def test_output_onto_an_input_is_refused(tmp_path, command):
    prompts, gen = gsm8k_generated(tmp_path)
    target = gen if command == "eval-score" else prompts
    before = target.read_bytes()
    extra = ["--backend", "reference", "--model", "ref"] if command == "eval-generate" else []
    out = run_cmd([command, "-o", str(target), str(target), *extra])
    assert out.returncode == 2
    assert out.stderr.decode() == (
        f"{command}: error: -o {target} is also an input ({target}); "
        "write the output to another file\n"
    )
    assert target.read_bytes() == before
    # the same file arriving on stdin is caught too
    with open(target, "rb") as fh:
        import subprocess
        import sys

        from conftest import BIN

        res = subprocess.run(
            [sys.executable, str(BIN / command), "-o", str(target), *extra],
            stdin=fh,
            capture_output=True,
        )
    assert res.returncode == 2 and b"is also an input (stdin)" in res.stderr
    assert target.read_bytes() == before


@pytest.mark.parametrize("command", ["eval-resolve", "eval-generate", "eval-score"])
def test_output_to_dev_null(tmp_path, command):
    prompts, gen = gsm8k_generated(tmp_path)
    args = {
        "eval-resolve": ["gsm8k", "--data-dir", str(FIXTURES)],
        "eval-generate": [str(prompts), "--backend", "reference", "--model", "ref"],
        "eval-score": [str(gen)],
    }[command]
    out = run_cmd([command, *args, "-o", "/dev/null"])
    assert out.returncode == 0, out.stderr
    assert out.stdout == b""
    assert not os.path.exists("/dev/null.metrics.json")


def test_gzip_output_is_gzip_and_resumes(tmp_path):
    prompts, gen = gsm8k_generated(tmp_path, n=3)
    out_gz = tmp_path / "scored.jsonl.gz"
    out = run_cmd(["eval-score", str(gen), "-o", str(out_gz)])
    assert out.returncode == 0, out.stderr
    first = lines(gzip.decompress(out_gz.read_bytes()))
    assert len(first) == 3 and all(r["score"]["status"] == "pass" for r in first)
    # a killed run leaves a torn member: the resumed run heals it and adds only what is missing
    data = out_gz.read_bytes()
    out_gz.write_bytes(data[:-12])  # the last member loses its trailer: torn
    out = run_cmd(["eval-score", str(gen), "-o", str(out_gz)])
    assert out.returncode == 0, out.stderr
    assert "2 already in output" in out.stderr.decode()
    again = lines(gzip.decompress(out_gz.read_bytes()))
    assert [r["key"] for r in again] == [r["key"] for r in first]
    # and eval-aggregate reads it
    out = run_cmd(["eval-aggregate", str(out_gz)])
    assert out.returncode == 0, out.stderr
    (acc,) = [r for r in lines(out.stdout) if r["metric"] == "accuracy"]
    assert acc["value"] == 1.0 and acc["n_tasks"] == 3


def test_resolve_twice_into_the_same_file_adds_nothing(tmp_path):
    target = tmp_path / "prompts.jsonl"
    for _ in range(2):
        out = run_cmd(["eval-resolve", "gsm8k", "--data-dir", str(FIXTURES), "-o", str(target)])
        assert out.returncode == 0, out.stderr
    ids = [r["id"] for r in lines(target.read_bytes())]
    assert len(ids) == len(set(ids)) == 3
    assert out.stderr.decode() == f"eval-resolve: 0 records written, 3 already in {target}\n"


def test_empty_input_to_aggregate_names_it(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    out = run_cmd(["eval-aggregate", str(empty)])
    assert out.returncode == 1
    assert out.stderr.decode() == f"eval-aggregate: error: no scored records in {empty}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["eval-score", "{missing}"],
        ["eval-generate", "{missing}", "--backend", "reference", "--model", "ref"],
        ["eval-aggregate", "{missing}"],
        ["eval-resolve", "{missing}"],
    ],
)
def test_missing_file_is_one_line(tmp_path, args):
    missing = str(tmp_path / "nope.jsonl")
    out = run_cmd([a.replace("{missing}", missing) for a in args])
    assert out.returncode == 1
    assert out.stderr.decode() == f"{args[0]}: error: {missing}: no such file\n"


def test_monitor_on_a_missing_directory_is_an_error(tmp_path):
    out = run_cmd(["eval-monitor", str(tmp_path / "nope"), "--once"])
    assert out.returncode == 1
    assert out.stderr.decode() == (
        f"eval-monitor: error: {tmp_path / 'nope'}: no such directory "
        "(give a run or campaign directory)\n"
    )


def test_compare_without_scipy_says_what_to_install(tmp_path):
    import subprocess
    import sys

    _, gen = gsm8k_generated(tmp_path)
    rows = [dict(r, score={"status": "pass"}) for r in lines(gen.read_bytes())]
    rows += [dict(r, model="other", score={"status": "fail"}) for r in rows]
    scored = write_jsonl(tmp_path / "s.jsonl", rows)
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from llmeval.aggregate import main\n"
        f"sys.exit(main([{str(scored)!r}, '--compare']))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert res.returncode == 1
    assert res.stderr.decode() == (
        "eval-aggregate: error: scipy is not installed: pip install 'llmeval[stats]' "
        "(or: pip install scipy)\n"
    )


def test_campaign_step_without_dataset_is_a_usage_error(tmp_path):
    camp = tmp_path / "c.toml"
    camp.write_text('name = "c"\ndatasets = ["gsm8k"]\n[[models]]\nmodel = "ref"\nbackend = "reference"\n')
    out = run_cmd(["eval-campaign", "step", str(camp), "--stage", "resolve"])
    assert out.returncode == 2
    assert out.stderr.decode() == "eval-campaign: error: step --stage resolve needs --dataset NAME\n"


def test_available_cpus_follow_the_allocation(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cli.available_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert cli.available_cpus() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "junk")
    assert cli.available_cpus() == len(os.sched_getaffinity(0))


def test_score_workers_default_to_the_job_allocation(tmp_path):
    _, gen = gsm8k_generated(tmp_path)
    out_file = tmp_path / "scored.jsonl"
    out = run_cmd(
        ["eval-score", str(gen), "-o", str(out_file), "--workers", "0"],
        env={"SLURM_CPUS_PER_TASK": "1"},
    )
    assert out.returncode == 0, out.stderr
    (run,) = lines((tmp_path / "scored.jsonl.runs.jsonl").read_bytes())
    assert run["sandbox"]["workers"] == 1


def test_count_input_lines(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"{}\n{}\n{}")  # last line without its newline still counts
    b = tmp_path / "b.jsonl"
    b.write_bytes(b"{}\n")
    assert cli.count_input_lines([str(a), str(b)]) == 4
    assert cli.count_input_lines([str(a)], limit=2) == 2
    assert cli.count_input_lines([]) is None  # stdin: unknown
    assert cli.count_input_lines([str(a) + ".gz"]) is None


def test_usage_errors_exit_2_and_bad_values_are_refused():
    out = run_cmd(["eval-aggregate", "--ci-level", "95"])
    assert out.returncode == 2
    assert "expected a number between 0 and 1, got '95'" in out.stderr.decode()
    out = run_cmd(["eval-score", "--timeout", "-1"])
    assert out.returncode == 2
    out = run_cmd(["eval-resolve"])
    assert out.returncode == 2
    assert out.stderr.decode() == (
        "eval-resolve: error: name a dataset, a file or --category (see --list)\n"
    )
