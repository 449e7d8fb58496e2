"""Every result names its model: the store keeps the identity of the run that scored each instance, and a page
serving one run marks the rows another run scored, shows that run's thresholds (never its own) beside their
scores, and makes no heat map for them."""

from __future__ import annotations

import pydicom

from chestaid.apps.page.worklist_cells import findings_frame, heat_map_refusal, images_frame
from chestaid.inference.identity import run_identity, same_model
from chestaid.inference.thresholds import Thresholds
from chestaid.store import Instance, Store


def _run(folder, weights: bytes, threshold: float):
    folder.mkdir()
    (folder / "config.yaml").write_text("task: pneumonia\n")
    (folder / "model.safetensors").write_bytes(weights)
    Thresholds({"Pneumonia": threshold}, "youden", {}).save(folder / "thresholds.json")  # the file calibrate writes
    return folder


def test_rows_of_another_model_are_marked_with_their_own_thresholds_and_no_heat_map(tmp_path):
    from node_helpers import phantom

    ours = run_identity(_run(tmp_path / "A", b"weights A", 0.25))
    theirs = run_identity(_run(tmp_path / "B", b"weights B", 0.75))
    assert ours["score"] == "uncalibrated score" and not same_model(ours, theirs) and same_model(ours, dict(ours))
    store = Store(tmp_path / "store")
    uids = []
    for k, model in enumerate((ours, theirs, None)):  # None: a store made before identities were recorded
        ds = pydicom.dcmread(phantom(tmp_path / f"{k}.dcm", f"1.2.826.0.1.3680043.8.498.6{k}", k))
        store.receive(Instance(ds.SOPInstanceUID, ds.StudyInstanceUID, modality="CR"), b"")
        store.finish(ds.SOPInstanceUID, "scored", risk=0.5, top="Pneumonia", flagged="",
                     scores={"Pneumonia": {"risk": 0.5, "decision": int(k == 0)}}, model=model)
        uids.append(ds.SOPInstanceUID)
    frame = images_frame(store.instances(), ours).set_index("SOPInstanceUID")  # each image's row in its study
    assert frame.loc[uids[0], "model"] == "this page's model"
    assert frame.loc[uids[1], "model"].startswith("OTHER: B (weights ")
    assert frame.loc[uids[2], "model"] == "OTHER: model not recorded"
    shown = [findings_frame(store.instance(u), ours).iloc[0]["threshold"] for u in uids]
    assert shown == ["0.250", "0.750", "unknown"]  # each row's own run's threshold, never the page's for B
    assert heat_map_refusal(store.instance(uids[0]), ours) == ""
    assert "Scored by another model (B" in heat_map_refusal(store.instance(uids[1]), ours)
    assert "model not recorded" in heat_map_refusal(store.instance(uids[2]), ours)
    store.close()
