"""The tree stays formatted, lint-clean (ruff) and type-checked (mypy --strict), as configured
in pyproject.toml, and made of small parts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command", [["format", "--check", "."], ["check", "."]], ids=["format", "check"]
)
def test_ruff(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Past these a class or a function holds more than one concern; the argparse tables are lists
# of options, not logic.
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60
ARGPARSE_TABLES = {"build_parser"}


def test_classes_and_functions_stay_small() -> None:
    too_long = []
    for path in sorted((ROOT / "instarec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_FUNCTION_LINES if node.name not in ARGPARSE_TABLES else None
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if limit is not None and lines > limit:
                too_long.append(f"{path.relative_to(ROOT)}: {node.name} ({lines} lines)")
    assert too_long == []
