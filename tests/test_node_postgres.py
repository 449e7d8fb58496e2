"""Several nodes on one PostgreSQL store (issue 42's acceptance): three node processes share a store (one folder,
one real PostgreSQL) and receive a burst of 540 instances (180 three-image studies) from six DCMTK senders; one
node is killed with kill -9 mid-burst, then PostgreSQL crashes (an immediate stop) for 3 s under the two others,
and the senders' unacknowledged images are sent again to a living node, as a PACS retries. Every acknowledged instance is stored once and scored once (no node logs a second score), every
study's current SR reaches a real Orthanc once per version and references every acknowledged image of its study,
and `chestaid worklist` reads the same database. And /readyz turns unready when PostgreSQL goes away (a C-STORE
then fails: nothing unrecorded is acknowledged) and ready again when it returns, the node carrying on by itself."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.apps.page.worklist_cells import nodes_text
from chestaid.store import Store
from node_helpers import DCMTK, ORTHANC, Orthanc, dcmsend, free_port, node_process, phantom, phantoms
from postgres_helpers import PostgresServer, postgres_bin
from test_node import run, settled, start_node, stop, wait_for  # noqa: F401 - run: the module's fixture
from test_node_health import probe
from test_node_study_day import evidence, study_results

pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(postgres_bin() is None or not ORTHANC.is_file() or not (DCMTK / "dcmsend").is_file(),
                                 reason="PostgreSQL, Orthanc and DCMTK are test dependencies")]
STUDIES, IMAGES = 180, 3


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer()
    yield server
    server.remove()


def test_readyz_follows_postgresql_away_and_back_and_the_node_carries_on_by_itself(run, pg, tmp_path):  # noqa: F811
    url = pg.new_database("ready")
    node = start_node(run, tmp_path / "store", heat_maps=False, health_port=0, database=url)
    try:
        status, ready = probe(node.health_port, "/readyz")
        assert status == 200 and "PostgreSQL" in ready["checks"]["database"]["detail"], ready
        first = phantoms(tmp_path / "a", 2, seed=1)
        assert dcmsend(node.port, first[:1])[1]["ok"]
        pg.stop()
        try:
            status, ready = probe(node.health_port, "/readyz")
            assert status == 503 and not ready["checks"]["database"]["ok"] and ready["checks"]["store"]["ok"], ready
            assert probe(node.health_port, "/healthz")[0] == 200  # alive: a database outage is not a restart
            _, sent = dcmsend(node.port, first[1:], check=False)  # nothing is acknowledged that is not recorded
            assert sent["failed"] and not sent["ok"], sent["text"]
        finally:
            pg.start()
        wait_for(lambda: probe(node.health_port, "/readyz")[0] == 200, 60, 1, "ready again")
        assert dcmsend(node.port, first[1:])[1]["ok"]  # the sender's retry
        wait_for(lambda: node.store.counts() == {"scored": 2}, 120, 0.5, lambda: f"both scored: {node.store.counts()}")
    finally:
        node.stop()


def _burst(folder: Path) -> dict[str, list[Path]]:
    """STUDIES studies of IMAGES phantom PA images each: study UID → files."""
    studies = {}
    for k in range(STUDIES):
        files = phantoms(folder / f"s{k:03d}", IMAGES, seed=1000 + k)
        studies[_study_of(files[0])] = files
    return studies


def _study_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_three_nodes_on_one_postgresql_store_survive_kill_9_mid_burst(run, pg, tmp_path):  # noqa: F811
    url = pg.new_database("burst")
    store_dir = tmp_path / "store"
    ports = [free_port() for _ in range(3)]
    orthanc = Orthanc(tmp_path / "orthanc", ports[0])
    args = ["--database", url, "--host", "127.0.0.1", "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom}",
            "--study-quiet-period", "5", "--no-heat-maps", "--retry-delay", "0.5", "--max-retry-delay", "2"]
    logs = [tmp_path / f"node{k}.log" for k in range(3)]
    metrics = free_port()
    nodes = [node_process(Path(run.root), store_dir, p, *args, "--node-name", f"node{k}",
                          *(["--metrics-port", str(metrics)] if k == 0 else []), log=logs[k])
             for k, (p, log) in enumerate(zip(ports, logs))]
    studies = _burst(tmp_path / "burst")
    files = [f for fs in studies.values() for f in fs]
    shares = [files[k::6] for k in range(6)]  # six senders, two to each node
    reports = [tmp_path / f"sender{k}.txt" for k in range(6)]
    watcher = Store.open(store_dir)
    try:
        senders = [threading.Thread(target=dcmsend, args=(ports[k % 3], shares[k]),
                                    kwargs={"aet": f"SEND{k}", "report": reports[k], "check": False, "timeout": 900})
                   for k in range(6)]
        for s in senders:
            s.start()
        by_b = lambda: sum(1 for i in watcher.instances() if i["calling_ae"] in ("SEND1", "SEND4"))  # noqa: E731
        wait_for(lambda: by_b() >= 40, 300, 0.2, "node 1 receiving")
        nodes[1].send_signal(signal.SIGKILL)  # mid-burst: its associations cut, its claims left behind
        nodes[1].wait(30)
        killed_at = time.time()
        pg.stop("immediate")  # and the database crashes under the two others, still receiving
        time.sleep(3)
        pg.start()
        wait_for(lambda: 'chestaid_nodes{state="gone"} 1.0' in _metrics(metrics), 90, 1, "node 1 gone in the metrics")
        assert re.search(r"node1 on \S+: GONE since", nodes_text(watcher)), nodes_text(watcher)  # the page's line
        for s in senders:
            s.join(900)
        from node_helpers import read_report

        acknowledged = {u for r in reports for u in read_report(r)["ok"]}
        again = [f for f in files if _uid(f) not in acknowledged]
        assert again, "the kill cut no association: the test did not test the kill"
        _, retried = dcmsend(ports[0], again, aet="RETRY", timeout=900)  # the PACS's retry, to a living node
        acknowledged |= set(retried["ok"])
        assert acknowledged == {_uid(f) for f in files}
        wait_for(lambda: settled(store_dir) and _all_reported(watcher, studies), 900, 2,
                 lambda: f"everything scored and reported ({watcher.counts()}, {watcher.outbox_counts()})")
        time.sleep(3)  # a duplicate would arrive now
    finally:
        for node in nodes:
            if node.poll() is None:
                stop(node)
    try:
        _check(watcher, orthanc, studies, logs, acknowledged, killed_at)
        listed = json.loads(CliRunner().invoke(app, ["worklist", str(store_dir), "--json"]).stdout)
        assert sorted(r["StudyInstanceUID"] for r in listed) == sorted(studies)
    finally:
        watcher.close()
        orthanc.stop()


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read().decode()


def _uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _all_reported(store: Store, studies: dict) -> bool:
    current = {s["study_uid"]: s for s in store.studies() if s["version"]}
    return all(s in current and len(current[s]["covered"]) == IMAGES for s in studies)


def _check(store: Store, orthanc: Orthanc, studies: dict, logs: list[Path], acknowledged: set[str],
           killed_at: float) -> None:
    rows = store.instances()
    assert Counter(r["sop_uid"] for r in rows) == Counter(acknowledged)  # each stored once, none lost
    assert {r["state"] for r in rows} == {"scored"}
    text = "\n".join(log.read_text() for log in logs)
    scored = Counter(re.findall(r"instance (\S+): scored", text))
    assert max(scored.values()) == 1, [u for u, n in scored.items() if n > 1]  # no instance scored twice
    assert len(acknowledged - set(scored)) <= 16  # (a node killed between its commit and its log line: one batch)
    reported = Counter(re.findall(r"study (\S+): result version (\d+)", text))
    assert max(reported.values()) == 1, [k for k, n in reported.items() if n > 1]  # no version made twice
    versions = {s["study_uid"]: s["version"] for s in store.studies()}
    outbox = store.outbox()
    assert {r["state"] for r in outbox} == {"sent"}
    for study, files in studies.items():
        held = study_results(orthanc, study)
        assert len(held) == versions[study], (study, len(held), versions[study])  # one SR per version, each once
        assert max(len(evidence(ds)) for ds in held) == IMAGES  # the current one references every image
        assert set().union(*(evidence(ds) for ds in held)) == {_uid(f) for f in files}
    nodes = {n["name"]: n for n in store.nodes()}
    assert not nodes["node1"]["alive"] and nodes["node1"]["seen_at"] <= killed_at + 1  # the others stopped cleanly
    assert "Traceback" not in text
