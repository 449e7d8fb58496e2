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


def test_an_older_store_is_migrated_and_a_newer_one_refused_in_one_line(tmp_path):
    import sqlite3

    from chestaid.store.engine import DB_NAME
    from chestaid.store.schema import SCHEMA_VERSION

    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / DB_NAME) as db:  # a store of the first release: no added columns, no version
        db.execute("CREATE TABLE instances (sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL DEFAULT '', "
                   "path TEXT NOT NULL, received_at REAL NOT NULL, state TEXT NOT NULL)")
        db.execute("INSERT INTO instances VALUES ('1.2.3', '1.2', 'instances/x.dcm', 1.0, 'queued')")
    store = Store.open(old)
    try:
        assert store.instance("1.2.3")["study_date"] == "" and store.counts() == {"queued": 1}
        assert store._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    finally:
        store.close()
    newer = tmp_path / "newer"
    Store(newer).close()
    with sqlite3.connect(newer / DB_NAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ChestaidError, match=rf"made by a newer chestaid \(store schema {SCHEMA_VERSION + 1}; this one reads up to "
                                                 rf"{SCHEMA_VERSION}\)"):
        Store.open(newer)
