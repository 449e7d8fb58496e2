"""The store on a real PostgreSQL (issue 42): the same answers as on SQLite for every operation the node, the page
and the workflows use; claims that never give one instance or one result to two stores at once; a gone node's
claims taken over; the folder that remembers its database (never a password); and PostgreSQL going away (each
operation fails in one line, does nothing, and works again when the server is back, on the same store object)."""

from __future__ import annotations

import itertools
import re
import stat
import threading
import time
from collections import Counter

import pytest
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.core.errors import ChestaidError
from chestaid.store import DATABASE_ERRORS, URL_FILE, Instance, Store
from postgres_helpers import PostgresServer, postgres_bin

pytestmark = [pytest.mark.peers, pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is a test dependency")]
_names = itertools.count()


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer()
    yield server
    server.remove()


@pytest.fixture
def url(pg) -> str:
    return pg.new_database(f"t{next(_names)}")


def _scores(risk: float) -> dict:
    return {f: {"risk": risk, "decision": int(risk > 0.5), "logit": 0.0} for f in ("Effusion", "Atelectasis")}


def _exercise(store: Store) -> list:
    """Every store operation the node, the page and the workflows use, in a fixed order; what each answered."""
    seen: list = []
    for k in range(6):
        seen.append(store.receive(Instance(sop_uid=f"1.{k}", study_uid=f"9.{k % 2}", patient_id=f"P{k % 2}",
                                           view="PA", study_date="20261206"), f"DICM{k}".encode()))
    seen.append(store.receive(Instance(sop_uid="1.0", study_uid="9.0"), b"DICM0"))  # a duplicate
    store.register("a")
    first = store.claim_queued(4)
    seen.append([r["sop_uid"] for r in first])
    for k, row in enumerate(first[:3]):
        seen.append(store.finish(row["sop_uid"], "scored", risk=0.2 * (k + 1), top="Effusion", flagged="Effusion",
                                 scores=_scores(0.2 * (k + 1)), results=[
                                     {"kind": "sr", "uid": f"2.25.{k}", "sop_class": "1.2", "path": f"r{k}",
                                      "destination": "A@h:1"}]))
    seen.append(store.finish(first[3]["sop_uid"], "refused", "input gate: not a chest radiograph"))
    seen.append(store.finish(first[3]["sop_uid"], "scored"))  # finished already: nothing
    rest = store.claim_queued(10)
    seen.append([r["sop_uid"] for r in rest])
    seen.append(store.finish(rest[0]["sop_uid"], "not read", "DICOM ViewPosition is LL"))
    store.conflict(Instance(sop_uid="1.0", study_uid="9.9"), b"OTHER", "SOPInstanceUID reused")
    seen += [store.instances(), store.instances("scored"), store.counts(), store.has("1.0"), store.decision("1.2"),
             store.instance("1.9"), store.conflicts(), sorted(store.instances_by_study())]
    seen.append(store.studies_due(0, now=time.time() + 100))
    seen.append(store.force_study("9.0"))
    due = store.studies_due(3600)
    seen.append(due)
    seen.append(store.study_reported("9.0", 1, "2.25.90", due[0]["instances"] if due else [], [
        {"kind": "study_sr", "uid": "2.25.90", "sop_class": "1.2", "path": "s", "destination": "A@h:1"}],
        notice=("critical", {"findings": ["Effusion"]}, [
            {"kind": "notice", "uid": "2.25.91", "sop_class": "", "path": "n", "destination": "smtp://h:25"}]),
        level="likely normal"))
    seen.append(store.study_reported("9.0", 1, "2.25.92", [], []))  # the same version again: nothing
    seen += [store.studies(), store.studies_due(0)]
    sending = store.claim_due()
    seen.append([r["result_uid"] for r in sending])
    store.sent(sending[0]["id"])
    store.failed(sending[1]["id"], "refused", time.time() - 1)
    store.failed(sending[2]["id"], "gone", None)
    store.failed(sending[3]["id"], "down", time.time() + 60, down=True)
    seen += [store.outbox_counts(), store.outbox(), store.outbox("pending"), store.results_of("1.0"),
             store.next_due() is not None, store.oldest_pending() is not None]
    seen.append(store.due_escalations(0, 3, now=time.time() + 10))
    seen.append(store.escalated(store.notifications()[0], []))
    seen.append(store.escalated({**store.notifications()[0], "contact": 0}, []))  # raced: already escalated
    seen.append(store.acknowledge("9.0", "dr.a") is not None)
    seen.append(store.acknowledge("9.0", "dr.a"))
    seen += [store.notifications(), store.notifications(open_only=True)]
    seen.append(store.add_verdicts("1.0", {"Effusion": "present", "Atelectasis": "absent"}, "dr.a"))
    seen.append(store.add_verdicts("1.0", {"Effusion": "present"}, "import", source="csv", unless_same_source=True))
    seen.append(store.add_verdicts("1.0", {"Effusion": "present"}, "import", source="csv", unless_same_source=True))
    seen.append(store.add_verdicts("1.404", {"Effusion": "present"}, "dr.a"))
    seen += [store.review("1.1", "dr.b"), store.review("1.404", "dr.b"), store.audit("dr.b", "view", "1.1")]
    seen += [store.latest_verdicts(), store.verdict_history("1.0"), store.audit_rows(), store.audit_rows(2),
             sorted(store.scored_findings()), store.lowered_abnormal()]
    store.set_tier("off", "the monitor alarms")
    seen += [store.tier(), [(n["name"], n["alive"]) for n in store.nodes()], store.last_received("9.0") is not None]
    return seen


def _timeless(value):
    """`value` with every time (seconds since 1970) and claim token made equal, for comparing two stores."""
    if isinstance(value, dict):
        return {k: ("T" if k in ("claimed_by", "pid", "host") or str(v).startswith("conflicts/") else _timeless(v))
                for k, v in value.items()}  # (a conflict's file is named by the time it came)
    if isinstance(value, (list, tuple)):
        return [_timeless(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _timeless(vars(value))
    return "T" if isinstance(value, float) and value > 1e9 else value


def test_postgresql_answers_every_store_operation_as_sqlite_does(url, tmp_path):
    lite, shared = Store(tmp_path / "lite"), Store(tmp_path / "shared", database=url)
    try:
        assert (lite.database_kind, shared.database_kind) == ("SQLite", "PostgreSQL")
        on_sqlite, on_postgres = _timeless(_exercise(lite)), _timeless(_exercise(shared))
    finally:
        lite.close()
        shared.close()
    assert on_sqlite[0] is True and on_sqlite[6] is False  # (the scenario did what it says)
    for k, (a, b) in enumerate(zip(on_sqlite, on_postgres)):
        assert a == b, f"operation {k}: SQLite {a!r} but PostgreSQL {b!r}"
    assert len(on_sqlite) == len(on_postgres)


@pytest.mark.parametrize("engine", ["PostgreSQL", "SQLite"])
def test_four_stores_claiming_at_once_never_take_one_instance_or_one_result_twice(engine, pg, tmp_path):
    database = pg.new_database(f"claims{next(_names)}") if engine == "PostgreSQL" else None
    stores = [Store(tmp_path / "store", database=database) for _ in range(4)]  # four node processes' connections
    try:
        for k in range(300):
            stores[0].receive(Instance(sop_uid=f"1.{k}", study_uid=f"9.{k // 3}"), b"DICM")
        for k, store in enumerate(stores):
            store.register(f"node{k}")
        finished, sent, overlap = Counter(), Counter(), []
        holding: dict[str, int] = {}
        guard = threading.Lock()

        def work(k: int, store: Store) -> None:
            while rows := store.claim_queued(7):
                with guard:
                    overlap.extend(r["sop_uid"] for r in rows if holding.setdefault(r["sop_uid"], k) != k)
                for r in rows:
                    if store.finish(r["sop_uid"], "scored", results=[
                            {"kind": "sr", "uid": f"2.25.{r['sop_uid']}", "sop_class": "1.2", "path": "x",
                             "destination": "A@h:1"}]):
                        finished[r["sop_uid"]] += 1
            while rows := store.claim_due(5):
                for r in rows:
                    sent[r["id"]] += 1
                    store.sent(r["id"])

        threads = [threading.Thread(target=work, args=(k, s)) for k, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not overlap and len(finished) == 300 and set(finished.values()) == {1}
        assert len(sent) == 300 and set(sent.values()) == {1}
        assert stores[0].counts() == {"scored": 300} and stores[0].outbox_counts() == {"sent": 300}
    finally:
        for s in stores:
            s.close()


def test_a_gone_nodes_claims_are_taken_over_and_a_restart_or_a_stop_frees_them_at_once(url, tmp_path):
    from chestaid.store.nodes import LIVENESS

    a, b = Store(tmp_path / "store", database=url), Store(tmp_path / "store", database=url)
    try:
        for k in range(10):
            a.receive(Instance(sop_uid=f"1.{k}"), b"DICM")
        a.register("a")
        b.register("b")
        uids = lambda rows: {r["sop_uid"] for r in rows}  # noqa: E731
        held_by_a, held_by_b = uids(a.claim_queued(4)), uids(b.claim_queued(100))
        assert len(held_by_a) == 4 and len(held_by_b) == 6 and not held_by_a & held_by_b
        assert uids(b.claim_queued(100)) == held_by_b  # its own again (a worker retrying its batch), never a's
        with a._tx() as db:  # a stops beating (kill -9): LIVENESS s later it is gone
            db.execute("UPDATE nodes SET seen_at = ? WHERE name = 'a'", (time.time() - LIVENESS - 1,))
        assert uids(b.claim_queued(100)) == held_by_a | held_by_b
        assert [n["alive"] for n in sorted(b.nodes(), key=lambda n: n["name"])] == [False, True]
        a.beat()  # it was only slow: it beats again, and takes back nothing b holds now
        assert not a.claim_queued(100)
        real = time.time
        with pytest.MonkeyPatch.context() as clock:  # a's machine two minutes behind: judged by the database's
            clock.setattr(time, "time", lambda: real() - 120)  # clock, its beat is as fresh as b's
            a.beat()
            assert all(n["alive"] for n in a.nodes())
        assert {n["name"]: n["alive"] for n in b.nodes()} == {"a": True, "b": True}
        restarted = Store(tmp_path / "store", database=url)  # b restarts (a new process) under its name:
        restarted.register("b")  # what its earlier start claimed is free at once
        assert len(restarted.claim_queued(100)) == 10
        restarted.unregister()  # a clean stop frees its claims at once
        assert len(a.claim_queued(100)) == 10
        restarted.close()
        from chestaid.store.nodes import FORGOTTEN

        with a._tx() as db:  # b gone for more than an hour, holding nothing: forgotten at the next beat
            db.execute("UPDATE nodes SET seen_at = ? WHERE name = 'b'", (time.time() - FORGOTTEN - 1,))
        a.beat()
        assert [n["name"] for n in a.nodes()] == ["a"]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("engine", ["PostgreSQL", "SQLite"])
def test_a_node_taken_for_gone_that_finishes_late_records_nothing_and_a_study_version_is_recorded_once(
        engine, pg, tmp_path):
    from chestaid.store.nodes import LIVENESS

    database = pg.new_database(f"late{next(_names)}") if engine == "PostgreSQL" else None
    slow, other = Store(tmp_path / "store", database=database), Store(tmp_path / "store", database=database)
    try:
        slow.receive(Instance(sop_uid="1.1", study_uid="9.1"), b"DICM")
        slow.register("slow")
        other.register("other")
        assert [r["sop_uid"] for r in slow.claim_queued(5)] == ["1.1"]
        with slow._tx() as db:  # slow misses its beats (a long pause): the other node takes its instance over
            db.execute("UPDATE nodes SET seen_at = ? WHERE name = 'slow'", (time.time() - LIVENESS - 1,))
        assert [r["sop_uid"] for r in other.claim_queued(5)] == ["1.1"]
        made = lambda uid: [{"kind": "sr", "uid": uid, "sop_class": "1.2", "path": "x",  # noqa: E731
                             "destination": "A@h:1"}]
        assert other.finish("1.1", "scored", risk=0.3, results=made("2.25.1"))
        assert not slow.finish("1.1", "scored", risk=0.9, results=made("2.25.2"))  # too late: nothing recorded
        assert other.instance("1.1")["risk"] == 0.3 and [r["result_uid"] for r in other.outbox()] == ["2.25.1"]
        due = other.studies_due(0, now=time.time() + 1)
        assert [d["study_uid"] for d in due] == ["9.1"] == [d["study_uid"] for d in slow.studies_due(0)]
        assert other.study_reported("9.1", 1, "2.25.10", ["1.1"], made("2.25.10"),
                                    notice=("critical", {}, made("2.25.11")))
        assert not slow.study_reported("9.1", 1, "2.25.20", ["1.1"], made("2.25.20"),
                                       notice=("critical", {}, made("2.25.21")))  # the same version: nothing
        assert [r["result_uid"] for r in other.outbox()] == ["2.25.1", "2.25.10", "2.25.11"]
        assert other.studies()[0]["result_uid"] == "2.25.10" and len(other.notifications()) == 1
        claimed = other.claim_due(10)
        slow.failed(claimed[0]["id"], "a late failure", None)  # never counts against what another node holds
        assert other.outbox("pending")[0]["attempts"] == 0 and other.outbox("dead") == []
    finally:
        slow.close()
        other.close()


def test_the_folder_remembers_its_database_without_a_password_and_refuses_another(url, pg, tmp_path):
    root = tmp_path / "store"
    with_password = url.replace("chestaid@", "chestaid:s3cret@") + "?password=s3cret&application_name=node"
    Store(root, database=with_password).close()
    recorded = (root / URL_FILE).read_text().strip()
    assert recorded == url + "?application_name=node" and "s3cret" not in recorded
    assert stat.S_IMODE((root / URL_FILE).stat().st_mode) == 0o600
    url = recorded
    opened = Store.open(root)  # the page, monitor and worklist: from the folder alone
    assert opened.database_kind == "PostgreSQL" and "s3cret" not in opened.database
    opened.receive(Instance(sop_uid="1.1", study_uid="9.1"), b"DICM")
    assert opened.receive(Instance(sop_uid="1.2", study_uid="9.1", patient_id="P\x00X"), b"DICM")  # (a NUL inside)
    assert opened.instance("1.2")["patient_id"] == "PX"
    opened.close()
    listed = CliRunner().invoke(app, ["worklist", str(root), "--json"])
    assert listed.exit_code == 0 and '"9.1"' in listed.stdout, listed.output
    with pytest.raises(ChestaidError, match="already holds a store whose folder is elsewhere.*is the shared storage "
                                            "mounted here"):
        Store(tmp_path / "empty-mount-point", database=url)  # a node whose shared folder is not mounted
    (root / "store.id").write_text("another\n")
    with pytest.raises(ChestaidError, match="not the folder of the store in"):
        Store.open(root)
    other = pg.new_database(f"other{next(_names)}")
    with pytest.raises(ChestaidError, match=re.escape(f"this store's database is {url}, not {other}")):
        Store(root, database=other)
    Store(tmp_path / "lite").close()
    with pytest.raises(ChestaidError, match="this store's database is SQLite"):
        Store(tmp_path / "lite", database=url)
    with pytest.raises(ChestaidError, match="a postgresql://user@host/db URL"):
        Store(tmp_path / "new", database="mysql://chestaid@127.0.0.1/x")
    with pytest.raises(ChestaidError, match="not a chestaid node store"):
        Store.open(tmp_path / "nothing")


def test_postgresql_going_away_fails_each_operation_in_one_line_and_the_same_store_works_when_it_returns(
        pg, tmp_path):
    url = pg.new_database(f"away{next(_names)}")
    store = Store(tmp_path / "store", database=url)
    try:
        store.receive(Instance(sop_uid="1.1", study_uid="9.1"), b"DICM")
        store.probe(5)
        pg.stop()
        try:
            for operation in (store.counts, lambda: store.claim_queued(5), lambda: store.probe(3),
                              lambda: store.receive(Instance(sop_uid="1.2"), b"DICM")):
                with pytest.raises(DATABASE_ERRORS) as failed:
                    operation()
                assert len(str(failed.value).splitlines()) == 1 and "PostgreSQL postgresql://" in str(failed.value)
            listed = CliRunner().invoke(app, ["worklist", str(tmp_path / "store")])
            assert listed.exit_code != 0 and len(listed.output.strip().splitlines()) == 1, listed.output
            assert "Traceback" not in listed.output and "cannot open the node store" in listed.output
        finally:
            pg.start()
        assert store.counts() == {"queued": 1}  # the same object, a new connection
        assert store.receive(Instance(sop_uid="1.2"), b"DICM") and store.counts() == {"queued": 2}
    finally:
        store.close()
    again = Store.open(tmp_path / "store")
    with again._tx() as db:  # a store made by a newer chestaid: refused in one line
        db.execute("UPDATE chestaid_schema SET version = 99")
    again.close()
    with pytest.raises(ChestaidError, match=r"made by a newer chestaid \(store schema 99"):
        Store.open(tmp_path / "store")
