"""benchmarks/serve_load.py with a small N, as CI runs it: the real server under concurrent gradio_client
calls, good and bad files mixed; the figures are for the benchmark's JSON, only errors are asserted."""

from __future__ import annotations

import pytest

import json
import subprocess
import sys
from pathlib import Path

pytestmark = pytest.mark.peers

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_serve_load_small(tiny_run, tmp_path):
    out = tmp_path / "serve_load.json"
    subprocess.run([sys.executable, "serve_load.py", str(tiny_run.root), "--n", "40", "--concurrency", "4",
                    "--warmup", "8", "--out", str(out)], cwd=BENCHMARKS, check=True, timeout=600,
                   capture_output=True)
    result = json.loads(out.read_text())
    assert result["requests"] == 40 and result["errors"] == 0
    assert result["p95_ms"] >= result["p50_ms"] > 0 and result["server_rss_end_mib"] > 0
    assert result["logins"] and result["request_without_login_refused"] and result["upload_folder_files_at_end"] == 0
