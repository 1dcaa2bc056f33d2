"""Answer extraction: code from chat answers, final numbers, multiple-choice letters.

Every function returns what it found (or None) so eval-score can record the
extraction next to the verdict, and tell "no answer found" from "wrong answer".

The text is a model's: untrusted, and possibly megabytes long. Everything here
runs in eval-score's own process, so it is linear in the text's length: fences and
answer phrases are found with ``str.find``, and the regular expressions left have
no nested or overlapping quantifiers that could backtrack (a 10 MB completion
costs milliseconds; tests/test_extract.py holds that bound).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from decimal import Decimal, InvalidOperation
from itertools import accumulate, compress

_CODE_WORDS = ("def ", "async def ", "class ", "import ", "from ", "@")
_PY_LANGS = frozenset(("", "python", "py", "python3"))
MAX_NUMBER = 100  # characters: longer digit runs are not answers (and cost Decimal time)
MAX_FENCES = 20_000  # code fences read in one completion (a real answer has a few)
MAX_CHOICE_SCAN = 1 << 20  # characters read for a letter: none is an answer after that


FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced block: a fence, its info line, the body up to
    the next fence (or the end). The same as ``FENCE.findall(text)``, in linear time, for
    the first MAX_FENCES fences.

    The regex alone is quadratic when fences follow the last newline: it rescans to the
    end from each of them for a newline that is not there. No block can start after the
    last newline, so the text after it is cut at its first fence (where the body of a
    block still open would end) before the regex sees it."""
    if text.count("```") > MAX_FENCES:  # no answer has that many: bound the work
        cut = -3
        for _ in range(MAX_FENCES):
            cut = text.find("```", cut + 3)
        text = text[:cut]
    last_newline = text.rfind("\n")
    if last_newline < 0:
        return []
    close = text.find("```", last_newline)
    return FENCE.findall(text if close < 0 else text[:close])


def sanitize_code(text: str, entry_point: str | None = None) -> str:
    """The code in a chat-style answer: the fenced block defining ``entry_point`` (else all
    Python blocks), or, without fences, everything from the first line that starts code."""
    blocks = fenced_blocks(text)
    if blocks:
        langs, bodies = zip(*blocks)
        # (built-in loops only: a million tiny blocks must not cost a Python-level loop each)
        py = list(compress(bodies, map(_PY_LANGS.__contains__, map(str.lower, langs))))
        py = py or list(bodies)
        if entry_point:
            joined = "\0".join(py)  # no match of the pattern below can span a NUL
            m = re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", joined)
            if m:
                ends = list(accumulate(len(b) + 1 for b in py))
                return py[bisect_right(ends, m.start())].rstrip() + "\n"
        return "\n\n".join(map(str.rstrip, py)) + "\n"
    start = _code_start(text)
    return text[start:] if start >= 0 else text


def _code_start(text: str) -> int:
    """Where ``re.compile(r"^(?:def |async def |class |import |from |@)", re.M)`` would match
    (the first line that starts with one of ``_CODE_WORDS``), in linear time."""
    starts = []
    for word in _CODE_WORDS:
        if text.startswith(word):
            return 0
        at = text.find("\n" + word)
        if at >= 0:
            starts.append(at + 1)
    return min(starts, default=-1)


NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")


def normalize_number(text: str) -> str | None:
    """``"$1,234.50"`` -> ``"1234.5"``; None when it is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if len(cleaned) > MAX_NUMBER:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


_NUMBER_CHARS = re.compile(r"[^0-9,.$\-]")
TAIL = 1 << 16  # characters of a completion's end searched for its last number


def _last_number(text: str) -> list[str]:
    """The last ``NUMBER`` match, found in the text's tail: a number cannot span a
    character outside ``0-9,.$-``, so matching from just after such a character (within
    the last TAIL characters) finds the same last match as matching the whole text."""
    start = max(0, len(text) - TAIL)
    if start:
        boundary = _NUMBER_CHARS.search(text, start)
        start = boundary.end() if boundary else start
    last = None
    for last in NUMBER.finditer(text, start):  # noqa: B007 - only the last one is wanted
        pass
    return [last.group(0)] if last else []


def extract_number(completion: str) -> str | None:
    """GSM8K convention: the first number after the last ``####``; else the last number in the text."""
    if "####" in completion:
        first = NUMBER.search(completion.rsplit("####", 1)[1])
        found = [first.group(0)] if first else _last_number(completion)
    else:
        found = _last_number(completion)
    for candidate in found:
        value = normalize_number(candidate)
        if value is not None:
            return value
    return None


