"""eval-score: generation records -> the same records with a ``score`` (docs/records.md).

    eval-resolve humaneval | eval-generate --model gemma3-270m | eval-score | eval-aggregate

Code is run in the sandbox (:mod:`llmeval.sandbox`, design in docs/sandbox.md)
by a pool of warm workers; math and multiple-choice answers are extracted and
compared in-process. Output keeps the input order. With ``-o OUT`` a re-run
scores only the records whose identity (``key``, else ``id`` and ``sample``)
is not in OUT yet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from llmeval import cli
from llmeval.errors import DataError
from llmeval.extract import (
    REFERENCE_EXTRACTIONS,
    extract_choice,
    extract_choice_text,
    extract_number,
    final_answer_text,
    normalize_number,
    normalize_text,
    sanitize_code,
)
from llmeval.records import Record, check_fields
from llmeval.specs import LETTERS
from llmeval.vocab import (
    CODE_EXEC,
    ERROR,
    EXACT_MATCH,
    FAIL,
    MULTIPLE_CHOICE,
    NO_ANSWER,
    PASS,
    STATUSES,
    TIMEOUT,
)

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


MAX_PROGRAM_CHARS = 32 << 20  # a program with its test: as JSON (6 bytes a character at worst) within the job frame


def identity(rec: Record) -> str:
    """What makes a scored record unique in an output file (resume)."""
    key = rec.get("key")
    return key if isinstance(key, str) else f"{rec.get('id')}#{rec.get('sample', 0)}"


def build_program(where: str, rec: Record, sanitize: str) -> tuple[Any, str | None]:
    """The sandbox program for a code_exec record, and the sanitized code when it differs."""
    from llmeval.sandbox import Program

    ref = rec["reference"]
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
        return score_exact(ref, completion)
    return score_choice(ref, completion)


def score_exact(ref: dict[str, Any], completion: str) -> dict[str, Any]:
    """A final number compared as a number; a gold answer that is not a number compared as
    normalised text (``#### Paris``, or the last line). Both sides go through the same
    extraction, so a reference answer passes as its own completion."""
    gold = str(ref.get("answer", ""))
    gold_text = final_answer_text(gold)
    expected = normalize_number(gold) or (
        normalize_number(gold_text) if gold_text is not None else None
    )
    if expected is not None:
        extracted = extract_number(completion)
        found_nothing = "no number found"
    else:
        expected = normalize_text(gold_text if gold_text is not None else gold)
        said = final_answer_text(completion)
        extracted = normalize_text(said) if said is not None else None
        found_nothing = "no answer found"
    out: dict[str, Any] = {
        "status": PASS if extracted == expected else FAIL,
        "extracted": extracted,
        "expected": expected,
        "detail": None,
    }
    if extracted is None:
        out.update(status=NO_ANSWER, detail=found_nothing)
    extractions = ref.get("extractions")
    if extractions:
        out["extractions"] = reference_extractions(extractions, ref, completion)
    return out


def reference_extractions(
    named: dict[str, str], ref: dict[str, Any], completion: str
) -> dict[str, dict[str, Any]]:
    """Each extraction the dataset's reference harness defines (``reference.extractions``:
    metric name -> extraction), scored its own way: extracted and normalised as that
    harness does, against the gold solution normalised the same way."""
    gold = str(ref.get("solution") or ref.get("answer", ""))
    out = {}
    for metric, what in named.items():
        extract, normalize = REFERENCE_EXTRACTIONS[what]
        found = extract(completion)
        expected = normalize(gold)
        extracted = normalize(found) if found is not None else None
        status = NO_ANSWER if extracted is None else PASS if extracted == expected else FAIL
        out[metric] = {"status": status, "extracted": extracted, "expected": expected}
    return out


def score_choice(ref: dict[str, Any], completion: str) -> dict[str, Any]:
    """The letter a completion chooses; where the choices are answered by their text
    (PubMedQA's yes/no/maybe: the continuations are the texts), the choice it names first."""
    choices = ref.get("choices")
    n = len(choices) if isinstance(choices, list) else 4
    expected = ref.get("label")
    texts = choice_texts(ref)
    if texts is not None:
        index = extract_choice_text(completion, texts)
        extracted = LETTERS[index] if index is not None else None
        missing = f"none of {', '.join(texts)} found"
    else:
        extracted = extract_choice(completion, n)
        missing = "no choice letter found"
    if extracted is None:
        return {"status": NO_ANSWER, "extracted": None, "expected": expected, "detail": missing}
    return {
        "status": PASS if extracted == expected else FAIL,
        "extracted": extracted,
        "expected": expected,
        "detail": None,
    }


def score_loglikelihood(rec: Record) -> dict[str, Any]:
    """The choice with the highest log-likelihood (lm-eval's ``acc``) and the highest per UTF-8
    byte of its continuation (``acc_norm``), against ``reference.label``; both as
    ``score.extractions`` too, so eval-aggregate reports ``acc`` and ``acc_norm``."""
    from llmeval.loglikelihood import pick  # lazy: it imports the backends (60 ms of start-up)

    expected = rec["reference"].get("label")
    acc, norm = pick(rec["choice_logprobs"], rec["choice_bytes"])
    letter, letter_norm = LETTERS[acc], LETTERS[norm]
    status = PASS if letter == expected else FAIL
    status_norm = PASS if letter_norm == expected else FAIL
    return {
        "status": status,
        "extracted": letter,
        "expected": expected,
        "detail": None,
        "extracted_norm": letter_norm,
        "status_norm": status_norm,
        "extractions": {
            "acc": {"status": status, "extracted": letter, "expected": expected},
            "acc_norm": {"status": status_norm, "extracted": letter_norm, "expected": expected},
        },
    }


def loglikelihood_failed(rec: Record) -> dict[str, dict[str, Any]]:
    """acc and acc_norm of a log-likelihood request that failed: errors, counted in both."""
    expected = rec["reference"].get("label")
    return {
        m: {"status": ERROR, "extracted": None, "expected": expected} for m in ("acc", "acc_norm")
    }


def choice_texts(ref: dict[str, Any]) -> list[str] | None:
    """The answers as words, when the continuations are the choices' texts, not letters."""
    conts = ref.get("continuations")
    if not isinstance(conts, list):
        return None
    words = [str(c).strip() for c in conts]
    return None if words == list(LETTERS[: len(words)]) else words


# The reference fields each scorer needs (docs/records.md, "eval-resolve").
REFERENCE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    CODE_EXEC: (
        ("reference.entry_point", "reference.test"),
        ("reference.style", "reference.setup", "reference.prompt_is_code"),
    ),
    EXACT_MATCH: (("reference.answer",), ("reference.extractions",)),
    MULTIPLE_CHOICE: (
        ("reference.label",),
        ("reference.choices", "reference.continuations", "reference.loglikelihood"),
    ),
}


