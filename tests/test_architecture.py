"""The import rules of docs/architecture.md, checked on the source."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "llmeval"
GROUND = {"errors", "paths", "vocab", "records"}
COMMANDS = {"resolve", "generate", "score", "aggregate", "monitor", "campaign"}
HARNESS = {"cli"}


def imported_modules(path: Path) -> set[str]:
    """llmeval submodules a file imports (top-level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "llmeval":
                found.update(a.name for a in node.names)
            elif node.module.startswith("llmeval."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("llmeval."):
                    found.add(a.name.split(".")[1])
    return found


def room(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def modules():
    return [p for p in sorted(PKG.rglob("*.py")) if p.name != "__init__.py" or p.parent != PKG]


def test_ground_floor_imports_only_the_ground_floor():
    bad = {
        p.name: sorted(imported_modules(p) - GROUND)
        for p in modules()
        if room(p) in GROUND and imported_modules(p) - GROUND
    }
    assert bad == {}


def test_library_never_imports_the_cli_or_a_command():
    bad = {
        str(p.relative_to(PKG)): sorted(imported_modules(p) & (COMMANDS | HARNESS))
        for p in modules()
        if room(p) not in COMMANDS | HARNESS and imported_modules(p) & (COMMANDS | HARNESS)
    }
    assert bad == {}


def test_no_command_imports_another():
    bad = {
        p.name: sorted((imported_modules(p) & COMMANDS) - {room(p)})
        for p in modules()
        if room(p) in COMMANDS and (imported_modules(p) & COMMANDS) - {room(p)}
    }
    assert bad == {}


def test_every_command_main_is_short_and_alike():
    """Each command's main is the harness's: ``return X().main(argv)``."""
    for name in sorted(COMMANDS):
        tree = ast.parse((PKG / f"{name}.py").read_text())
        (main,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert len(main.body) == 1 and isinstance(main.body[0], ast.Return), name
        call = main.body[0].value
        assert isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "main", name


def test_every_module_has_a_test_file():
    tests = Path(__file__).resolve().parent
    have = {p.stem.removeprefix("test_") for p in tests.glob("test_*.py")}
    missing = sorted(
        p.stem for p in PKG.glob("*.py") if p.stem != "__init__" and p.stem not in have
    )
    assert missing == []
