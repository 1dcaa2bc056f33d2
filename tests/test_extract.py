import pytest

from llmeval.extract import extract_choice, extract_number, normalize_number, sanitize_code


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
        ("#### none\n but 12 earlier", None if False else "12"),
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
