"""Load on the DICOM node, one node on SQLite against three nodes sharing one PostgreSQL store, side by side in one
run on the same images: several concurrent DCMTK `dcmsend` processes (spread over the nodes, as a load balancer
would) each send their share of phantom chest CRs; each node is its own process (`chestaid node`), scores each image
and sends an SR per image (a heat map too unless --no-heat-maps) to a DCMTK `storescp`. Measures instances received
per second, scored per second, receipt-to-result-sent latency (p50/p95), and whether each instance was stored once
and each result delivered once (storescp keeps every delivery as its own file). Writes JSON with the machine
(default benchmarks/results/node_load.json).

    python benchmarks/node_load.py RUN [--senders 6] [--per-sender 100] [--size 128] [--no-heat-maps] [--out FILE]

Needs DCMTK and Debian's PostgreSQL (the tests' helpers start a private cluster). On a machine with few cores the
three nodes share them: the figure is what sharing a store costs or gains there, not a target.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import write_result  # noqa: E402
from node_helpers import DCMTK, free_port, node_process, phantoms, wait_port  # noqa: E402
from postgres_helpers import PostgresServer  # noqa: E402

from chestaid.store import Store  # noqa: E402


def measure(run: Path, folder: Path, sets: list[list[Path]], nodes: int, database: str | None,
            heat_maps: bool) -> dict:
    """One configuration: `nodes` node processes on one store (SQLite when `database` is None)."""
    dest_port, ports = free_port(), [free_port() for _ in range(nodes)]
    (folder / "dest").mkdir(parents=True)
    destination = subprocess.Popen([str(DCMTK / "storescp"), "-aet", "DEST", "-od", str(folder / "dest"), "-uf",
                                    str(dest_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(dest_port)
    args = ["--host", "127.0.0.1", "--send-to", f"DEST@127.0.0.1:{dest_port}", "--study-quiet-period", "0",
            "--max-associations", str(len(sets) + 1)] + (["--database", database] if database else []) + (
        [] if heat_maps else ["--no-heat-maps"])
    processes = [node_process(run, folder / "store", port, *args, "--node-name", f"node{k}",
                              log=folder / f"node{k}.log") for k, port in enumerate(ports)]
    store = Store.open(folder / "store")
    try:
        start = time.time()
        senders = [subprocess.Popen([str(DCMTK / "dcmsend"), "-aet", f"MOD{k}", "-aec", "CHESTAID", "127.0.0.1",
                                     str(ports[k % nodes]), *map(str, files)], stderr=subprocess.DEVNULL)
                   for k, files in enumerate(sets)]
        failures = sum(s.wait() != 0 for s in senders)
        received_s = time.time() - start
        while store.counts().get("queued", 0) or store.outbox("pending"):
            time.sleep(0.2)
        done_s = time.time() - start
        rows = {r["sop_uid"]: r for r in store.instances()}
        outbox = store.outbox()
    finally:
        for p in processes:
            p.terminate()
            p.wait(60)
        store.close()
        destination.terminate()
    total = sum(len(s) for s in sets)
    scored = [r["scored_at"] for r in rows.values() if r["scored_at"] is not None]
    sent_at: dict[str, float] = {}
    for r in outbox:
        sent_at[r["source_uid"]] = max(sent_at.get(r["source_uid"], 0.0), r["sent_at"] or np.nan)
    latency = np.array([sent_at[u] - rows[u]["received_at"] for u in rows if u in sent_at])
    delivered = sum(1 for p in (folder / "dest").rglob("*") if p.is_file())  # each delivery its own file (-uf)
    return {
        "nodes": nodes, "database": "PostgreSQL" if database else "SQLite", "sender_failures": failures,
        "stored_once": len(rows) == total, "states": dict(sorted(Counter(r["state"] for r in rows.values()).items())),
        "results": len(outbox), "results_sent": sum(r["state"] == "sent" for r in outbox),
        "deliveries_at_destination": delivered,
        "received_per_s": round(total / received_s, 1),
        "scored_per_s": round(len(scored) / max(1e-9, max(scored) - min(scored)), 1) if scored else None,
        "receipt_to_result_sent_s": {"p50": round(float(np.percentile(latency, 50)), 2),
                                     "p95": round(float(np.percentile(latency, 95)), 2),
                                     "max": round(float(latency.max()), 2)} if latency.size else None,
        "wall_s": {"all_received": round(received_s, 2), "all_sent": round(done_s, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--per-sender", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="phantom image side in pixels")
    parser.add_argument("--no-heat-maps", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = [phantoms(tmp / f"in{k}", args.per_sender, seed=100 + k, size=args.size) for k in range(args.senders)]
        pg = PostgresServer()
        try:
            one = measure(Path(args.run), tmp / "sqlite", sets, 1, None, not args.no_heat_maps)
            three = measure(Path(args.run), tmp / "postgresql", sets, 3, pg.url, not args.no_heat_maps)
        finally:
            pg.remove()
    write_result("node_load", {
        "senders": args.senders, "instances": args.senders * args.per_sender, "image_px": args.size,
        "heat_maps": not args.no_heat_maps, "one_node_sqlite": one, "three_nodes_postgresql": three,
        "ratio_three_to_one": {"received_per_s": round(three["received_per_s"] / one["received_per_s"], 2),
                               "scored_per_s": round(three["scored_per_s"] / one["scored_per_s"], 2)
                               if one["scored_per_s"] and three["scored_per_s"] else None}}, args.out)


if __name__ == "__main__":
    main()
