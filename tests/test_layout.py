"""tests/ mirrors unet3d/: one home per module for its tests.

Every module of the package with logic (more than MIN_LINES lines of code: blank lines, comments and docstrings do
not count) has a test file at the same place under tests/, `tests/<same folders>/test_<module>.py`, holding at least
one test. Package `__init__.py` files are left out (the public API has tests/test_public_api.py), and so are the
command-line modules: the commands are tested as a user runs them, end to end, in tests/cli/test_<command>_cli.py.

The other way round, every test file mirrors a module, or is one of the few cross-cutting files listed below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "unet3d"
TESTS = ROOT / "tests"
MIN_LINES = 10

# Modules with logic that have no test file of their own, each with its reason. None today; keep it short.
EXEMPT: dict[str, str] = {}

# Test files and folders that mirror no single module, each with its reason.
CROSS_CUTTING = {
    "tests/test_architecture.py": "the import ranks of every module",
    "tests/test_layout.py": "this file: the layout of tests/",
    "tests/test_public_api.py": "unet3d/__init__.py, the names the README's Python example uses",
    "tests/test_readme.py": "the README stays true to the schema, CI and the example",
    "tests/safety": "the hostile-user suite (issue 11): refusals and failures across modules, end to end",
    "tests/examples": "smoke tests of the recipes in examples/",
    "tests/slurm": "a real SLURM cluster running the array script end to end (issue 23)",
    "tests/cli/test_device_cli.py": "--device as users meet it in unet3d-train and unet3d-predict (issue 15)",
    "tests/cli/test_help_cli.py": "--help and a wrong flag of every command, without importing torch (issue 25)",
}


def code_lines(path: Path) -> int:
    """Lines of code in a module: not blank, not a comment, not part of a docstring."""
    text = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(
            node, clean=False
        ):
            first = node.body[0]
            docstrings.update(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


def mirror(module: Path) -> Path:
    """Where the tests of a module live."""
    relative = module.relative_to(PACKAGE)
    return TESTS / relative.parent / f"test_{relative.stem}.py"


def has_tests(path: Path) -> bool:
    return any(
        isinstance(node, ast.FunctionDef) and node.name.startswith("test_") for node in ast.parse(path.read_text()).body
    )


MODULES = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if path.name != "__init__.py" and path.relative_to(PACKAGE).parts[0] != "cli" and code_lines(path) > MIN_LINES
)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_with_logic_has_a_mirroring_test_file(module):
    name = str(module.relative_to(ROOT))
    if name in EXEMPT:
        return
    expected = mirror(module)
    assert expected.is_file(), f"{name} has {code_lines(module)} lines of code and no {expected.relative_to(ROOT)}"
    assert has_tests(expected), f"{expected.relative_to(ROOT)} holds no test"


def test_every_test_file_mirrors_a_module_or_is_listed_as_cross_cutting():
    commands = {path.stem for path in (PACKAGE / "cli").glob("*.py")}
    listed = [ROOT / name for name in CROSS_CUTTING]
    strays = []
    for path in sorted(TESTS.rglob("test_*.py")):
        relative = path.relative_to(TESTS)
        if any(path.is_relative_to(item) for item in listed):
            continue
        stem = relative.stem.removeprefix("test_")
        if relative.parts[0] == "cli" and stem.endswith("_cli") and stem.removesuffix("_cli") in commands:
            continue
        if not (PACKAGE / relative.parent / f"{stem}.py").is_file():
            strays.append(str(path.relative_to(ROOT)))
    assert strays == [], "test files that mirror no module of unet3d/: move their tests to the module's file"


def test_the_lists_name_only_what_exists():
    for name in EXEMPT:
        assert (ROOT / name).is_file() and not mirror(ROOT / name).exists(), f"{name}: remove it from EXEMPT"
    for name in CROSS_CUTTING:
        assert (ROOT / name).exists(), f"{name}: remove it from CROSS_CUTTING"
