"""Redraw the README's pictures from a finished demo: the triage page (served, an image uploaded and analysed,
in headless Debian chromium through Playwright), the top of the NIH run's report, and the worklist tab of
`chestaid serve --store` after the DICOM node received six of the demo's test images (wrapped as CR DICOMs with
the synthetic patients' age, sex and view) and one hand radiograph it refuses, one study opened with its heat map.

Usage: python scripts/screenshots.py [DEMO_DIR] [OUT_DIR]   (defaults: chestaid-demo docs/images)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from playwright.sync_api import sync_playwright
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from chestaid.apps.node.node import Node, NodeConfig
from chestaid.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_dicom(png: Path, out: Path, age: int, sex: str, view: str, body_part: str = "CHEST") -> Path:
    """A demo PNG as an 8-bit CR DICOM (synthetic patient: no real person's data)."""
    pixels = np.asarray(Image.open(png).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = "1.2.840.10008.5.1.4.1.1.1", ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[png.name, body_part])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", png.name, body_part])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", png.name, body_part])
    ds.PatientName, ds.PatientAge, ds.PatientSex = "SYNTHETIC^PHANTOM", f"{age:03d}Y", sex
    ds.PatientID = png.stem if body_part == "CHEST" else f"{png.stem}-{body_part}"
    ds.StudyDate, ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "20240101", "CR", body_part, view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


def fill_store(demo: Path, store: Path, folder: Path) -> None:
    """Send six test images and one refused study to a DICOM node on the NIH run; return once all are done."""
    entries = pd.read_csv(demo / "nih" / "data" / "Data_Entry_2017.csv").set_index("Image Index")
    test = (demo / "nih" / "data" / "test_list.txt").read_text().split()[:6]
    files = [as_dicom(next((demo / "nih" / "data").glob(f"images_*/images/{name}")), folder / f"{k}.dcm",
                      int(entries.at[name, "Patient Age"]), entries.at[name, "Patient Gender"],
                      entries.at[name, "View Position"]) for k, name in enumerate(test)]
    files.append(as_dicom(next((demo / "nih" / "data").glob(f"images_*/images/{test[0]}")), folder / "hand.dcm",
                          40, "F", "PA", body_part="HAND"))
    with Node(NodeConfig(run=demo / "nih" / "run", store=store, port=0, host="127.0.0.1")) as node:
        subprocess.run(["dcmsend", "-aec", "CHESTAID", "127.0.0.1", str(node.port), *map(str, files)], check=True)
        for _ in range(600):
            if not node.store.counts().get("queued", 0):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the node has not scored what it received after 300 s: {node.store.counts()}")


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "chestaid-demo")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    run = demo / "nih" / "run"
    test_ids = set((demo / "nih" / "data" / "test_list.txt").read_text().split())
    boxed = [line.split(",")[0] for line in (demo / "nih" / "data" / "BBox_List_2017.csv").read_text().splitlines()[1:]]
    image = next(p for name in boxed if name in test_ids
                 for p in (demo / "nih" / "data").glob(f"images_*/images/{name}"))
    with served(run, width=1280, height=900) as (browser, page):
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
    worklist(demo, run, out)
    print(f"wrote {out / 'page.png'}, {out / 'report.png'} (image {image.name}) and {out / 'worklist.png'}")


def worklist(demo: Path, run: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        fill_store(demo, store, Path(tmp))
        opened = Store.open(store)
        uid = max(opened.instances("scored"), key=lambda row: row["risk"])["sop_uid"]
        opened.close()
        with served(run, "--store", str(store), width=1300, height=1000) as (_, page):
            page.click("button[role=tab]:has-text('Worklist')")
            page.wait_for_function("() => document.querySelector('#worklist').innerText.includes('scored')")
            page.fill("#worklist-uid textarea, #worklist-uid input", uid)
            page.click("#worklist-open")
            page.wait_for_function("() => document.querySelector('#worklist-image img') !== null", timeout=60_000)
            page.click("#worklist-heat")
            page.wait_for_function("() => document.querySelector('#worklist-heatmap img') !== null",
                                   timeout=120_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "worklist.png"), full_page=True)


@contextmanager
def served(run: Path, *serve_args: str, width: int, height: int) -> Iterator[tuple]:
    """`chestaid serve RUN` on a free loopback port, and a headless chromium page open on it."""
    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "chestaid.apps.cli", "serve", str(run), "--port", str(port),
                               *serve_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            yield browser, page
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
