"""Every command's user errors are one line on stderr and a non-zero exit, never a traceback: through the real
entry point (`chestaid.apps.cli.main`, what the `chestaid` script calls), in this process to keep it quick."""

from __future__ import annotations

import sys

import pytest

from chestaid.apps.cli import main


def _cases(tmp) -> list[tuple[list[str], str]]:
    full = tmp / "full"
    full.mkdir()
    (full / "x.txt").write_text("mine")
    missing = str(tmp / "missing")
    return [
        (["synth", "nih", str(full), "--n", "10"], "not empty"),
        (["weights", "import-xrv", missing, "--out", str(tmp / "w.safetensors")], "missing"),
        (["prepare", missing, "--out", str(tmp / "c")], "missing"),
        (["stats", missing], "missing"),
        (["train", "--data", missing, "--out", str(tmp / "r")], "missing"),
        (["train", "--resume", missing], "missing"),
        (["evaluate", missing], "missing"),
        (["calibrate", missing], "missing"),
        (["thresholds", missing, "--policy", "youden"], "missing"),
        (["predict", missing, str(tmp)], "missing"),
        (["export", missing], "missing"),
        (["explain", missing, "--data", missing], "missing"),
        (["serve", missing], "missing"),
        (["compare", missing, missing], "missing"),
        (["demo", "--task", "chest", "--out", str(tmp / "d")], "chest"),
        (["node", missing, "--store", str(tmp / "s")], "missing"),
        (["worklist", missing], "missing"),
    ]


@pytest.mark.parametrize("index", range(17))
def test_each_command_reports_a_user_error_in_one_line(index, tmp_path, capsys, monkeypatch):
    args, named = _cases(tmp_path)[index]
    monkeypatch.setattr(sys, "argv", ["chestaid", *args])
    with pytest.raises(SystemExit) as stopped:  # anything else escaping main() is the traceback a user would see
        main()
    assert stopped.value.code not in (0, None), args
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], (args, stderr[-2000:])
