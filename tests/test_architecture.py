"""The shape of the code (docs/architecture.md): layers import only downward, no cycles inside a package,
light modules stay light, no module grows past 300 lines. import-linter's contract in pyproject.toml is the
proof; these tests run it on the code and on a copy with a deliberate upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "chestaid"


def _lint(src_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src_parent)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layer_contract_holds():
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def _lint_with(tmp_path: Path, module: str, addition: str) -> subprocess.CompletedProcess:
    """import-linter on a copy of the package with `addition` appended to `module` (a path under chestaid/)."""
    copy = tmp_path / "src" / "chestaid"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "nih_metadata"))
    target = copy / module
    target.write_text(target.read_text() + addition)
    return _lint(tmp_path / "src")


def test_an_upward_import_breaks_the_contract(tmp_path):
    result = _lint_with(tmp_path, "core/errors.py", "\n\ndef _upward() -> None:\n    from chestaid.apps import cli  # noqa\n")
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "chestaid.core.errors -> chestaid.apps.cli" in result.stdout


def test_a_cycle_inside_a_package_breaks_the_contract(tmp_path):
    result = _lint_with(tmp_path, "data/splits.py", "\n\ndef _cycle() -> None:\n    from chestaid.data import cache  # noqa\n")
    assert result.returncode != 0 and "No cycles are allowed in chestaid.data" in result.stdout


def test_run_paths_and_the_package_import_nothing_heavy():
    code = ("import sys, chestaid, chestaid.core.run_paths, chestaid.core.manifest; "
            "print(sorted(m for m in ('torch', 'lightning', 'gradio', 'matplotlib', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_over_300_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


def test_a_command_importing_below_the_api_breaks_the_contract(tmp_path):
    result = _lint_with(tmp_path, "apps/cli_runs.py",
                        "\n\ndef _below() -> None:\n    from chestaid.workflows import predict  # noqa\n")
    assert result.returncode != 0 and "chestaid.apps.cli_runs -> chestaid.workflows.predict" in result.stdout


def test_the_package_root_reaches_the_library_only_through_the_api():
    """`chestaid/__init__.py` (outside any layer: import-linter's layers are its children) imports chestaid.api,
    chestaid.core and, lazily, the two classes it names."""
    import ast

    tree = ast.parse((SRC / "__init__.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    allowed = {"__future__", "typing", "chestaid.api", "chestaid.core.errors", "chestaid.core.version",
               "chestaid.inference.predictor", "chestaid.inference.prediction"}
    assert imported <= allowed, imported - allowed
    lazy = {node.module for f in tree.body if isinstance(f, ast.FunctionDef) for node in ast.walk(f)
            if isinstance(node, ast.ImportFrom)}
    assert lazy == {"chestaid.inference.predictor", "chestaid.inference.prediction"}


def test_every_public_function_of_the_api_is_exported_by_the_package():
    import inspect

    import chestaid
    import chestaid.api as api

    public = {n for n, f in inspect.getmembers(api, inspect.isfunction) if f.__module__ == api.__name__
              and not n.startswith("_")} - {"is_lead_process", "with_interval"}  # the CLI's helpers
    assert public <= set(chestaid.__all__), public - set(chestaid.__all__)
