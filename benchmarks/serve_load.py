"""Load test of `chestaid serve`: N requests at concurrency C through gradio_client's /score API.

Starts the server as a user would, with logins on (`python -m chestaid.apps.cli serve RUN --users FILE` on a free
loopback port; each client sends the user's API token), warms it up,
then sends N requests from C threads (each with its own client), every fifth one a bad file (not an image, a
truncated PNG, an empty file) that must come back as an error message or be refused at upload (415), never as a
failure of the server; a
good file must come back scored (or, from a run with an input gate, refused with its reason: both are answers;
the share refused is reported).
Reports errors, p50/p95 latency, requests/s and the server's resident memory (VmRSS) after warm-up and at
the end, and the files left in the private upload folder at the end (after the sweeper's 10 s grace for
Gradio's empty temporary files). Only loopback is contacted; the number of requests and the time are bounded.
Writes benchmarks/results/serve_load.json.
Usage: python benchmarks/serve_load.py RUN [--n 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import write_result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def test_files(folder: Path, run: Path) -> tuple[list[Path], list[Path]]:
    """Good files: synthetic NIH PNGs at the run's cache size; bad files: three kinds of broken input."""
    from chestaid.data.phantoms.synthetic import synth_nih
    from chestaid.models.weights import load_model

    size = load_model(run)[0].data.cache_size
    root = synth_nih(folder / "nih", n=24, size=max(size, 64), seed=1)
    good = sorted(root.glob("images_*/images/*.png"))
    (folder / "text.png").write_text("not an image")
    (folder / "cut.png").write_bytes(good[0].read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    return good, [folder / "text.png", folder / "cut.png", folder / "empty.png"]


def load_test(run: str | Path, n: int, concurrency: int, warmup: int = 50, deadline_s: float = 1800) -> dict:
    """Start the server on `run`, send `warmup` then `n` requests at `concurrency`; figures as a dict."""
    from gradio_client import Client, handle_file

    from chestaid.apps.page.auth import add_user

    run = Path(run)
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    token = add_user(work / "users.json", "loadtest", "a long enough password")
    headers = {"Authorization": f"Bearer {token}"}
    server = subprocess.Popen([sys.executable, "-m", "chestaid.apps.cli", "serve", str(run), "--port", str(port),
                               "--users", str(work / "users.json"), "--upload-dir", str(work / "uploads")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    local = threading.local()
    try:
        started = time.time()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() - started > 180:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            good, bad = test_files(Path(tmp), run)

            def request(i: int) -> tuple[float, bool, bool]:
                if not hasattr(local, "client"):
                    local.client = Client(url, verbose=False, headers=headers)
                is_bad = i % 5 == 4
                path = bad[i % len(bad)] if is_bad else good[i % len(good)]
                begin = time.perf_counter()
                try:
                    result = local.client.predict(handle_file(str(path)), 60, "M", "PA", api_name="/score")
                    refused = "refused" in result and not is_bad
                    ok = ("error" in result) if is_bad else (refused or len(result.get("findings", {})) > 0)
                except Exception as e:  # noqa: BLE001 - any failure of a request is counted, not raised
                    ok, refused = is_bad and "415" in str(e), False  # a bad file refused at upload is an answer
                return time.perf_counter() - begin, ok, refused

            def send(count: int, offset: int) -> list[tuple[float, bool, bool]]:
                with ThreadPoolExecutor(concurrency) as pool:
                    futures = [pool.submit(request, offset + i) for i in range(count)]
                    return [f.result(timeout=max(1.0, deadline_s - (time.time() - started))) for f in futures]

            send(warmup, 0)
            rss_before = rss_mib(server.pid)
            begin = time.perf_counter()
            results = send(n, warmup)
            elapsed = time.perf_counter() - begin
            rss_after = rss_mib(server.pid)
            time.sleep(25)  # the sweeper's grace for Gradio's empty temporary upload files
            left = [f for f in (work / "uploads").rglob("*") if f.is_file()]
            unauthenticated = urllib.request.Request(url + "gradio_api/info")
            try:
                urllib.request.urlopen(unauthenticated, timeout=10)
                refused_without_login = False
            except urllib.error.HTTPError as e:
                refused_without_login = e.code == 401
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    latencies = np.array([t for t, _, _ in results]) * 1000
    return {"run": run.name, "requests": n, "concurrency": concurrency, "warmup_requests": warmup,
            "bad_file_share": 0.2, "errors": int(sum(not ok for _, ok, _ in results)),
            "good_files_refused_by_gate": int(sum(refused for _, _, refused in results)),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(float(np.percentile(latencies, 95)), 1),
            "requests_per_s": round(n / elapsed, 1),
            "server_rss_after_warmup_mib": round(rss_before, 1), "server_rss_end_mib": round(rss_after, 1),
            "server_rss_growth_mib": round(rss_after - rss_before, 1), "logins": True,
            "request_without_login_refused": refused_without_login, "upload_folder_files_at_end": len(left)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--out")
    args = parser.parse_args()
    write_result("serve_load", load_test(args.run, args.n, args.concurrency, args.warmup), args.out)


if __name__ == "__main__":
    main()
