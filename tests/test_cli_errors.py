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
        (["worklist", str(full / "x.txt")], "is a file"),
    ]


@pytest.mark.parametrize("index", range(18))
def test_each_command_reports_a_user_error_in_one_line(index, tmp_path, capsys, monkeypatch):
    args, named = _cases(tmp_path)[index]
    monkeypatch.setattr(sys, "argv", ["chestaid", *args])
    with pytest.raises(SystemExit) as stopped:  # anything else escaping main() is the traceback a user would see
        main()
    assert stopped.value.code not in (0, None), args
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], (args, stderr[-2000:])


def _run_main(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["chestaid", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_set_mistakes_name_the_key_and_suggest_without_blaming_the_package(tmp_path, capsys, monkeypatch):
    code, lines = _run_main(["train", "--config", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                             "--set", "train.epoch=1"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "train.epoch" in lines[0] and "did you mean train.epochs" in lines[0] and "demo.yaml" not in lines[0]
    code, lines = _run_main(["train", "--config", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                             "--set", "train.epochs", "1"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: --set takes key=value in one word: --set train.epochs=1"]
    assert not (tmp_path / "r").exists()


def test_failed_checks_create_nothing(tmp_path, capsys, monkeypatch):
    """A mistyped --data leaves no run folder; predict on a missing input is a usage error that writes
    nothing; compare names the path that is not a run."""
    code, lines = _run_main(["train", "--config", "demo", "--data", str(tmp_path / "nothere"),
                             "--out", str(tmp_path / "r2")], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "nothere" in lines[0]
    assert not (tmp_path / "r2").exists()
    code, lines = _run_main(["prepare", str(tmp_path / "nothere"), "--out", str(tmp_path / "c2")], monkeypatch, capsys)
    assert code == 2 and not (tmp_path / "c2").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "model.safetensors").write_bytes(b"")
    out = tmp_path / "out" / "w.csv"
    code, lines = _run_main(["predict", str(run), str(tmp_path / "nonexistent"), "--out", str(out)],
                            monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "nonexistent: no such file or folder" in lines[0]
    assert not out.parent.exists()
    code, lines = _run_main(["compare", str(run), str(tmp_path / "doesnotexist")], monkeypatch, capsys)
    assert code == 2 and "doesnotexist: no such folder" in lines[0] and "evaluate" not in lines[0]


def test_verbose_shows_the_cause_of_an_error(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    code, lines = _run_main(["--verbose", "train", "--config", str(bad), "--data", str(tmp_path), "--out",
                             str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and lines[-1].startswith("error:") and "not valid YAML" in lines[-1]
    assert any("Traceback" in line for line in lines) and any("yaml" in line.lower() for line in lines[:-1])
    code, lines = _run_main(["train", "--config", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "r")],
                            monkeypatch, capsys)
    assert len(lines) == 1


def test_serve_says_serving_only_once_it_listens(tmp_path, capsys, monkeypatch):
    """A busy port is named as the page's and nothing says "serving"; a missing run the same."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, lines = _run_main(["serve", str(tmp_path), "--port", str(port)], monkeypatch, capsys)
    assert code == 2 and any(f"cannot listen on 127.0.0.1:{port} for the page" in line for line in lines), lines
    out = capsys.readouterr().out
    assert "serving" not in out
    code, lines = _run_main(["serve", str(tmp_path / "missing")], monkeypatch, capsys)
    assert code == 2 and "serving" not in capsys.readouterr().out
