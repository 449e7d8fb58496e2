"""Monitoring without labels on a real node: a run trained on phantom family A receives 200 images of family A
(another seed), then 200 of family B, which it never saw, as DICOM CRs by C-STORE. `chestaid monitor STORE
--window 200 --json` raises no alarm in the first window and at least one in the second; each alarm names its
signal, window, statistic and p-value, goes to the log as a warning and, with --fail-on-alarm, to the exit
status. With verdicts, each window gives sensitivity, specificity and PPV (or says there are too few)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import chestaid
from chestaid.apps.cli import app
from chestaid.core.run_paths import RunPaths
from chestaid.data.phantoms.synthetic import synth_nih
from chestaid.evaluation.drift import Signal, holm
from chestaid.store import Store
from node_helpers import DCMTK, dcmsend, grey_cr

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="needs DCMTK")]


def nih_as_dicom(root: Path, out: Path) -> tuple[list[Path], dict[str, str]]:
    """Every PNG of a synthetic NIH folder as an 8-bit chest CR with its CSV's age, sex and view; the files
    and {SOPInstanceUID: finding labels}. chestaid stretches a DICOM without a VOI LUT from its minimum to its
    maximum (a PNG is taken as it is), so one corner pixel is 0 and another 255: the network then sees the
    PNG's values, as it did in training (without them the monitor rightly sees a shift in every score)."""
    table = pd.read_csv(root / "Data_Entry_2017.csv").set_index("Image Index")
    out.mkdir(parents=True)
    files, labels = [], {}
    for png in sorted(root.rglob("*.png")):
        row = table.loc[png.name]
        pixels = np.asarray(Image.open(png).convert("L")).copy()
        pixels[0, 0], pixels[-1, -1] = 0, 255
        files.append(out / f"{png.stem}.dcm")
        uid = grey_cr(pixels, files[-1], str(png), PatientID=str(row["Patient ID"]), PatientSex=row["Patient Gender"],
                      PatientAge=f"{int(row['Patient Age']):03d}Y", ViewPosition=row["View Position"],
                      Manufacturer="PHANTOM UNIT")
        labels[uid] = row["Finding Labels"]
    return files, labels


@pytest.fixture(scope="module")
def drifting_store(tiny_run, tmp_path_factory):
    from test_node import settled, start_node, wait_for

    tmp = tmp_path_factory.mktemp("monitor")
    run = Path(shutil.copytree(tiny_run.root, tmp / "run"))
    chestaid.calibrate(run)
    assert RunPaths(run).monitor_reference.is_file()
    same, same_labels = nih_as_dicom(synth_nih(tmp / "a", n=200, size=64, seed=11, workers=1), tmp / "dicom-a")
    other, _ = nih_as_dicom(synth_nih(tmp / "b", n=200, size=64, seed=12, workers=1, family="b"), tmp / "dicom-b")
    node = start_node(RunPaths(run), tmp / "store", heat_maps=False)
    try:
        for batch in (same, other):  # family A first, all of it; then family B
            _, report = dcmsend(node.port, batch)
            assert len(report["ok"]) == len(batch), report["text"]
            wait_for(lambda: settled(tmp / "store", False), timeout=300, what="all scored")
    finally:
        node.stop()
    return run, tmp / "store", same_labels, tmp


def test_no_alarm_in_distribution_an_alarm_after_the_shift(drifting_store, caplog):
    run, store, _, tmp = drifting_store
    caplog.set_level("WARNING", logger="chestaid")
    result = CliRunner().invoke(app, ["monitor", str(store), "--window", "200", "--json", "--html",
                                      str(tmp / "monitor.html")])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    windows = found["windows"]
    assert [w["n"] for w in windows] == [200, 200] and windows[0]["model"].startswith("run (weights ")
    assert windows[0]["alarms"] == [], windows[0]["signals"]
    assert windows[1]["alarms"], windows[1]["signals"]
    tested = [s for s in windows[0]["signals"] if s["p"] is not None]
    assert len(tested) >= 10 and {"input gate distance", "refusals by the input gate", "sex mix (against training)",
                                  "Effusion: flag rate", "Effusion: score"} <= {s["name"] for s in tested}
    alarm = found["alarms"][0]
    assert alarm["window"] == 1 and alarm["p_holm"] < 0.01 and alarm["signal"] and alarm["statistic"] is not None
    assert any("monitor alarm" in m and alarm["signal"] in m for m in caplog.messages)
    assert "<table" in (tmp / "monitor.html").read_text()
    failing = CliRunner().invoke(app, ["monitor", str(store), "--window", "200", "--fail-on-alarm"])
    assert failing.exit_code == 1 and "ALARM" in failing.output


