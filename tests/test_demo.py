"""`chestaid demo`: end to end on a tiny setting, killed mid-way and resumed, refusing a foreign folder, and
its printed serve command starting the page of the demo's own run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from serving import free_port, serving

from chestaid.apps.demo import STATE, demo_settings, open_demo_dir
from chestaid.core.errors import ChestaidError

pytestmark = pytest.mark.slow

TINY = ["--images", "200", "--size", "64", "--epochs", "1"]


def _demo(out, *extra) -> list[str]:
    return [sys.executable, "-m", "chestaid.apps.cli", "demo", "--out", str(out), *TINY, *extra]


def test_demo_runs_resumes_and_its_serve_command_shows_its_run(tmp_path):
    out = tmp_path / "demo"
    first = subprocess.Popen(_demo(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state_file = out / STATE
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:  # kill -9 once the NIH cache is built
        if state_file.is_file() and "nih/prepare" in json.loads(state_file.read_text())["done"]:
            os.killpg(first.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the demo finished before it could be interrupted"

    resumed = subprocess.run(_demo(out), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # the steps are the library's log lines (stderr); the results are printed (stdout)
    assert "nih/synth: done earlier" in resumed.stderr and "nih/prepare: done earlier" in resumed.stderr
    done = json.loads(state_file.read_text())["done"]
    assert list(done) == ["nih/synth", "nih/prepare", "nih/train", "nih/calibrate", "nih/explain", "nih/evaluate",
                          "pneumonia/synth", "pneumonia/prepare", "pneumonia/train", "pneumonia/calibrate",
                          "pneumonia/evaluate"]
    for task in ("nih", "pneumonia"):
        report = (out / task / "run" / "report.html").read_text()
        assert "does not diagnose" in report and "calibrated risk scores" in report
        assert "Synthetic data" in report
    assert "Grad-CAM localisation" in (out / "nih" / "run" / "report.html").read_text()
    assert "test mean AUROC over findings" in resumed.stdout and "test ROC-AUC" in resumed.stdout

    again = subprocess.run(_demo(out), capture_output=True, text=True, timeout=300)  # all done: nothing redone
    assert again.returncode == 0 and again.stderr.count("done earlier") == len(done)

    line = next(x for x in resumed.stdout.splitlines() if "open the web page:" in x)
    command = shlex.split(line.split("open the web page:")[1].split("(or")[0])
    assert command[:2] == ["chestaid", "serve"]
    port = free_port()
    with serving([sys.executable, "-m", "chestaid.apps.cli", *command[1:], "--port", str(port)], port) as url:
        from gradio_client import Client, handle_file

        image = next((out / "nih" / "data" / "images_001" / "images").glob("*.png"))
        result = Client(url, verbose=False).predict(handle_file(str(image)), None, "unknown", "unknown", True,
                                                    api_name="/score")  # scored even if the gate refuses it
    assert result["run"] == "run" and len(result["findings"]) == 14  # the run's name, never a server path
    assert result["calibrated"] and result["gate"]["fitted"]


def test_demo_refuses_a_foreign_folder_and_force_keeps_other_files(tmp_path):
    settings = demo_settings(size=64)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ChestaidError, match="not empty and holds no demo"):
        open_demo_dir(tmp_path, settings)
    (tmp_path / "nih").mkdir()
    (tmp_path / "nih" / "old").write_text("demo output")
    open_demo_dir(tmp_path, settings, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "nih").exists()
    assert open_demo_dir(tmp_path, settings)["done"] == {}  # a demo folder resumes
    with pytest.raises(ChestaidError, match="other settings"):
        open_demo_dir(tmp_path, demo_settings(size=96))


def test_demo_cli_error_is_one_line(tmp_path):
    (tmp_path / "x").write_text("")
    run = subprocess.run(_demo(tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "--force" in run.stderr
