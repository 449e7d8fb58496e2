"""Verdict export's reasons on a store built by hand (no model, no peer): a store whose labelled instances were
all refused says so, not "choose fewer findings"."""

from __future__ import annotations

import pytest

from chestaid.core.errors import ChestaidError
from chestaid.store import Instance, Store
from chestaid.workflows.verdicts import export_verdicts


def test_export_names_the_real_reason_when_every_labelled_instance_was_refused(tmp_path):
    store = Store(tmp_path / "store")
    for k in range(3):
        uid = f"1.2.3.{k}"
        store.receive(Instance(sop_uid=uid, study_uid="1.2.3"), b"DICM")
        store.finish(uid, "refused", "input gate: not a chest radiograph like the training data")
        store.add_verdicts(uid, {"Pneumonia": "present"}, "dr.a")
    store.close()
    with pytest.raises(ChestaidError, match=r"were not scored \(3 refused: the input gate refused them"):
        export_verdicts(tmp_path / "store", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
