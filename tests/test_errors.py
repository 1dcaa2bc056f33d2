"""llmeval/errors.py: the error types and the exit codes the harness gives them."""

import pytest

from llmeval import cli
from llmeval.errors import DataError, StageError, UsageError, missing_dependency


class Failing(cli.Command):
    prog = "eval-test"
    inputs = None
    output = None
    limit = None
    error: BaseException = RuntimeError("boom")

    def run(self) -> int:
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (DataError("f.jsonl:3", 'field "x" must be a string'), 1,
         'eval-test: error: f.jsonl:3: field "x" must be a string'),
        (StageError("backend refused"), 1, "eval-test: error: backend refused"),
        (UsageError("-o is an input"), 2, "eval-test: error: -o is an input"),
        (missing_dependency("scipy", "stats"), 1,
         "eval-test: error: scipy is not installed: pip install 'llmeval[stats]' (or: pip install scipy)"),
        (RuntimeError("bug"), 1,
         "eval-test: error: RuntimeError: bug (run with -v for the traceback)"),
        (KeyboardInterrupt(), 130, "eval-test: interrupted"),
    ],
)
def test_each_error_is_one_line_and_its_exit_code(capsys, error, code, line):
    cmd = Failing()
    cmd.error = error
    assert cmd.main([]) == code
    err = capsys.readouterr().err
    assert err == line + "\n"


def test_verbose_adds_the_traceback(capsys):
    cmd = Failing()
    cmd.error = StageError("backend refused")
    assert cmd.main(["-v"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("eval-test: error: backend refused\n")


def test_data_error_keeps_where_and_reason():
    e = DataError("in.jsonl:2", "invalid JSON")
    assert (e.where, e.reason, str(e)) == ("in.jsonl:2", "invalid JSON", "in.jsonl:2: invalid JSON")
    assert isinstance(UsageError("x"), StageError)
