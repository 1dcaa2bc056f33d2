"""The record vocabulary: the words records use, beside the contract in docs/records.md.

Compare against these constants, never against string literals spread over
the code. :mod:`llmeval.records` validates fields by the types listed there.
"""

from __future__ import annotations

# Score statuses (docs/records.md, "eval-score").
PASS = "pass"
FAIL = "fail"
TIMEOUT = "timeout"
ERROR = "error"
NO_ANSWER = "no_answer"
STATUSES = (PASS, FAIL, TIMEOUT, ERROR, NO_ANSWER)

# Scorers a prompt record may name (docs/records.md, "eval-resolve").
CODE_EXEC = "code_exec"
EXACT_MATCH = "exact_match"
MULTIPLE_CHOICE = "multiple_choice"
SCORERS = (CODE_EXEC, EXACT_MATCH, MULTIPLE_CHOICE)

# How a generation ended (docs/records.md, "eval-generate").
FINISH_STOP = "stop"  # EOS or a stop sequence
FINISH_LENGTH = "length"  # hit max_tokens
FINISH_ERROR = "error"  # the sample failed; its record carries "error"
FINISH_LOGLIKELIHOOD = "loglikelihood"  # choices scored by log-likelihood, nothing generated
FINISH_REASONS = (FINISH_STOP, FINISH_LENGTH, FINISH_ERROR, FINISH_LOGLIKELIHOOD)

# Styles of code_exec tests (docs/records.md, reference.style).
STYLE_HUMANEVAL = "humaneval"  # test defines check(candidate)
STYLE_ASSERTS = "asserts"  # assert lines, MBPP's
TEST_STYLES = (STYLE_HUMANEVAL, STYLE_ASSERTS)

# Record types of eval-aggregate's output and of run/heartbeat files.
TYPE_METRIC = "metric"
TYPE_COMPARISON = "comparison"
TYPE_LEADERBOARD = "leaderboard"
TYPE_RUN = "run"
TYPE_METRICS = "metrics"
