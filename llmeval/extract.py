"""Answer extraction: code from chat answers, final numbers, multiple-choice letters.

Every function returns what it found (or None) so eval-score can record the
extraction next to the verdict, and tell "no answer found" from "wrong answer".
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
CODE_START = re.compile(r"^(?:def |async def |class |import |from |@)", re.M)


def sanitize_code(text: str, entry_point: str | None = None) -> str:
    """The code in a chat-style answer: the fenced block defining ``entry_point`` (else all
    Python blocks), or, without fences, everything from the first line that starts code."""
    blocks = [(lang.lower(), body) for lang, body in FENCE.findall(text)]
    if blocks:
        py = [b for lang, b in blocks if lang in ("", "python", "py", "python3")] or [
            b for _, b in blocks
        ]
        if entry_point:
            for body in py:
                if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", body):
                    return body.rstrip() + "\n"
        return "\n\n".join(b.rstrip() for b in py) + "\n"
    m = CODE_START.search(text)
    return text[m.start() :] if m else text


NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")


def normalize_number(text: str) -> str | None:
    """``"$1,234.50"`` -> ``"1234.5"``; None when it is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def extract_number(completion: str) -> str | None:
    """GSM8K convention: the first number after the last ``####``; else the last number in the text."""
    if "####" in completion:
        found = (
            NUMBER.findall(completion.rsplit("####", 1)[1])[:1] or NUMBER.findall(completion)[-1:]
        )
    else:
        found = NUMBER.findall(completion)[-1:]
    for candidate in found:
        value = normalize_number(candidate)
        if value is not None:
            return value
    return None


def extract_choice(completion: str, n_choices: int = 4) -> str | None:
    """The chosen letter: "Answer: C", "the answer is (B)", a leading "B." / "(B)", "(D)" anywhere."""
    letters = "ABCDEFGHIJ"[: max(1, min(n_choices, 10))]
    cls = f"[{letters}]"
    patterns = (
        rf"(?i:answer)(?:\s+is)?\s*[:\-]?\s*\(?({cls})\b",
        rf"^\s*\(?({cls})(?:[\).:]|\s*$|\s*\n)",  # a leading letter, not the article "A patient"
        rf"\(({cls})\)",
        rf"\b({cls})[\).:](?:\s|$)",
    )
    for pattern in patterns:
        m = re.search(pattern, completion)
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
