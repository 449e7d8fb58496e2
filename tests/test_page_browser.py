"""The page in a real browser (Playwright + Debian's chromium) with logins on (issue 25): a wrong password is
refused; a DICOM whose tags are Markdown links and images, and a file name that is one, render as inert text;
the empty Age box reaches the model as unknown; after the session no upload is left in the upload folder.
Then the node's worklist: a study that arrives while the page is open appears, is opened and reviewed, and
the review is in `chestaid audit`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serving import PASSWORD, free_port, serve_command, serving, users_file

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]
EVIL = "http://127.0.0.1:7951/"
FOREIGN = """() => [...document.querySelectorAll('a[href], img[src]')].map(e => e.href || e.src)
    .filter(u => !u.startsWith('data:') && !u.startsWith(location.origin) && !u.startsWith('https://gradio.app'))"""  # Gradio's footer


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"])


def _login(page, url: str, password: str = PASSWORD) -> None:
    page.goto(url)
    page.fill("input[type=text]", "alice")
    page.fill("input[type=password]", password)
    page.keyboard.press("Enter")


def _analyse(page, path: Path, box: str) -> str:
    page.set_input_files("#upload input[type=file]", str(path))
    page.wait_for_timeout(1000)
    page.click("#analyse")
    page.wait_for_function(f"() => document.querySelector('{box} textarea').value.length > 0", timeout=60_000)
    return page.input_value(f"{box} textarea")


def _injection_files(folder: Path) -> tuple[Path, Path]:
    import pydicom
    from node_helpers import phantom

    dicom = phantom(folder / "tags.dcm", "1.2.826.0.1.3680043.8.498.1", 0)
    ds = pydicom.dcmread(dicom)
    ds.BodyPartExamined = f"[CLICK HERE TO LOGIN]({EVIL})"
    ds.SeriesDescription = f"![I]({EVIL}PIXEL.PNG)"
    ds.save_as(dicom)
    named = folder / "[click me](javascript:alert(1)) **b**.png"  # a file name cannot hold a URL's slashes
    return dicom, named


def test_browser_logins_inert_text_unknown_age_and_no_upload_left(ungated_run, nih_root, tmp_path):
    from playwright.sync_api import sync_playwright

    users, _ = users_file(tmp_path)
    parent = tmp_path / "uploads"
    dicom, named = _injection_files(tmp_path)
    shutil.copy(sorted((nih_root / "images_001" / "images").glob("*.png"))[0], named)
    port = free_port()
    with serving(serve_command(ungated_run.root, port, "--users", str(users), "--upload-dir", str(parent)), port) \
            as url, sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        _login(page, url, "wrong password!")
        page.wait_for_timeout(1500)
        assert page.locator("#analyse").count() == 0  # still the login screen
        _login(page, url)
        page.wait_for_selector("#analyse", timeout=30_000)
        message = _analyse(page, named, "#message")  # the empty Age box: unknown, not 0
        assert "age unknown (neutral value assumed)" in message
        assert page.evaluate(FOREIGN) == [] and page.locator("a[href^='javascript']").count() == 0
        assert page.locator("strong:text-is('b'), b:text-is('b')").count() == 0
        page.goto(url)
        page.wait_for_selector("#analyse")
        refusal = _analyse(page, dicom, "#decision")
        assert f"[CLICK HERE TO LOGIN]({EVIL.upper()})" in refusal  # shown as the text it is
        assert page.evaluate(FOREIGN) == [] and page.locator(f"a[href^='{EVIL}']").count() == 0
        browser.close()
        folder = next(parent.glob("chestaid-page-*"))
        assert [f for f in folder.rglob("*") if f.is_file() and f.stat().st_size] == []


def _arrive(store, dicom: Path, risk: float, labels: list[str], model: dict | None = None) -> str:
    import pydicom

    from chestaid.store import Instance

    ds = pydicom.dcmread(dicom)
    store.receive(Instance(ds.SOPInstanceUID, ds.StudyInstanceUID, modality="CR", accession="ACC1",
                           patient_id=ds.PatientID, study_date=ds.StudyDate, view=ds.ViewPosition), dicom.read_bytes())
    scores = {name: {"risk": risk / (k + 1), "decision": int(k == 0)} for k, name in enumerate(labels)}
    store.finish(ds.SOPInstanceUID, "scored", risk=risk, top=labels[0], flagged=labels[0], scores=scores,
                 model=model)
    return ds.SOPInstanceUID


def _open_a_two_image_study(page, store, tmp_path: Path, labels: list[str], ours: dict) -> None:
    """A PA and its lateral (not read by the model) arrive as one study: one row; clicking it lists both images
    with their states and opens the read one; a verdict for the whole study goes to its read image."""
    from node_helpers import phantom

    pa = _arrive(store, phantom(tmp_path / "c.dcm", "1.2.3.6", 2), 0.5, labels, ours)
    lateral = phantom(tmp_path / "d.dcm", "1.2.3.6", 3)
    _arrive_not_read(store, lateral)
    page.wait_for_function("() => document.querySelector('#worklist').innerText.includes('2 image(s)')",
                           timeout=30_000)
    page.locator("#worklist").get_by_text("1.2.3.6", exact=True).first.click()  # its row
    page.wait_for_function("() => document.querySelector('#study-images').innerText.includes('not read')",
                           timeout=30_000)
    images = page.inner_text("#study-images")
    assert pa in images and "a lateral view" in images and images.count("1.2.826") + images.count("1.2.3") >= 2
    page.wait_for_function(f"() => document.querySelector('#worklist-uid textarea, #worklist-uid input').value"
                           f" === '{pa}'", timeout=30_000)  # the read image is the one opened
    assert "1 scored, 1 not read" in page.input_value("#study-status textarea")
    page.click("#verdict-of-Effusion label:has-text('present')")
    page.click("#verdict-save-study")
    page.wait_for_function("() => document.querySelector('#verdicts textarea').value.includes("
                           "'Study verdicts saved on its 1 read image')", timeout=30_000)
    assert store.latest_verdicts()[pa]["Effusion"] == "present"
    assert store.latest_verdicts().get(str(_uid(lateral))) is None  # the lateral was not read: no verdict on it


def _uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _arrive_not_read(store, dicom: Path) -> None:
    import pydicom

    from chestaid.store import Instance

    ds = pydicom.dcmread(dicom)
    store.receive(Instance(ds.SOPInstanceUID, ds.StudyInstanceUID, modality="CR", accession="ACC1",
                           patient_id=ds.PatientID, study_date=ds.StudyDate, view="LL"), dicom.read_bytes())
    store.finish(ds.SOPInstanceUID, "not read", "DICOM ViewPosition is LL: a lateral view, not a frontal (PA/AP) one")


def test_browser_worklist_shows_an_arriving_study_and_audits_its_review(ungated_run, tmp_path):
    from node_helpers import phantom
    from playwright.sync_api import sync_playwright

    from chestaid.store import Store

    from chestaid.inference.identity import run_identity

    store = Store(tmp_path / "store")
    labels = ["Atelectasis", "Effusion"]
    ours = run_identity(ungated_run.root)
    first = _arrive(store, phantom(tmp_path / "a.dcm", "1.2.3.4", 0), 0.2, labels, ours)
    port = free_port()
    command = serve_command(ungated_run.root, port, "--store", str(tmp_path / "store"))
    with serving(command, port) as url, sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(url)
        page.click("button[role=tab]:has-text('Worklist')")
        page.wait_for_function("() => document.querySelector('#worklist').innerText.includes('1.2.3.4')")
        assert not page.locator("#analyse").is_visible()  # one tab bar: the Upload tab is hidden now
        second = _arrive(store, phantom(tmp_path / "b.dcm", "1.2.3.5", 1), 0.9, labels, ours)  # while the page is open
        page.wait_for_function("() => document.querySelector('#worklist').innerText.includes('1.2.3.5')",
                               timeout=30_000)
        text = page.inner_text("#worklist")  # one row per study
        assert text.index("1.2.3.5") < text.index("1.2.3.4") and first not in text  # highest risk first
        page.fill("#worklist-uid textarea, #worklist-uid input", second)
        page.click("#worklist-open")
        page.wait_for_function("() => document.querySelector('#worklist-image img') !== null", timeout=30_000)
        assert "Effusion" in page.inner_text("#worklist-findings")
        header = page.input_value("#worklist-status textarea")  # whose image it is, before any verdict
        assert "Patient ID PHANTOM01" in header and "accession ACC1" in header and "study date 2024-01-01" in header
        assert "view PA" in header and "no verdict yet" in header
        assert "PHANTOM01" in page.inner_text("#worklist")  # on every row too
        page.click("#worklist-heat")
        page.wait_for_function("() => document.querySelector('#worklist-heatmap img') !== null", timeout=60_000)
        top = store.instance(second)["top_finding"]
        assert f"Heat map of {top}" in page.inner_text("#worklist-heatmap")  # names its finding, with a scale
        assert page.locator("#worklist-heatmap img[alt^='colour scale']").count() == 1
        page.click("#worklist-review")
        page.wait_for_function("() => document.querySelector('#worklist-status textarea').value.includes('reviewed by')")
        # verdicts: a grid, one per finding, nothing pre-selected; two findings and the priority in one step
        assert page.locator("#verdict-grid input:checked").count() == 0
        page.click("#verdict-of-Atelectasis label:has-text('present')")
        page.click("#verdict-of-Effusion label:has-text('present')")
        page.click("#verdict-priority label:has-text('yes')")
        page.click("#verdict-save")
        page.wait_for_function("() => document.querySelector('#verdicts textarea').value.includes('Effusion: present')",
                               timeout=30_000)
        page.click("#verdict-of-Effusion label:has-text('absent')")  # a changed verdict, saved again
        page.click("#verdict-save")
        page.wait_for_function("() => document.querySelector('#verdicts textarea').value.includes('Effusion: absent')",
                               timeout=30_000)
        verdicts = page.input_value("#verdicts textarea")
        assert "Patient ID PHANTOM01" in verdicts and "6 verdict(s) given in all" in verdicts, verdicts
        _open_a_two_image_study(page, store, tmp_path, labels, ours)
        page.click("#study-complete")  # the study is complete now, whatever the quiet period
        page.wait_for_function("() => document.querySelector('#worklist-status textarea').value.includes("
                               "'Study completed now')", timeout=30_000)
        assert "1.2.3.6" in [d["study_uid"] for d in store.studies_due(3600)]
        page.click("button[role=tab]:has-text('Monitor')")  # this run was never calibrated: no reference yet
        page.click("#monitor-run")
        page.wait_for_function("() => document.querySelector('#monitor-status textarea').value.includes("
                               "'no monitoring reference')", timeout=30_000)
        browser.close()
    done = subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "audit", str(tmp_path / "store"), "--json"],
                          capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout)  # one JSON array, as worklist --json
    table = subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "audit", str(tmp_path / "store")],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert table[0] == "time\tuser\taction\tSOPInstanceUID" and len(table) == 1 + len(rows)
    pa = next(r["SOPInstanceUID"] for r in rows if r["SOPInstanceUID"] not in (first, second))
    assert [(r["user"], r["action"], r["SOPInstanceUID"]) for r in rows] == [
        ("local", "view", second), ("local", "heat_map", second), ("local", "review", second),
        ("local", "verdict", second), ("local", "verdict", second), ("local", "view", pa), ("local", "verdict", pa),
        ("local", "complete_study", pa)]
    assert [(h["finding"], h["verdict"]) for h in store.verdict_history(second)] == [
        ("Atelectasis", "present"), ("Effusion", "present"), ("priority appropriate", "yes"),
        ("Atelectasis", "present"), ("Effusion", "absent"), ("priority appropriate", "yes")]
    assert store.latest_verdicts()[second]["Effusion"] == "absent"  # the changed verdict counts, its history stays
    exported = tmp_path / "verdicts.csv"
    subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "verdicts", "export", str(tmp_path / "store"),
                    "--out", str(exported)], check=True, capture_output=True)
    assert exported.read_text().splitlines()[1].endswith(",0")  # the export carries it
    assert store.instance(second)["reviewed_by"] == "local" and store.instance(first)["reviewed_by"] == ""
    store.close()
