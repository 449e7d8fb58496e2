"""The likely-normal tier's evidence (issue 44): `chestaid triage report STORE --rules FILE` counts, per day and
overall, the studies the tier would have lowered and the abnormal ones among them, with exact (Clopper–Pearson)
intervals equal to an independent computation (scipy's binomtest); a live tier is refused at the node's start with
too few abnormal verdicts (saying how many more) and allowed with enough."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from scipy.stats import binomtest
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.store import DB_NAME, Instance, Store
from node_helpers import phantom
from test_node import run, start_node  # noqa: F401 - run: the module's fixture

RULES = """version: tier-test-1
findings:
  Effusion: critical
likely_normal: {rule_out: 0.2, target_sensitivity: 0.9, live: LIVE}
"""


def add_study(store: Store, folder: Path, k: int, day: str, risk: float, present: bool | None,
              priority: str = "", model: dict | None = None) -> str:
    """A one-image study received on `day`, scored `risk` on both findings, with an Effusion verdict."""
    study = generate_uid()
    path = phantom(folder / f"{k}.dcm", study, k, patient=f"T{k:04d}")
    ds = pydicom.dcmread(path)
    if priority:
        ds.RequestedProcedurePriority = priority
        ds.save_as(path, enforce_file_format=True)
    store.receive(Instance(ds.SOPInstanceUID, study, modality="CR", patient_id=ds.PatientID), path.read_bytes())
    store.finish(ds.SOPInstanceUID, "scored", risk=risk, top="Effusion", flagged="",
                 scores={f: {"risk": risk, "decision": 0, "logit": 0.0} for f in ("Effusion", "Atelectasis")},
                 model=model)
    at = datetime.strptime(day, "%Y-%m-%d").replace(hour=9, tzinfo=timezone.utc).timestamp()
    with sqlite3.connect(store.root / DB_NAME) as db:  # received on that day
        db.execute("UPDATE instances SET received_at = ? WHERE sop_uid = ?", (at, ds.SOPInstanceUID))
    if present is not None:
        store.add_verdicts(ds.SOPInstanceUID, {"Effusion": "present" if present else "absent"}, "dr.t")
    return study


def make_store(folder: Path, abnormal: int, missed: int, model: dict | None = None) -> Path:
    """`abnormal` abnormal studies (`missed` of them scored below the rule-out), as many normal ones below it, an
    unlabelled one and a low-scored STAT study, over two days; scored by `model` (a run identity)."""
    store = Store(folder / "store")
    k = 0
    for n in range(abnormal):
        k += 1
        add_study(store, folder, k, ("2026-11-02", "2026-11-03")[n % 2], 0.1 if n < missed else 0.7, True,
                  model=model)
    for n in range(abnormal):
        k += 1
        add_study(store, folder, k, ("2026-11-02", "2026-11-03")[n % 2], 0.05 if n % 3 else 0.5, False, model=model)
    add_study(store, folder, k + 1, "2026-11-03", 0.05, None, model=model)
    add_study(store, folder, k + 2, "2026-11-03", 0.05, True, priority="STAT", model=model)  # never lowered: STAT
    store.close()
    return folder / "store"


def test_the_shadow_report_equals_an_independent_computation(tmp_path):
    store = make_store(tmp_path, abnormal=12, missed=2)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("LIVE", "false"))
    said = CliRunner().invoke(app, ["triage", "report", str(store), "--rules", str(rules), "--json"])
    assert said.exit_code == 0, said.output
    found = json.loads(said.stdout)
    overall = found["overall"]
    # independently: 13 abnormal (12 + the STAT one), 2 of them lowered; 12 normal, 8 lowered; 1 unlabelled, lowered
    assert (overall["studies"], overall["abnormal"], overall["abnormal_lowered"]) == (26, 13, 2)
    assert (overall["normal"], overall["normal_lowered"], overall["would_lower"]) == (12, 8, 11)
    exact = binomtest(11, 13).proportion_ci(0.95, method="exact")
    lower = binomtest(11, 13, alternative="greater").proportion_ci(0.95, method="exact").low
    s = overall["sensitivity"]
    assert abs(s["estimate"] - 11 / 13) < 1e-12 and abs(s["ci_low"] - exact.low) < 1e-9
    assert abs(s["ci_high"] - exact.high) < 1e-9 and abs(s["lower_bound_95"] - lower) < 1e-9
    assert sum(d["studies"] for d in found["days"].values()) == 26 and set(found["days"]) == {"2026-11-02",
                                                                                            "2026-11-03"}
    assert not found["live_allowed"] and "would have been lowered" in found["why"]
    assert found["abnormal_needed_if_none_lowered"] == 29  # ln 0.05 / ln 0.9 = 28.4
    table = CliRunner().invoke(app, ["triage", "report", str(store), "--rules", str(rules)])
    assert "overall\t26\t11\t13\t2\t0.846" in table.output and "live: not yet" in table.output


@pytest.mark.parametrize("abnormal, allowed", [(20, False), (30, True)])
def test_going_live_is_refused_with_too_few_abnormal_verdicts_and_allowed_with_enough(run, tmp_path, abnormal,  # noqa: F811
                                                                                      allowed):
    from chestaid.inference.identity import run_identity

    store = make_store(tmp_path, abnormal=abnormal, missed=0, model=run_identity(run.root))  # this run's scores
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("LIVE", "true"))
    if not allowed:
        said = CliRunner().invoke(app, ["node", str(run.root), "--store", str(store), "--port", "0",
                                        "--triage-rules", str(rules)])
        assert said.exit_code != 0 and "likely_normal.live refused" in said.output
        assert "on 21 abnormal stud(ies)" in said.output and "it needs 29 (8 more)" in said.output, said.output
        return
    node = start_node(run, store, study_quiet_period=60.0, triage_rules=rules, heat_maps=False)
    assert node.store.tier()["state"] == "live"
    node.stop()
    # another run's scores are not this run's evidence
    other = make_store(tmp_path / "other", abnormal=abnormal, missed=0, model={"weights_sha256": "another run"})
    said = CliRunner().invoke(app, ["node", str(run.root), "--store", str(other), "--port", "0",
                                    "--triage-rules", str(rules)])
    assert said.exit_code != 0 and "on 0 abnormal stud(ies)" in said.output, said.output
