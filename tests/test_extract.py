import random
import re
import time

import pytest

from llmeval.extract import (
    REFERENCE_EXTRACTIONS,
    extract_choice,
    extract_choice_text,
    extract_number,
    final_answer_text,
    lm_eval_gsm8k_flexible,
    lm_eval_gsm8k_normalize,
    lm_eval_gsm8k_strict,
    normalize_number,
    normalize_text,
    sanitize_code,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("#### 70,000", "70000"),
        ("The answer is $1,234.50.", "1234.5"),
        ("so 3 bolts in total. 3.0", "3"),
        ("First 5, then 7, finally -2.", "-2"),
        ("#### 42\nQuestion: what is 7?", "42"),
        ("no digits here", None),
        ("#### none\n but 12 earlier", "12"),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_normalize():
    assert normalize_number("18.00") == "18"
    assert normalize_number("$5") == "5"
    assert normalize_number("0.50") == "0.5"
    assert normalize_number("abc") is None


@pytest.mark.parametrize(
    "text,expected",
    [
        (" B", "B"),
        ("Answer: C", "C"),
        ("The answer is (D).", "D"),
        ("I think the answer is B because", "B"),
        ("(A) is right", "A"),
        ("C. Nitrofurantoin", "C"),
        ("A patient with burning: choose D.", "D"),
        ("nothing here", None),
        ("E", None),  # only A-D for four choices
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, 4) == expected


def test_sanitize_fenced_and_prose():
    chat = "Sure! Here it is:\n```python\nimport math\n\ndef f(x):\n    return math.sqrt(x)\n```\nHope it helps."
    assert sanitize_code(chat, "f") == "import math\n\ndef f(x):\n    return math.sqrt(x)\n"
    two = "```python\ndef helper():\n    return 1\n```\ntext\n```python\ndef f():\n    return helper()\n```"
    assert sanitize_code(two, "f") == "def f():\n    return helper()\n"
    assert (
        sanitize_code(two, "g") == "def helper():\n    return 1\n\ndef f():\n    return helper()\n"
    )
    prose = "Here is my solution.\ndef f(x):\n    return x\n"
    assert sanitize_code(prose, "f") == "def f(x):\n    return x\n"
    assert sanitize_code("    return x\n", "f") == "    return x\n"


# --------------------------------------------------------------------------- text answers


@pytest.mark.parametrize(
    "text,expected",
    [
        ("#### Paris", "Paris"),
        ("Reasoning...\n#### Paris\nQuestion: next", "Paris"),
        ("The capital is Paris.\nThe answer is Paris.", "Paris."),
        ("Answer: Lima", "Lima"),
        ("Final answer: the Eiffel Tower\n\n", "the Eiffel Tower"),
        ("####", None),
        ("  \n ", None),
    ],
)
def test_final_answer_text(text, expected):
    assert final_answer_text(text) == expected


def test_normalize_text():
    assert normalize_text("  **Paris.** ") == "paris"
    assert normalize_text('"New   York"') == "new york"
    assert normalize_text("ＰＡＲＩＳ") == "paris"  # NFKC: full-width letters
    assert normalize_text("1/2") == "1/2"  # inner punctuation kept


@pytest.mark.parametrize(
    "text,expected",
    [
        (" yes", 0),
        (" No, because the trial was small.", 1),
        ("Maybe. It is not clear; yes and no.", 2),
        ("Nope, yesterday", None),
        ("YES!", 0),
        ("", None),
    ],
)
def test_extract_choice_text(text, expected):
    assert extract_choice_text(text, ["yes", "no", "maybe"]) == expected


# lm-evaluation-harness's gsm8k filters and normalisation, verbatim from gsm8k.yaml (v3.0):
# the oracle the linear-time reimplementations are checked against.
LM_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
LM_FLEX = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
LM_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]


def lm_strict(s):
    m = LM_STRICT.findall(s)
    return m[0].strip() if m else None


def lm_flex(s):
    m = LM_FLEX.findall(s)
    if not m:
        return None
    picked = [g for g in m[-1] if g]
    return picked[0].strip() if picked else None


def lm_normalize(s):
    for pattern in LM_IGNORE:
        s = re.sub(pattern, "", s)
    return s.lower()


SHAPES = [
    # (completion, strict-match, flexible-extract) as lm-eval extracts them
    ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18", "18"),
    ("The answer is 18.", None, "18."),
    ("#### 1,234.50", "1,234.50", "1,234.50"),
    ("He pays $5 per hour for 3 hours, so $15 in total.", None, "$15"),
    ("#### -7\nQuestion: what is 2+2?\nAnswer: 4", "-7", "4"),
    ("So the answer is $70,000.", None, "$70,000."),
    ("18 eggs. #### 18.", "18.", "18."),
    ("No number here.", None, None),
    ("####18", None, "18"),
    ("The total is -3 and then 5-2", None, "-2"),
]


@pytest.mark.parametrize("completion,strict,flexible", SHAPES)
def test_lm_eval_gsm8k_filters_on_the_shapes_models_write(completion, strict, flexible):
    assert lm_eval_gsm8k_strict(completion) == strict == lm_strict(completion)
    assert lm_eval_gsm8k_flexible(completion) == flexible == lm_flex(completion)


def test_lm_eval_gsm8k_reimplementation_agrees_with_its_regexes_everywhere():
    rng = random.Random(7)
    for _ in range(30000):
        s = "".join(rng.choice("0123456789$.,-# \nab") for _ in range(rng.randint(0, 16)))
        if rng.random() < 0.4:
            s = s.replace("#", "#### ")
        assert lm_eval_gsm8k_strict(s) == lm_strict(s), s
        assert lm_eval_gsm8k_flexible(s) == lm_flex(s), s
        assert lm_eval_gsm8k_normalize(s) == lm_normalize(s), s
    assert lm_eval_gsm8k_normalize("Janet...\n#### 70,000") == "70000"
    assert set(REFERENCE_EXTRACTIONS) == {
        "lm-eval/gsm8k/strict-match",
        "lm-eval/gsm8k/flexible-extract",
    }


PATHOLOGICAL = {
    "digits": "1" * 10_000_000,
    "spaced digits": "1 " * 5_000_000,
    "dots": "a." * 5_000_000,
    "minus": "-" * 10_000_000,
    "markers": "#### -" * 1_700_000,
    "hashes": "#" * 10_000_000,
    "words": "yesyes " * 1_430_000,
    "lines": "\n" * 10_000_000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_new_extractions_stay_linear_on_10mb_of_hostile_text(name):
    text = PATHOLOGICAL[name]
    assert len(text) >= 10_000_000
    started = time.monotonic()
    lm_eval_gsm8k_strict(text)
    lm_eval_gsm8k_flexible(text)
    lm_eval_gsm8k_normalize(text)
    final_answer_text(text)
    normalize_text(text)
    extract_choice_text(text, ["yes", "no", "maybe", "tracheoesophageal fistula"])
    # quadratic behaviour on 10 MB would take hours; linear takes about a second here
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------- untrusted text, linear time

# The regular expressions eval-score used before they were made linear: the reference
# that the fast versions must agree with on every input (they backtrack quadratically on
# some long inputs, so they only see short ones here).
OLD_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def old_sanitize(text, entry_point=None):
    blocks = [(lang.lower(), body) for lang, body in OLD_FENCE.findall(text)]
    if blocks:
        py = [b for lang, b in blocks if lang in ("", "python", "py", "python3")] or [
            b for _, b in blocks
        ]
        if entry_point:
            for body in py:
                if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", body):
                    return body.rstrip() + "\n"
        return "\n\n".join(b.rstrip() for b in py) + "\n"
    m = re.compile(r"^(?:def |async def |class |import |from |@)", re.M).search(text)
    return text[m.start() :] if m else text


def old_number(completion):
    number = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
    if "####" in completion:
        found = (
            number.findall(completion.rsplit("####", 1)[1])[:1] or number.findall(completion)[-1:]
        )
    else:
        found = number.findall(completion)[-1:]
    for candidate in found:
        value = normalize_number(candidate)
        if value is not None:
            return value
    return None


def old_choice(completion, n_choices=4):
    letters = "ABCDEFGHIJ"[: max(1, min(n_choices, 10))]
    cls = f"[{letters}]"
    for pattern in (
        rf"(?i:answer)(?:\s+is)?\s*[:\-]?\s*\(?({cls})\b",
        rf"^\s*\(?({cls})(?:[\).:]|\s*$|\s*\n)",
        rf"\(({cls})\)",
        rf"\b({cls})[\).:](?:\s|$)",
    ):
        m = re.search(pattern, completion)
        if m:
            return m.group(1)
    return None


PIECES = [
    "```", "```python", "```py ", "```js", "\n", " ", "  ", "\t", "def f(", "def g (", "x", "A",
    "B", "(C)", "D.", "E:", "answer", "Answer", "ANSWER is", " is ", ":", "-", "(", ")", "####",
    "12", "1,234", "$5", ".5", "-3", "3.14", "a", "import os", "return 1", "@", "class K",
]  # fmt: skip


def test_fast_extractors_agree_with_the_reference_regexes():
    rng = random.Random(7)
    for _ in range(4000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
        for entry in (None, "f", "g"):
            assert sanitize_code(text, entry) == old_sanitize(text, entry), (text, entry)
        assert extract_number(text) == old_number(text), text
        for n in (2, 4, 10):
            assert extract_choice(text, n) == old_choice(text, n), (text, n)


WORST_FOR_OLD_REGEXES = {
    "fences without a newline": "```" * 3_400_000,
    "empty fenced blocks": "```\n" * 2_500_000,
    "python blocks": "```python\ndef f(x):\n    return x\n```\n" * 250_000,
    "answer then spaces": "answer" + " " * 10_000_000,
    "answers": ("Answer is " + " " * 40 + "- ") * 190_000,
    "digits": "1" * 10_000_000,
    "dotted numbers": "1." * 5_000_000,
    "spaces": " " * 10_000_000,
    "letters": "A. " * 3_400_000,
    "hashes": "####1 " * 1_700_000,
}


@pytest.mark.parametrize("name", sorted(WORST_FOR_OLD_REGEXES))
def test_ten_megabytes_cost_a_bounded_time(name):
    """eval-score's own process parses untrusted text: 10 MB of the worst shapes for the
    old regexes (each took minutes or more) take well under a second here, and ten times
    the text costs about ten times the time (linear, not quadratic)."""
    big = WORST_FOR_OLD_REGEXES[name]
    small = big[: len(big) // 10]

    def cost(text):
        t = time.perf_counter()
        sanitize_code(text, "f")
        extract_number(text)
        extract_choice(text, 4)
        return time.perf_counter() - t

    cost(small)  # warm the pattern caches
    t_small, t_big = min(cost(small) for _ in range(2)), cost(big)
    assert t_big < 2.5, f"{name}: {t_big:.2f} s for {len(big) >> 20} MB"
    assert t_big < 25 * t_small + 0.05, f"{name}: {t_small:.3f} s -> {t_big:.3f} s (not linear)"