def effusion_verdicts(store: Path, labels: dict[str, str], first: int | None = None) -> None:
    """A clinician's Effusion verdict (present or absent, from the phantom's labels) on each (or the `first`)
    instance of the store."""
    opened = Store.open(store)
    try:
        for uid, found in list(labels.items())[:first]:
            opened.add_verdicts(uid, {"Effusion": "present" if "Effusion" in found else "absent"}, "dr.m")
    finally:
        opened.close()


def test_performance_per_window_from_verdicts(drifting_store):
    run, store, labels, tmp = drifting_store
    effusion_verdicts(store, labels)
    window = chestaid.monitor(store, "200")["windows"][0]
    first = window["performance"]["Effusion"]
    assert first["verdicts"] == window["states"]["scored"] and 0 <= first["agreement"] <= 1
    for metric in ("sensitivity", "specificity", "ppv"):
        value = first[metric]
        assert isinstance(value, str) and value.startswith("too few verdicts") or (
            value["ci_low"] <= value["estimate"] <= value["ci_high"])


def test_holm_controls_the_windows_false_alarms():
    """Holm's step-down: the smallest p against level/m, the next against level/(m−1), …, stopping at the
    first that fails; a signal that could not be tested is neither counted nor alarmed."""
    signals = [Signal(f"s{k}", "t", 1.0, p, "", "") for k, p in enumerate((0.001, 0.004, 0.02, 0.5))]
    signals.append(Signal("untested", "t", None, None, "", ""))
    alarms = holm(signals, 0.01)
    assert [s.name for s in alarms] == ["s0"]  # 0.001·4 < 0.01; then 0.004·3 = 0.012 ≥ 0.01 stops
    assert [round(s.p_holm, 4) for s in signals[:4]] == [0.004, 0.012, 0.04, 0.5] and signals[4].p_holm is None


def test_the_pages_monitor_tab_shows_the_windows_and_draws_a_signal(drifting_store):
    from chestaid.apps.page.monitor_view import monitor_frame, signal_names, signal_plot

    _, store, _, _ = drifting_store
    result = chestaid.monitor(store, "200")
    frame = monitor_frame(result)
    assert list(frame["instances"]) == [200, 200] and frame.loc[0, "alarms"] == "none"
    assert frame.loc[1, "alarms"] != "none"
    names = signal_names(result)
    assert "input gate distance" in names
    figure = signal_plot(result, "input gate distance")
    (ax,) = figure.axes
    assert len(ax.lines[0].get_xdata()) == 2 and ax.get_yscale() == "log"


