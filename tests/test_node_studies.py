"""Studies, not images (issue 45): instances grouped by StudyInstanceUID into a study result once the study is
complete (a quiet period without a new image, or forced), one SR per study referencing its images, sent through the
outbox like every result; a late image makes the next version, which supersedes the last. Real peers: DCMTK's
dcmsend and storescp, dciodvfy on every study SR."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from node_helpers import DCMTK, dciodvfy_errors, dcmsend, free_port, phantom
from test_node import run, start_node, stop, storescp, wait_for  # noqa: F401 - run: the module's fixture

pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="DCMTK is a test dependency")]


def study_srs(folder: Path) -> list[pydicom.Dataset]:
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        if ds.Modality == "SR" and str(ds.get("SeriesDescription", "")).startswith("chestaid study result"):
            found.append(ds)
    return found


def evidence(ds) -> set[str]:
    return {str(i.ReferencedSOPInstanceUID) for s in ds.CurrentRequestedProcedureEvidenceSequence
            for series in s.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}


def test_one_result_per_study_after_its_quiet_period_a_late_image_supersedes_it_and_completion_can_be_forced(
        run, tmp_path):  # noqa: F811
    port = free_port()
    peer = storescp(tmp_path / "dest", port)
    node = start_node(run, tmp_path / "store", heat_maps=False, send_to=[f"DEST@127.0.0.1:{port}"],
                      study_quiet_period=2.0)
    try:
        study = generate_uid()
        first = [phantom(tmp_path / f"a{i}.dcm", study, i) for i in range(2)]  # a PA and its repeat
        dcmsend(node.port, first)
        wait_for(lambda: len(study_srs(tmp_path / "dest")) == 1, 90, what="the study's result")
        (v1,) = study_srs(tmp_path / "dest")
        uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in first}
        assert evidence(v1) == uids and "study result v1" in v1.SeriesDescription
        assert not dciodvfy_errors(next(p for p in (tmp_path / "dest").iterdir()
                                        if pydicom.dcmread(p).SOPInstanceUID == v1.SOPInstanceUID))
        late = phantom(tmp_path / "a2.dcm", study, 2)  # an image after the study's result was sent
        dcmsend(node.port, [late])
        wait_for(lambda: len(study_srs(tmp_path / "dest")) == 2, 90, what="the amended study result")
        v2 = next(ds for ds in study_srs(tmp_path / "dest") if ds.SOPInstanceUID != v1.SOPInstanceUID)
        assert evidence(v2) == uids | {str(pydicom.dcmread(late).SOPInstanceUID)}
        for path in (p for p in (tmp_path / "dest").iterdir() if p.is_file()):
            assert not dciodvfy_errors(path), path
        predecessor = v2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert predecessor.ReferencedSOPInstanceUID == v1.SOPInstanceUID  # supersedes, never two current results
        (record,) = node.store.studies()
        assert record["version"] == 2 and record["result_uid"] == v2.SOPInstanceUID and len(record["covered"]) == 3
        from typer.testing import CliRunner

        from chestaid.apps.cli import app

        listed = CliRunner().invoke(app, ["worklist", str(tmp_path / "store"), "--json"])
        (row,) = json.loads(listed.stdout)  # one row per study, with its images
        assert (row["StudyInstanceUID"], row["instances"], row["scored"], row["result_version"]) == (study, 3, 3, 2)
        assert [i["SOPInstanceUID"] for i in row["images"]] == [str(pydicom.dcmread(p).SOPInstanceUID)
                                                                for p in [*first, late]]
        # a study that would wait an hour is completed at once when forced
        node.studies.quiet_period = 3600
        other = generate_uid()
        dcmsend(node.port, [phantom(tmp_path / "b0.dcm", other, 0, seed=5)])
        wait_for(lambda: node.store.counts().get("queued", 0) == 0, 60, what="scored")
        time.sleep(3)
        assert len(study_srs(tmp_path / "dest")) == 2
        said = CliRunner().invoke(app, ["study", "complete", str(tmp_path / "store"), other])
        assert said.exit_code == 0 and "completion forced" in said.output, said.output
        said = CliRunner().invoke(app, ["study", "complete", str(tmp_path / "store"), "1.2.3.999"])
        assert said.exit_code == 2 and "no instance of study 1.2.3.999" in said.output
        wait_for(lambda: len(study_srs(tmp_path / "dest")) == 3, 60, what="the forced study's result")
    finally:
        node.stop()
        stop(peer)
