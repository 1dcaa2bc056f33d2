import gzip
import os
import subprocess
import sys

import orjson
import pytest

from llmeval.errors import DataError
from llmeval.records import (
    AppendWriter,
    existing_values,
    heal_torn_tail,
    read_records,
)


def test_reads_plain_and_gzip(tmp_path):
    rows = [{"a": 1}, {"b": "x"}]
    plain = tmp_path / "r.jsonl"
    plain.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"\n")
    gz = tmp_path / "r.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(plain.read_bytes())
    assert list(read_records(plain)) == rows
    assert list(read_records(gz)) == rows


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(DataError) as exc:
        list(read_records(p))
    assert str(exc.value).startswith(f"{p}:2: invalid JSON")


def test_non_object_line_is_an_error(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r":2: expected a JSON object, got list"):
        list(read_records(p))


def test_torn_tail_tolerated_only_when_asked_and_only_at_the_end(tmp_path):
    p = tmp_path / "torn.jsonl"
    p.write_text('{"key": "a"}\n{"key": "b"}\n{"key": "c", "comp')
    assert existing_values(p) == {"a", "b"}
    with pytest.raises(DataError, match=":3:"):
        list(read_records(p))
    # A torn line in the middle is corruption, not a crash artefact.
    p.write_text('{"key": "a"}\n{"key": "b", "x\n{"key": "c"}\n')
    with pytest.raises(DataError, match=":2:"):
        existing_values(p)


def test_heal_cuts_partial_last_line(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_bytes(b'{"k": 1}\n{"k": 2}\n{"k": 3, "tr')
    assert heal_torn_tail(p) == len(b'{"k": 3, "tr')
    assert p.read_bytes() == b'{"k": 1}\n{"k": 2}\n'
    assert heal_torn_tail(p) == 0
    p.write_bytes(b"no newline at all")
    assert heal_torn_tail(p) == len(b"no newline at all")
    assert p.read_bytes() == b""


def test_append_writer_heals_then_appends_complete_lines(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_bytes(b'{"k": 1}\n{"k": 2, "half')
    with AppendWriter(p) as w:
        assert w.healed == len(b'{"k": 2, "half')
        w.write({"k": 2})
        w.write({"k": 3, "s": "caf\u00e9\n"})
    assert [r["k"] for r in read_records(p)] == [1, 2, 3]
    assert p.read_bytes().endswith(b"\n")


def test_killed_writer_leaves_only_complete_lines_after_heal(tmp_path):
    """A writer killed with SIGKILL mid-stream: after healing, every line parses."""
    p = tmp_path / "out.jsonl"
    code = (
        "import sys; from llmeval.records import AppendWriter\n"
        f"w = AppendWriter({str(p)!r}, fsync_interval=-1)\n"
        "i = 0\n"
        "while True:\n"
        "    w.write({'i': i, 'pad': 'x' * 5000}); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    while not p.exists() or p.stat().st_size < 2_000_000:
        pass
    proc.kill()
    proc.wait()
    heal_torn_tail(p)
    values = [r["i"] for r in read_records(p)]
    assert values == list(range(len(values)))
    assert len(values) > 300


def test_concurrent_appenders_never_interleave(tmp_path):
    p = tmp_path / "shared.jsonl"
    code = (
        "import sys; from llmeval.records import AppendWriter\n"
        f"w = AppendWriter({str(p)!r}, fsync_interval=-1)\n"
        "for i in range(2000): w.write({'w': sys.argv[1], 'i': i, 'pad': 'y' * 3000})\n"
        "w.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(3)]
    assert [proc.wait() for proc in procs] == [0, 0, 0]
    rows = list(read_records(p))
    assert len(rows) == 6000
    for n in range(3):
        assert [r["i"] for r in rows if r["w"] == str(n)] == list(range(2000))


def test_stdin_writer_does_not_touch_files(tmp_path, capfd):
    w = AppendWriter("-")
    w.write({"x": 1})
    w.close()
    assert capfd.readouterr().out == '{"x":1}\n'
    assert os.listdir(tmp_path) == []