def test_the_monitor_draws_safely_in_threads_and_its_page_has_times_signals_performance_and_disclaimer(
        drifting_store, tmp_path):
    """The tab's figure is rendered by the page itself (no pyplot, no mathtext: plain tick labels), eight
    requests at once, each giving the same picture; the HTML report has per window its times, each signal's
    Holm p-value, performance with intervals, the false-alarm statement and the disclaimer."""
    from concurrent.futures import ThreadPoolExecutor

    from chestaid.apps.page.monitor_view import performance_frame, signal_names, signal_plot
    from chestaid.core.figures import rgb

    _, store, labels, _ = drifting_store
    store = Path(shutil.copytree(store, tmp_path / "store"))
    effusion_verdicts(store, labels)
    result = chestaid.monitor(store, "200", html=tmp_path / "monitor.html")
    names = signal_names(result)
    figure = signal_plot(result, names[0])
    labels = [t.get_text() for ax in figure.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
    assert labels and not any("$" in t for t in labels)  # no mathtext to parse
    with ThreadPoolExecutor(8) as pool:
        pictures = list(pool.map(lambda k: rgb(signal_plot(result, names[k % len(names)])), range(32)))
    assert all(p.ndim == 3 and p.shape[2] == 3 for p in pictures)
    assert all(np.array_equal(pictures[k], pictures[k % len(names)]) for k in range(32))
    frame = performance_frame(result)
    assert 0 in set(frame["window"]) and "Effusion" in set(frame["finding"])
    page = (tmp_path / "monitor.html").read_text()
    from chestaid.reporting.monitor_report import when

    for w in result["windows"]:
        assert when(w["start"]) in page and when(w["end"]) in page
    assert "Holm p" in page and "sensitivity (95% CI)" in page and "not diagnosis" in page
    assert "chance of any false alarm in a window is at most 0.01" in page and page.count("ALARM") >= 1


def test_monitor_on_an_empty_store_says_so_and_has_its_own_exit_status(tmp_path):
    Store(tmp_path / "store").close()
    said = CliRunner().invoke(app, ["monitor", str(tmp_path / "store"), "--fail-on-alarm"])
    assert said.exit_code == 3 and "nothing monitored" in said.output and "no scored" in said.output, said.output
    assert chestaid.monitor(tmp_path / "store")["status"] == "nothing monitored"


def test_the_monitor_tab_driven_thirty_times_while_another_session_scores_never_errs(drifting_store, tmp_path):
    """Chromium drives the Monitor tab 30 times (window sizes and signals changing) while a gradio_client session
    scores images through the page's API: every run answers, none shows an error, the plot is a picture and the
    performance table is there."""
    import threading

    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    from serving import free_port, serve_command, serving
    from test_page_browser import _browser

    run, store, labels, tmp = drifting_store
    store = Path(shutil.copytree(store, tmp_path / "store"))
    effusion_verdicts(store, labels, 200)
    image = next((tmp / "a").rglob("*.png"))
    port = free_port()
    scored, stop = [], threading.Event()
    with serving(serve_command(run, port, "--store", str(store)), port) as url, sync_playwright() as p:
        def score() -> None:  # the other session
            client = Client(url, verbose=False)
            while not stop.is_set():
                scored.append(client.predict(handle_file(str(image)), 61, "F", "PA", api_name="/score"))

        other = threading.Thread(target=score, daemon=True)
        other.start()
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        page.goto(url)
        page.click("button[role=tab]:has-text('Monitor')")
        for k in range(30):  # 400 instances: windows of 200, 100, 150 give 2, 4, 3 windows: each run is seen
            size, windows = (("200", 2), ("100", 4), ("150", 3))[k % 3]
            page.fill("#monitor-window textarea, #monitor-window input", size)
            page.click("#monitor-run")
            page.wait_for_function(f"() => document.querySelector('#monitor-status textarea').value.includes("
                                   f"'in {windows} window(s)')", timeout=60_000)
            if k % 5 == 4:  # another signal
                page.click("#monitor-signal input")
                page.keyboard.press("ArrowDown")
                page.keyboard.press("Enter")
            assert page.locator(".toast-body.error").count() == 0, f"an error after {k + 1} run(s)"
            assert "Error" not in page.input_value("#monitor-status textarea")
        page.wait_for_function("() => document.querySelector('#monitor-plot img') !== null", timeout=60_000)
        assert "sensitivity (95% CI)" in page.inner_text("#monitor-performance")
        assert "Effusion" in page.inner_text("#monitor-performance")
        page.screenshot(path=str(tmp_path / "monitor-tab.png"), full_page=True)
        browser.close()
        stop.set()
        other.join(120)
    assert len(scored) >= 1 and all(r["findings"] for r in scored)


def test_performance_per_study_counts_a_study_flagged_by_any_read_image_and_present_by_any_verdict():
    """A study is flagged when any of its read images is, present when any image's verdict says so, absent only
    when all of them do (else it is not counted)."""
    from chestaid.workflows.monitor import performance

    def row(uid: str, study: str, flag: int) -> dict:
        return {"sop_uid": uid, "study_uid": study, "state": "scored", "reason": "", "refusal": "",
                "scores": json.dumps({"Effusion": {"risk": 0.5, "decision": flag}}), "distance": None,
                "meta": "{}", "model": None}

    rows = [row("1", "A", 1), row("2", "A", 0), row("3", "B", 0), row("4", "B", 0), row("5", "C", 1),
            row("6", "C", 0)]
    verdicts = {"1": {"Effusion": "absent"}, "2": {"Effusion": "present"}, "3": {"Effusion": "absent"},
                "4": {"Effusion": "absent"}, "5": {"Effusion": "absent"}}
    per_image = performance(rows, verdicts, ["Effusion"])["Effusion"]
    assert (per_image["verdicts"], per_image["positives"], per_image["agreement"]) == (5, 1, 2 / 5)
    per_study = performance(rows, verdicts, ["Effusion"], by_study=True)["Effusion"]
    assert (per_study["verdicts"], per_study["positives"], per_study["agreement"]) == (2, 1, 1.0)  # A, B; not C


def test_a_monitor_alarm_switches_the_live_likely_normal_tier_off_and_the_next_results_say_so(drifting_store):
    """A live tier on a store whose latest window alarms: the next study result is not lowered, its study SR and
    the store's tier state (the page's and the metrics' source) say the tier is off and why."""
    import numpy as np
    import pydicom

    from chestaid.apps.node.metrics import StoreCollector
    from chestaid.apps.node.node import algorithm_of
    from chestaid.apps.node.result_types import StudyImage, StudyResult
    from chestaid.apps.node.studies import StudyAssembler
    from chestaid.apps.node.study_sr import make_study_sr
    from chestaid.inference.triage_rules import load_rules

    run, store, _, tmp = drifting_store
    copy = Path(shutil.copytree(store, tmp / "tier-store"))
    rules_file = tmp / "tier-rules.yaml"
    rules_file.write_text("version: tier-live-1\nfindings:\n  Effusion: critical\n"
                          "likely_normal: {rule_out: 0.999, target_sensitivity: 0.5, live: true}\n")
    predictor = chestaid.load(run)
    labels = list(predictor.task.labels)
    opened = Store.open(copy)
    try:
        algorithm = algorithm_of(run)
        assembler = StudyAssembler(opened, algorithm, labels, predictor.thresholds.values, [],
                                   rules=load_rules(rules_file, labels))
        risk = np.full(len(labels), 0.01)  # below the rule-out: a live tier would lower it
        header = pydicom.dcmread(opened.file_of(opened.instances()[0]), stop_before_pixels=True)
        triage = assembler._triage([StudyImage(header, "scored", "", risk, risk > 0.5)], risk)
        assert triage.level == "routine" and "the monitor alarms on this model's latest window" in triage.tier_off
        sr = make_study_sr(StudyResult([StudyImage(header, "scored", "", risk, risk > 0.5)], algorithm, labels, risk,
                                       risk > 0.5, None, 1, [str(header.SOPInstanceUID)], triage=triage))
        notes = [str(item.TextValue) for group in sr.ContentSequence for item in group.get("ContentSequence", [])
                 for item in [item, *item.get("ContentSequence", [])] if "TextValue" in item]
        assert any("the likely-normal tier is off (the monitor alarms" in n for n in notes), notes
        assert opened.tier()["state"] == "off"
        gauge = next(m for m in StoreCollector(opened).collect() if m.name == "chestaid_likely_normal_tier")
        assert {s.labels["state"]: s.value for s in gauge.samples} == {"live": 0.0, "shadow": 0.0, "off": 1.0}
    finally:
        opened.close()
