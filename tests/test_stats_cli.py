"""`chestaid stats` on the real metadata reports SPEC A3 exactly; CLI errors are one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from chestaid.apps.cli import app

A3 = {"No Finding": 60361, "Infiltration": 19894, "Effusion": 13317, "Atelectasis": 11559, "Nodule": 6331,
      "Mass": 5782, "Pneumothorax": 5302, "Consolidation": 4667, "Pleural_Thickening": 3385,
      "Cardiomegaly": 2776, "Emphysema": 2516, "Edema": 2303, "Fibrosis": 1686, "Pneumonia": 1431, "Hernia": 227}


def test_stats_json_matches_spec_a3(real_csv, tmp_path):
    result = CliRunner().invoke(app, ["stats", str(real_csv), "--json", "--plot", str(tmp_path),
                                      "--balance", "seed000"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["labels"] == A3
    assert summary["images"] == 112120 and summary["patients"] == 30805
    assert summary["balance"]["train_after"]["Hernia"] == 1500
    for name in ("label_distribution.png", "age_histogram.png", "sex_proportion.png"):
        assert (tmp_path / name).stat().st_size > 5000


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "stats", str(tmp_path / "missing")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing" in lines[0] and "Traceback" not in result.stderr