def _choice_patterns(letters: str) -> tuple[re.Pattern[str], ...]:
    r"""The patterns extract_choice tries, in order. ``(?=(\s*))\N`` takes a run of spaces
    whole and never gives any back (an atomic group, written so Python 3.10 has it):
    no two quantifiers can trade characters, so each search is linear in the text."""
    cls = f"[{letters}]"
    return (
        # "answer", " is" after at least one space, ":" or "-", "(", then the letter
        re.compile(
            rf"(?i:answer)(?=(\s*))\1(?:(?<=\s)is(?=(\s*))\2)?(?:[:\-](?=(\s*))\3)?\(?({cls})\b"
        ),
        # a leading letter, not the article "A patient" (matched at the start only)
        re.compile(rf"(?=(\s*))\1\(?({cls})(?:[\).:]|(?=\s*\n)|\s*$)"),
        re.compile(rf"\(({cls})\)"),
        re.compile(rf"({cls})(?<!\w{cls})[\).:](?:\s|$)"),  # \b before the letter
    )


_CHOICE: dict[str, tuple[re.Pattern[str], ...]] = {}


def extract_choice(completion: str, n_choices: int = 4) -> str | None:
    """The chosen letter: "Answer: C", "the answer is (B)", a leading "B." / "(B)", "(D)"
    anywhere (in the first MAX_CHOICE_SCAN characters)."""
    letters = "ABCDEFGHIJ"[: max(1, min(n_choices, 10))]
    completion = completion[:MAX_CHOICE_SCAN]
    patterns = _CHOICE.get(letters) or _CHOICE.setdefault(letters, _choice_patterns(letters))
    start = completion.lower().find("answer")
    if start >= 0:  # the first pattern can only match from there
        m = patterns[0].search(completion, start)
        if m:
            return m.group(4)
    m = patterns[1].match(completion)
    if m:
        return m.group(2)
    for pattern in patterns[2:]:
        m = pattern.search(completion)
        if m:
            return m.group(1)
    return None


# --------------------------------------------------------------------------- text answers
# The functions below scan their input a bounded number of times (str.find / rfind /
# strip and regexes of one character class, no nested quantifiers): linear in the
# completion, whatever a model writes.

#: Leading phrases dropped from a final answer line ("The answer is Paris." -> "Paris.").
ANSWER_CUES = ("the final answer is", "final answer:", "the answer is", "answer:", "answer is")
#: Characters dropped around a normalised text answer: space, punctuation, quotes, brackets, emphasis.
_EDGE = " \t\r\n\"'`*_~()[]{}<>.,;:!?"


def final_answer_text(text: str) -> str | None:
    """The final answer a text states, or None when it states nothing.

    The first line after the last ``####`` (GSM8K's convention) when there is
    one, else the last non-empty line; a leading "The answer is" / "Answer:"
    is dropped. A gold answer goes through the same function, so a reference
    answer always matches itself.
    """
    marker = text.rfind("####")
    if marker >= 0:
        tail = text[marker + 4 :].lstrip()
        cut = tail.find("\n")
        line = tail if cut < 0 else tail[:cut]
    else:
        body = text.rstrip()
        line = body[body.rfind("\n") + 1 :]
    line = line.strip()
    lower = line[:32].lower()
    for cue in ANSWER_CUES:
        if lower.startswith(cue):
            line = line[len(cue) :].strip()
            break
    return line or None


def normalize_text(text: str) -> str:
    """Text answers compared as the same: NFKC, case folded, runs of space as one, and
    punctuation, quotes, brackets and emphasis marks dropped at both ends."""
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).strip(_EDGE)


