"""Which calls a test will make first, read from its source, so they go in one message.

A HumanEval test is mostly ``assert candidate(<literals>) == <expected>`` lines;
sending each call and waiting for its reply costs two process wake-ups per
assert. The tester sends the calls of the test's straight-line opening (only
calls whose arguments are literals, in evaluation order) with the program, and
the candidate answers them one after another, each reply as soon as it is
computed. The tester still runs the test as written: each call it makes must be
the next predicted one, else the prediction was wrong (a short-circuit, a helper
that calls the candidate) and the program is run again, call by call. So the
candidate sees exactly the calls, in exactly the order, that the test makes; a
call it computed ahead and nobody asked for came after every call that counted.
"""

from __future__ import annotations

import ast
from typing import Any

_STRAIGHT = (
    ast.Assert, ast.Expr, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Pass, ast.Import,
    ast.ImportFrom,
)  # fmt: skip
_STOP_INSIDE = (
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.NamedExpr,
    ast.Await,
    ast.Yield,
    ast.YieldFrom,
)
MAX_PREDICTED = 256


def _post_order(node: ast.AST, names: dict[str, str]) -> list[ast.AST]:
    """Nodes children first, in field order: the order Python evaluates calls in. Constants
    and expression contexts (most of a test's nodes, none of them a call) are left out, and
    a call of a name in ``names`` is not entered: its arguments must be literals to be
    predicted, and literals call nothing."""
    out: list[ast.AST] = []
    stack: list[tuple[ast.AST, bool]] = [(node, False)]
    leaves = (ast.Constant, ast.expr_context)
    while stack:
        current, expanded = stack.pop()
        if expanded:
            out.append(current)
            continue
        if isinstance(current, ast.Call) and isinstance(current.func, ast.Name):
            if current.func.id in names:
                out.append(current)
                continue
        stack.append((current, True))
        children: list[ast.AST] = []
        for name in current._fields:
            value = getattr(current, name, None)
            if isinstance(value, list):
                children.extend(v for v in value if isinstance(v, ast.AST) and not isinstance(v, leaves))
            elif isinstance(value, ast.AST) and not isinstance(value, leaves):
                children.append(value)
        stack.extend((child, False) for child in reversed(children))
    return out


def _literal_call(call: ast.Call) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return None
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return args, kwargs


def _statement_calls(stmt: ast.stmt, names: dict[str, str]) -> list[Any] | None:
    """The candidate calls one statement makes, or None when it cannot be predicted."""
    if not isinstance(stmt, _STRAIGHT):
        return None
    root = stmt.test if isinstance(stmt, ast.Assert) else stmt  # the message runs on failure only
    calls: list[Any] = []
    for node in _post_order(root, names):
        if isinstance(node, _STOP_INSIDE):
            return None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in names:
                literal = _literal_call(node)
                if literal is None:
                    return None
                calls.append((names[node.func.id], *literal))
    return calls


def predict(test: str, style: str, names: dict[str, str]) -> list[tuple[str, tuple, dict]]:
    """``(wire name, args, kwargs)`` of the calls the test makes first.

    ``names``: test-side name -> the candidate's function it calls. For the
    HumanEval style, the statements of ``check``'s body (its parameter also
    names the entry point); for the asserts style, the module's statements.
    """
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    body: list[ast.stmt] = tree.body
    names = dict(names)
    if style == "humaneval":
        check = next(
            (s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "check"), None
        )
        if check is None or not check.args.args:
            return []
        entry = next(iter(names.values()), None)
        if entry is None:
            return []
        names[check.args.args[0].arg] = entry
        body = check.body
    predicted: list[tuple[str, tuple, dict]] = []
    for stmt in body:
        calls = _statement_calls(stmt, names)
        if calls is None:
            break
        predicted.extend(calls)
        if len(predicted) >= MAX_PREDICTED:
            return predicted[:MAX_PREDICTED]
        if isinstance(stmt, ast.Assert) and stmt.msg is not None and _calls_anything(stmt.msg):
            # `assert candidate(1) == 2, str(candidate(1))`: when it fails, its message calls
            # again; nothing after it can be predicted without risking a re-run.
            break
    return predicted


def _calls_anything(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))
