"""When a study is complete (store.studies), on a store built by hand: every instance decided, then a quiet period,
a forced completion, or as many images as the header's NumberOfStudyRelatedInstances; a study already reported is
due again only when its instances change."""

from __future__ import annotations

import time

from chestaid.store import Instance, Store


def _scored(store: Store, uid: str, study: str, count: int | None = None) -> None:
    store.receive(Instance(sop_uid=uid, study_uid=study, study_instances=count), b"DICM")
    store.finish(uid, "scored", scores={"Effusion": {"risk": 0.5, "decision": 1}})


def test_a_study_is_due_after_its_quiet_period_when_forced_or_when_whole_and_again_only_when_it_changes(tmp_path):
    store = Store(tmp_path / "store")
    try:
        _scored(store, "1.1", "9.1")  # no count: the quiet period decides
        store.receive(Instance(sop_uid="1.2", study_uid="9.1"), b"DICM")  # still queued: not due whatever the time
        assert store.studies_due(0.0, now=time.time() + 10) == []
        store.finish("1.2", "refused", "DICOM ViewPosition is LL: a lateral view")
        assert store.studies_due(3600) == []
        assert [d["study_uid"] for d in store.studies_due(60, now=time.time() + 61)] == ["9.1"]
        assert store.force_study("9.1") and [d["instances"] for d in store.studies_due(3600)] == [["1.1", "1.2"]]
        store.study_reported("9.1", 1, "2.25.1", ["1.1", "1.2"], [])
        assert store.studies_due(0.0) == []  # reported: due again only with a new image
        _scored(store, "1.3", "9.1")
        assert [(d["version"], d["result_uid"]) for d in store.studies_due(0.0)] == [(1, "2.25.1")]
        _scored(store, "2.1", "9.2", count=2)  # the header says the study holds two images
        assert "9.2" not in {d["study_uid"] for d in store.studies_due(3600)}
        _scored(store, "2.2", "9.2", count=2)
        assert "9.2" in {d["study_uid"] for d in store.studies_due(3600)}
    finally:
        store.close()
