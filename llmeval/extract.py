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

CODE_START = re.compile(r"^(?:def |async def |class |import |from |@)", re.M)
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
    """Where ``CODE_START`` would match: the first line that starts with a keyword."""
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
