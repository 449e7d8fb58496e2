"""The README: its two set-up commands come first, every skipped block says why, and every `chestaid` command
it shows (also in blocks CI cannot run: real data, GPU, servers) names a real subcommand and real options.
scripts/run_readme.py runs the runnable blocks themselves."""

from __future__ import annotations

import pytest

import importlib.util
import shlex
from pathlib import Path

import typer

from chestaid.apps.cli import app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_readme", ROOT / "scripts" / "run_readme.py")
run_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_readme)


def _blocks():
    return run_readme.blocks((ROOT / "README.md").read_text())


def _commands(code: str) -> list[list[str]]:
    lines = code.replace("\\\n", " ").splitlines()
    commands = []
    for line in lines:
        for part in line.split("&&"):
            tokens = shlex.split(part, comments=True)
            if tokens:
                commands.append(tokens)
    return commands


def test_the_two_setup_commands_come_first():
    bash = [(code, reason) for _, language, code, reason in _blocks() if language == "bash"]
    assert bash[0] == ("pip install -e . && chestaid demo", None)
    assert ("bash scripts/test.sh", "this is the CI command itself") in bash[:3]


def test_every_skipped_block_gives_a_reason():
    for line, _, _, reason in _blocks():
        assert reason is None or len(reason) > 10, f"README.md:{line}: a skip mark needs a reason"


def test_every_chestaid_command_and_option_exists():
    group = typer.main.get_command(app)
    seen = 0
    for line, language, code, _ in _blocks():
        if language != "bash":
            continue
        for tokens in _commands(code):
            if tokens[0] != "chestaid":
                continue
            command, rest = group, tokens[1:]
            while hasattr(command, "commands"):  # descend into sub-groups (synth nih|pneumonia)
                assert rest and rest[0] in command.commands, f"README.md:{line}: unknown command in {tokens}"
                command, rest = command.commands[rest[0]], rest[1:]
            known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            for token in rest:
                if token.startswith("--"):
                    assert token.split("=")[0] in known, f"README.md:{line}: {tokens[1]} has no option {token}"
            seen += 1
    assert seen >= 20