def _check(where: str, rec: Record) -> None:
    """Refuse a record eval-score cannot score, naming the field (docs/records.md)."""
    if "score" in rec:
        raise DataError(
            where, 'the record is already scored (field "score"); score the generation file'
        )
    if "completion" not in rec:
        raise DataError(where, 'no field "completion"; score the output of eval-generate')
    check_fields(
        where,
        rec,
        required=("scorer", "reference", "completion"),
        optional=("prompt", "messages", "error", "key", "id", "sample", "model", "dataset"),
    )
    required, optional = REFERENCE_FIELDS[rec["scorer"]]
    check_fields(where, rec, required, optional)
    for what in (rec["reference"].get("extractions") or {}).values():
        if what not in REFERENCE_EXTRACTIONS:
            raise DataError(
                where,
                f'field "reference.extractions": unknown extraction {what!r} '
                f"(known: {', '.join(sorted(REFERENCE_EXTRACTIONS))})",
            )
    if "choice_logprobs" in rec:
        check_fields(where, rec, optional=LOGLIKELIHOOD_FIELDS)
        _check_choices(where, rec)
    elif rec["completion"] is None and not rec.get("error"):
        raise DataError(where, 'field "completion" is null but the record has no "error"')


LOGLIKELIHOOD_FIELDS = ("choice_logprobs", "choice_bytes", "choice_tokens", "choice_greedy")


