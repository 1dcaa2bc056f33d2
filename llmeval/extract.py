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
