"""eval-score: generation records -> the same records with a ``score`` (docs/records.md).

    eval-resolve humaneval | eval-generate --model gemma3-270m | eval-score | eval-aggregate

Code is run in the sandbox (:mod:`llmeval.sandbox`, design in docs/sandbox.md)
by a pool of warm workers; math and multiple-choice answers are extracted and
compared in-process. Output keeps the input order. With ``-o OUT`` a re-run
scores only the records whose identity (``key``, else ``id`` and ``sample``)
is not in OUT yet.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from llmeval import cli
from llmeval.datasets import CODE_EXEC, EXACT_MATCH, SCORERS
from llmeval.extract import extract_choice, extract_number, normalize_number, sanitize_code
from llmeval.records import ERROR, FAIL, NO_ANSWER, PASS, STATUSES, TIMEOUT, DataError, Record

PROG = "eval-score"
SANITIZE = ("auto", "always", "never")

EPILOG = """\
examples:
  eval-resolve humaneval --limit 4 | eval-generate --model gemma3-270m | eval-score | jq -c .score
  eval-score gen.jsonl -o scored.jsonl --workers 8 --timeout 10     # resumable
  eval-score gen.jsonl --sanitize always    # extract code from chat answers (fences, prose)

Statuses: pass, fail, timeout, error (generation failed or the sandbox could not
run it), no_answer (no number / letter found). Exit status 0 whatever the
verdicts; 1 for malformed input.
"""


def identity(rec: Record) -> str:
    """What makes a scored record unique in an output file (resume)."""
    key = rec.get("key")
    return key if isinstance(key, str) else f"{rec.get('id')}#{rec.get('sample', 0)}"


def build_program(where: str, rec: Record, sanitize: str) -> tuple[Any, str | None]:
    """The sandbox program for a code_exec record, and the sanitized code when it differs."""
    from llmeval.sandbox import Program

    ref = rec["reference"]
    for field in ("entry_point", "test"):
        if not isinstance(ref.get(field), str):
            raise DataError(where, f'field "reference.{field}" must be a string (code_exec)')
    completion = rec["completion"]
    use_sanitizer = sanitize == "always" or (
        sanitize == "auto" and (rec.get("messages") is not None or "```" in completion)
    )
    sanitized = sanitize_code(completion, ref["entry_point"]) if use_sanitizer else completion
    prompt = rec.get("prompt") or ""
    style = ref.get("style", "humaneval")
    setup = ref.get("setup") or ""
    if ref.get("prompt_is_code", style == "humaneval"):
        # A chat answer restates the whole function: the prompt's code first, then the answer.
        code = prompt + ("\n" + sanitized if use_sanitizer else sanitized)
        trusted = prompt + ("\n" + setup if setup else "")
    else:
        code = sanitized + ("\n" + setup if setup else "")
        trusted = setup
    program = Program(
        code=code, entry_point=ref["entry_point"], test=ref["test"], style=style, trusted=trusted
    )
    return program, (sanitized if use_sanitizer and sanitized != completion else None)


def score_answer(rec: Record) -> dict[str, Any]:
    """exact_match and multiple_choice, in-process."""
    ref, completion, scorer = rec["reference"], rec["completion"], rec["scorer"]
    if scorer == EXACT_MATCH:
        expected = normalize_number(str(ref.get("answer", "")))
        extracted = extract_number(completion)
        if extracted is None:
            return {
                "status": NO_ANSWER,
                "extracted": None,
                "expected": expected,
                "detail": "no number found",
            }
        ok = expected is not None and extracted == expected
        if expected is None:  # a non-numeric gold answer: compare text, case and space folded
            expected = str(ref.get("answer", "")).strip()
            ok = " ".join(completion.split()).lower().endswith(" ".join(expected.split()).lower())
        return {
            "status": PASS if ok else FAIL,
            "extracted": extracted,
            "expected": expected,
            "detail": None,
        }
    choices = ref.get("choices")
    extracted = extract_choice(completion, len(choices) if isinstance(choices, list) else 4)
    expected = ref.get("label")
    if extracted is None:
        return {
            "status": NO_ANSWER,
            "extracted": None,
            "expected": expected,
            "detail": "no choice letter found",
        }
    return {
        "status": PASS if extracted == expected else FAIL,
        "extracted": extracted,
        "expected": expected,
        "detail": None,
    }


def _check(where: str, rec: Record) -> None:
    scorer = rec.get("scorer")
    if scorer not in SCORERS:
        raise DataError(
            where, f'field "scorer" must be one of {", ".join(SCORERS)}, got {scorer!r}'
        )
    if not isinstance(rec.get("reference"), dict):
        raise DataError(where, 'no field "reference" (an object); records come from eval-resolve')
    if "completion" not in rec:
        raise DataError(where, 'no field "completion"; score the output of eval-generate')
    if rec.get("completion") is None and not rec.get("error"):
        raise DataError(where, 'field "completion" is null but the record has no "error"')
    if rec["completion"] is not None and not isinstance(rec["completion"], str):
        raise DataError(where, 'field "completion" must be a string')
    if "score" in rec:
        raise DataError(
            where, 'the record is already scored (field "score"); score the generation file'
        )


class Counts:
    def __init__(self) -> None:
        self.by_status = dict.fromkeys(STATUSES, 0)
        self.total = 0
        self.skipped = 0
        self.datasets: set[str] = set()
        self.models: set[str] = set()


class LazyPool:
    """Starts the sandbox pool only when the first code record arrives. ``hide``: the run's
    own files (inputs, outputs), kept from candidates even where they would be visible."""

    def __init__(self, workers: int, limits: Any, log: Any, hide: Iterable[str] = ()):
        self.workers, self.limits, self.log = workers, limits, log
        self.hide = [p for p in hide if p]
        self.pool: Any = None

    def map(self, jobs: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        it = iter(jobs)
        first = next(it, None)
        if first is None:
            return
        from itertools import chain

        from llmeval.sandbox import SandboxPool

        self.pool = SandboxPool(self.workers, self.limits, hide=self.hide)
        self.log(self.pool.description)
        yield from self.pool.map(chain([first], it))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def score(
    numbered: Iterable[tuple[str, Record]],
    pool: Any,
    *,
    run_id: str,
    sanitize: str = "auto",
    done: set[str] | None = None,
    counts: Counts | None = None,
    on_progress: Any = None,
) -> Iterator[Record]:
    """Yield each input record with its ``score``, in input order (see module docstring).

    ``pool`` has ``map((tag, Program)...) -> (tag, Verdict)...`` (a
    :class:`llmeval.sandbox.SandboxPool` or :class:`LazyPool`).
    """
    counts = counts or Counts()
    done = done or set()
    ready: dict[int, Record] = {}
    waiting: dict[int, tuple[Record, str | None, float]] = {}
    next_out = 0
    seq = 0

    def finish(i: int, rec: Record, result: dict[str, Any], started: float) -> None:
        status = result["status"]
        counts.by_status[status] += 1
        out = dict(rec)
        out["score"] = {
            "status": status,
            "value": 1.0 if status == PASS else 0.0,
            "extracted": result.get("extracted"),
            "expected": result.get("expected"),
            "detail": result.get("detail"),
            "sanitized": result.get("sanitized"),
            "time_s": round(result.get("time_s", time.monotonic() - started), 4),
            "run_id": run_id,
        }
        ready[i] = out

    def jobs() -> Iterator[tuple[int, Any]]:
        nonlocal seq
        for where, rec in numbered:
            _check(where, rec)
            if identity(rec) in done:
                counts.skipped += 1
                continue
            counts.total += 1
            counts.datasets.add(str(rec.get("dataset")))
            counts.models.add(str(rec.get("model")))
            i, seq = seq, seq + 1
            started = time.monotonic()
            if rec.get("error") or rec.get("completion") is None:
                finish(
                    i,
                    rec,
                    {"status": ERROR, "detail": f"generation failed: {rec.get('error')}"},
                    started,
                )
            elif rec["scorer"] == CODE_EXEC:
                program, sanitized = build_program(where, rec, sanitize)
                waiting[i] = (rec, sanitized, started)
                yield i, program
            else:
                finish(i, rec, score_answer(rec), started)

    def flush() -> Iterator[Record]:
        nonlocal next_out
        while next_out in ready:
            yield ready.pop(next_out)
            next_out += 1
        if on_progress:
            on_progress(counts)

    for i, verdict in pool.map(jobs()) if pool is not None else _no_code(jobs()):
        rec, sanitized, started = waiting.pop(i)
        finish(
            i,
            rec,
            {
                "status": verdict.status,
                "detail": _detail(verdict),
                "sanitized": sanitized,
                "time_s": verdict.time_s,
            },
            started,
        )
        yield from flush()
    yield from flush()


def _no_code(jobs: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    for _ in jobs:
        raise ValueError("score(): a code_exec record needs a sandbox pool")
    return
    yield


def _detail(verdict: Any) -> str | None:
    """The verdict's detail and the last line the program printed, capped (a few KB with a
    marker: a candidate decides how long its messages are)."""
    from llmeval.sandbox import cap

    detail = verdict.detail
    if verdict.output and verdict.status != PASS:
        tail = verdict.output.strip().splitlines()[-1:] if verdict.output.strip() else []
        if tail:
            detail = f"{detail}; output: {tail[0][:200]}" if detail else f"output: {tail[0][:200]}"
    return cap(detail) if detail else detail


# ---------------------------------------------------------------------------- command line


def build_parser() -> cli.Parser:
    p = cli.Parser(
        PROG, "Score generation records: run code in a sandbox, extract answers.", EPILOG
    )
    p.add_argument(
        "inputs", nargs="*", metavar="FILE", help="generation records (default: stdin; .gz ok)"
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="parallel sandboxes (default: the preset's, 0 = CPUs)",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="wall-clock seconds per program")
    p.add_argument(
        "--memory", type=cli.positive_int, metavar="MB", help="address-space limit per program"
    )
    p.add_argument(
        "--preset", default="base", metavar="P", help="preset for scoring defaults (default: base)"
    )
    p.add_argument(
        "--sanitize",
        choices=SANITIZE,
        default="auto",
        help="extract code from chat answers: auto (chat records or fenced code), always, never",
    )
    cli.add_run_flags(p)
    cli.add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(PROG, lambda: _main(args), args.verbose)


def _main(args: Any) -> int:
    from llmeval import presets, provenance, telemetry
    from llmeval.records import AppendWriter, existing_values, read_many_numbered
    from llmeval.sandbox import Limits

    preset = presets.apply_overrides(
        presets.load_preset(args.preset),
        "scoring",
        timeout=args.timeout,
        workers=args.workers,
        memory_mb=args.memory,
    )
    scoring = preset["scoring"]
    workers = int(scoring["workers"]) or (os.cpu_count() or 1)
    limits = Limits(timeout=float(scoring["timeout"]), memory_mb=int(scoring["memory_mb"]))
    run = provenance.run_record(
        "score",
        preset=preset,
        gpus=False,
        extra={"sandbox": {"workers": workers, **limits.__dict__}},
    )
    done = existing_values(args.output, identity)
    cli.check_stdin(PROG, args.inputs)
    numbered: Iterable[tuple[str, Record]] = read_many_numbered(args.inputs)
    if args.limit:
        numbered = islice(numbered, args.limit)
    heartbeat = telemetry.start_run(
        run, args.output, args.run_dir, {"output": args.output, "input": args.inputs or ["-"]}
    )
    bar = cli.progress_bar(args.progress, unit="record", desc=PROG)
    counts = Counts()

    def progress(c: Counts) -> None:
        done_now = sum(c.by_status.values())
        heartbeat.update(
            total=None,
            done=done_now + c.skipped,
            skipped=c.skipped,
            errors=c.by_status[ERROR],
            generated=done_now,
            statuses=dict(c.by_status),
            datasets=sorted(c.datasets)[:20],
            model=",".join(sorted(c.models))[:60],
        )
        if bar is not None:
            bar.n = done_now
            bar.set_postfix(passed=c.by_status[PASS], refresh=False)
            bar.refresh()

    pool = LazyPool(
        workers, limits, lambda m: cli.log(PROG, m), hide=[*args.inputs, args.output, args.run_dir]
    )
    out = AppendWriter(args.output)
    state = "failed"
    t0 = time.monotonic()
    try:
        for rec in score(
            numbered,
            pool,
            run_id=run["run_id"],
            sanitize=args.sanitize,
            done=done,
            counts=counts,
            on_progress=progress,
        ):
            out.write(rec)
        state = "finished"
    finally:
        out.close()
        pool.close()
        if bar is not None:
            bar.close()
        progress(counts)
        heartbeat.finish(state)
    s = counts.by_status
    elapsed = time.monotonic() - t0
    cli.log(
        PROG,
        f"{counts.total} scored in {elapsed:.1f} s: {s[PASS]} pass, {s[FAIL]} fail, "
        f"{s[TIMEOUT]} timeout, {s[ERROR]} error, {s[NO_ANSWER]} no answer"
        + (f"; {counts.skipped} already in output" if counts.skipped else ""),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