def _check_choices(where: str, rec: Record) -> None:
    """A log-likelihood record: one log-prob and one byte count per choice, and a letter label."""
    if rec.get("error"):
        return
    logprobs, nbytes = rec.get("choice_logprobs"), rec.get("choice_bytes")
    if logprobs is None:
        raise DataError(where, 'field "choice_logprobs" is null but the record has no "error"')
    if rec["scorer"] != MULTIPLE_CHOICE:
        raise DataError(where, f'field "choice_logprobs" on a {rec["scorer"]} record')
    if not logprobs or len(logprobs) > len(LETTERS):
        raise DataError(where, f'field "choice_logprobs" must hold 1 to {len(LETTERS)} numbers')
    if not isinstance(nbytes, list) or len(nbytes) != len(logprobs):
        raise DataError(
            where,
            f'field "choice_bytes" must hold one count per choice ({len(logprobs)}), '
            f"got {nbytes!r}"[:160],
        )


class Counts:
    def __init__(self) -> None:
        self.by_status = dict.fromkeys(STATUSES, 0)
        self.total = 0
        self.skipped = 0
        self.datasets: set[str] = set()
        self.models: set[str] = set()


class LazyPool:
    """Starts the sandbox pool only when the first code record arrives (or when told to:
    :meth:`spawn`). ``hide``: the run's own files (inputs, outputs), kept from candidates
    even where they would be visible."""

    def __init__(self, workers: int, limits: Any, log: Any, hide: Iterable[str] = ()):
        self.workers, self.limits, self.log = workers, limits, log
        self.hide = [p for p in hide if p]
        self.pool: Any = None
        self.spawned: list[Any] = []

    def spawn(self) -> None:
        """Start the worker processes now, before their sandbox is planned (:meth:`map`
        configures them): their interpreters start while this process does other work."""
        if self.pool is None and not self.spawned:
            from llmeval.sandbox.pool import spawn_workers

            self.spawned = spawn_workers(self.workers)

    def map(self, jobs: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        it = iter(jobs)
        first = next(it, None)
        if first is None:
            return
        from itertools import chain

        from llmeval.sandbox import SandboxPool

        # Not waited for: the workers start while the input is read ahead; the pool says
        # what its sandbox holds when the first is ready.
        spawned, self.spawned = self.spawned, []
        self.pool = SandboxPool(
            self.workers, self.limits, self.log, hide=self.hide, wait=False, spawned=spawned
        )
        yield from self.pool.map(chain([first], it))

    def close(self) -> None:
        if self.spawned:
            from llmeval.sandbox.pool import kill_workers

            kill_workers(self.spawned)
            self.spawned = []
        if self.pool is not None:
            self.pool.close()


def starts_with_code(paths: list[str | None], limit: int = 1 << 20) -> bool:
    """Whether the first record of the first input is a code_exec one, judged from a plain
    file's first line (stdin and .gz are not looked at: False)."""
    path = paths[0] if paths else None
    if path is None or path == "-" or path.endswith(".gz"):
        return False
    import orjson

    try:
        with open(path, "rb") as fh:
            line = fh.readline(limit)
        rec = orjson.loads(line)
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and rec.get("scorer") == CODE_EXEC


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
            "extractions": result.get("extractions"),
            **(
                {"extracted_norm": result["extracted_norm"], "status_norm": result["status_norm"]}
                if "status_norm" in result
                else {}
            ),
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
            if "choice_logprobs" in rec and not rec.get("error"):
                finish(i, rec, score_loglikelihood(rec), started)
            elif rec.get("error") or rec.get("completion") is None:
                finish(
                    i,
                    rec,
                    {
                        "status": ERROR,
                        "detail": f"generation failed: {rec.get('error')}",
                        "extractions": loglikelihood_failed(rec)
                        if "choice_logprobs" in rec
                        else None,
                    },
                    started,
                )
            elif rec["scorer"] == CODE_EXEC:
                program, sanitized = build_program(where, rec, sanitize)
                size = sum(len(x) for x in (program.code, program.test, program.trusted))
                if size > MAX_PROGRAM_CHARS:  # the sandbox's channel would refuse it
                    detail = f"the program is too large to run ({size} characters; the limit is {MAX_PROGRAM_CHARS})"
                    finish(i, rec, {"status": ERROR, "detail": detail}, started)
                    continue
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


class Score(cli.Command):
    prog = PROG
    description = "Score generation records: run code in a sandbox, extract answers."
    epilog = EPILOG
    inputs_help = "generation records (default: stdin; .gz ok)"
    stage = "score"

    def identity(self, record: Record) -> Any:
        return identity(record)

    def add_arguments(self, p: cli.Parser) -> None:
        p.add_argument(
            "--workers",
            type=cli.nonneg_int,
            metavar="N",
            help="parallel sandboxes (default: the preset's; 0 = the CPUs allotted to this job)",
        )
        p.add_argument(
            "--timeout", type=cli.positive_float, metavar="S", help="wall-clock seconds per program"
        )
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

    def run(self) -> int:
        from llmeval import presets
        from llmeval.sandbox import Limits

        args = self.args
        preset = presets.apply_overrides(
            presets.load_preset(args.preset),
            "scoring",
            timeout=args.timeout,
            workers=args.workers,
            memory_mb=args.memory,
        )
        scoring = preset["scoring"]
        workers = int(scoring["workers"]) or cli.available_cpus()
        limits = Limits(timeout=float(scoring["timeout"]), memory_mb=int(scoring["memory_mb"]))
        pool = LazyPool(
            workers, limits, self.log, hide=[*(args.inputs or []), args.output, args.run_dir]
        )
        if starts_with_code(self.input_paths()):
            # Sandbox workers take a while to start: their interpreters do it while this
            # process reads OUT, counts the input and writes the run record (their sandbox
            # is planned after that, when the run's files exist).
            pool.spawn()
        try:
            done = self.done()
            total = cli.count_input_lines(self.input_paths(), args.limit)
            run = self.start_run(
                preset=preset,
                gpus=False,
                extra={"sandbox": {"workers": workers, **limits.__dict__}},
                total=total,
            )
        except BaseException:
            pool.close()
            raise
        counts = Counts()

        def progress(c: Counts) -> None:
            scored = sum(c.by_status.values())
            self.progress(
                done=scored + c.skipped,
                total=total,
                postfix={"passed": c.by_status[PASS]},
                skipped=c.skipped,
                errors=c.by_status[ERROR],
                generated=scored,
                statuses=dict(c.by_status),
                datasets=sorted(c.datasets)[:20],
                model=",".join(sorted(c.models))[:60],
            )

        try:
            for rec in score(
                self.records(),
                pool,
                run_id=run["run_id"],
                sanitize=args.sanitize,
                done=done,
                counts=counts,
                on_progress=progress,
            ):
                self.write(rec)
        finally:
            pool.close()
            progress(counts)
        self.finish()
        s = counts.by_status
        self.log(
            f"{counts.total} scored in {self.elapsed():.1f} s: {s[PASS]} pass, {s[FAIL]} fail, "
            f"{s[TIMEOUT]} timeout, {s[ERROR]} error, {s[NO_ANSWER]} no answer"
            + (f"; {counts.skipped} already in output" if counts.skipped else "")
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    return Score().main(argv)


if __name__ == "__main__":
    sys.exit(main())
