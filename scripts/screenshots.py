"""Redraw the README's pictures from a finished demo: the triage page (served, an image uploaded and analysed,
in headless Debian chromium through Playwright) and the top of the NIH run's report.

Usage: python scripts/screenshots.py [DEMO_DIR] [OUT_DIR]   (defaults: chestaid-demo docs/images)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "chestaid-demo")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    run = demo / "nih" / "run"
    test_ids = set((demo / "nih" / "data" / "test_list.txt").read_text().split())
    boxed = [line.split(",")[0] for line in (demo / "nih" / "data" / "BBox_List_2017.csv").read_text().splitlines()[1:]]
    image = next(p for name in boxed if name in test_ids
                 for p in (demo / "nih" / "data").glob(f"images_*/images/{name}"))
    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "chestaid.apps.cli", "serve", str(run), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.locator("#age textarea, #age input").first.fill("58")  # the Age box is text: empty = unknown
            page.set_input_files("#upload input[type=file]", str(image))
            page.wait_for_timeout(1000)
            page.click("#analyse")
            page.wait_for_function("() => { const e = document.querySelector('#score textarea, #score input');"
                                   " return e && e.value.length > 0; }", timeout=120_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "page.png"), full_page=True)
            report = browser.new_page(viewport={"width": 1150, "height": 1500})
            report.goto((run / "report.html").resolve().as_uri())
            report.screenshot(path=str(out / "report.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(f"wrote {out / 'page.png'} and {out / 'report.png'} (image {image.name})")


if __name__ == "__main__":
    main()