def extract_choice_text(completion: str, choices: list[str]) -> int | None:
    """The index of the choice a completion names first, as whole words, case folded
    (``" No, because..."`` with yes/no/maybe -> 1); the longer one where two start together."""
    text = completion.casefold()
    best: tuple[int, int, int] | None = None  # (position, -length, index)
    for i, choice in enumerate(choices):
        word = " ".join(choice.casefold().split())
        if not word:
            continue
        pos = _find_word(text, word)
        if pos is not None and (best is None or (pos, -len(word)) < best[:2]):
            best = (pos, -len(word), i)
    return best[2] if best else None


def _find_word(text: str, word: str) -> int | None:
    """The first position of ``word`` in ``text`` with no word character joined to either end."""
    # The word first (a literal prefix: the regex engine skips ahead at C speed), then the
    # two boundaries, the one before it as a fixed-width look-behind over the word itself.
    w = re.escape(word)
    m = re.search(rf"{w}(?!\w)(?<!\w{w})", text)
    return m.start() if m else None


# ---------------------------------------------------------------- reference harness extractions
# lm-evaluation-harness's gsm8k task (lm_eval/tasks/gsm8k/gsm8k.yaml, version 3.0) reports
# exact_match under two filters, and normalises both sides before comparing with
# regexes_to_ignore [",", "\$", "(?s).*#### ", "\.$"] and ignore_case. Reimplemented
# from that definition without backtracking: same answers, linear time.

_STRICT = re.compile(r"#### (-?[0-9.,]+)")
# lm-eval's flexible-extract regex "(-?[$0-9.,]{2,})|(-?[0-9]+)", scanning left to right,
# matches exactly the maximal runs of [$0-9.,] that hold a digit or are two characters or
# more, each with a "-" just before it. The last one is the run around the last digit,
# unless a run of two or more of "$.," comes after it.
_DIGIT = re.compile(r"[0-9]")
_RUN = re.compile(r"[$0-9.,]*")
_SYMBOLS = re.compile(r"[$.,]{2,}")


def lm_eval_gsm8k_strict(completion: str) -> str | None:
    """lm-eval gsm8k ``strict-match``: the first ``#### N`` (regex ``#### (\\-?[0-9\\.\\,]+)``,
    take_first); None where lm-eval writes ``[invalid]``."""
    m = _STRICT.search(completion)
    return m.group(1) if m else None


def lm_eval_gsm8k_flexible(completion: str) -> str | None:
    """lm-eval gsm8k ``flexible-extract``: the last number-like run (regex
    ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, group_select -1); None where lm-eval writes ``[invalid]``."""
    n = len(completion)
    reverse = completion[::-1]  # searched from the end, at C speed
    start = end = 0
    digit = _DIGIT.search(reverse)
    if digit is not None:
        d = n - 1 - digit.start()
        end = _RUN.match(completion, d).end()  # type: ignore[union-attr]
        start = n - _RUN.match(reverse, n - 1 - d).end()  # type: ignore[union-attr]
    later = _SYMBOLS.search(reverse, 0, n - end)
    if later is not None:
        start, end = n - later.end(), n - later.start()
    elif digit is None:
        return None
    if start > 0 and completion[start - 1] == "-":
        start -= 1
    return completion[start:end]


def lm_eval_gsm8k_normalize(text: str) -> str:
    """lm-eval gsm8k's exact_match normalisation, applied to prediction and reference alike."""
    t = text.replace(",", "").replace("$", "")
    marker = t.rfind("#### ")
    if marker >= 0:  # "(?s).*#### " removes everything up to the last "#### "
        t = t[marker + 5 :]
    if t.endswith("."):  # "\.$": a final ".", or one before a final newline
        t = t[:-1]
    elif t.endswith(".\n"):
        t = t[:-2] + "\n"
    return t.lower()


#: Extractions a dataset spec may name (``[scoring] extractions``): id -> (extract, normalise).
REFERENCE_EXTRACTIONS = {
    "lm-eval/gsm8k/strict-match": (lm_eval_gsm8k_strict, lm_eval_gsm8k_normalize),
    "lm-eval/gsm8k/flexible-extract": (lm_eval_gsm8k_flexible, lm_eval_gsm8k_normalize),
}
