"""llmeval/vocab.py: the record vocabulary is the one docs/records.md documents."""

import re
from pathlib import Path

from llmeval import vocab

DOC = (Path(__file__).resolve().parent.parent / "docs" / "records.md").read_text()


def test_statuses_are_the_documented_ones():
    table = DOC.split("| status | meaning |")[1].split("\n\n")[0]
    assert tuple(re.findall(r"^\| `(\w+)` \|", table, re.M)) == vocab.STATUSES


def test_scorers_and_finish_reasons_are_documented():
    scorer_row = next(line for line in DOC.splitlines() if line.startswith("| `scorer` |"))
    assert re.findall(r"`(\w+)`", scorer_row)[1:] == list(vocab.SCORERS)
    finish_row = next(line for line in DOC.splitlines() if line.startswith("| `finish_reason` |"))
    words = [w for w in re.findall(r"`(\w+)`", finish_row)[1:] if w != "max_tokens"]
    assert words == list(vocab.FINISH_REASONS)
    assert set(vocab.TEST_STYLES) <= set(re.findall(r'`"(\w+)"`', DOC))
