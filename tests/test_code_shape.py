"""No function in the product packages is longer than 80 lines unless its docstring says why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("rag", "api", "ingest", "eval")
MAX_LINES = 80
# The docstring of a longer function must explain itself, e.g. "Over 80 lines because it is one class body: ...".
JUSTIFIED = re.compile(r"over 80 lines because", re.IGNORECASE)


def long_functions(root: Path, packages: tuple[str, ...] = PRODUCT_PACKAGES) -> list[str]:
    """``path:line name (N lines)`` for every function or method over the limit without a justification."""
    offenders: list[str] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES and not JUSTIFIED.search(ast.get_docstring(node) or ""):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return offenders


def test_no_function_over_80_lines_without_a_reason() -> None:
    offenders = long_functions(REPO)
    assert not offenders, "functions over 80 lines (split them, or say why in the docstring):\n" + "\n".join(offenders)


def test_the_check_finds_a_long_function_and_accepts_a_justified_one(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(
        f"def long_one():\n{body}\n\n\n"
        f'def justified():\n    """Over 80 lines because it is a table."""\n{body}\n\n\n'
        f"def short_one():\n    return 1\n",
        encoding="utf-8",
    )
    assert long_functions(tmp_path, ("pkg",)) == [f"{Path('pkg/mod.py')}:1 long_one ({MAX_LINES + 1} lines)"]
