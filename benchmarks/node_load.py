"""Load on the DICOM node: several concurrent DCMTK `dcmsend` processes, each sending its own study of phantom
chest CRs; the node scores each image and sends an SR (and a heat map unless --no-heat-maps) to a DCMTK
`storescp`. Measures instances received per second, scored per second, receipt-to-result-sent latency
(p50/p95) and the store's size; writes JSON (default benchmarks/results/node_load.json).

    python benchmarks/node_load.py RUN [--senders 4] [--per-sender 100] [--size 128] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from node_helpers import DCMTK, free_port, phantoms, wait_port  # noqa: E402

from chestaid.apps.node.node import Node, NodeConfig  # noqa: E402
from chestaid.store import Store  # noqa: E402


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--per-sender", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="phantom image side in pixels")
    parser.add_argument("--no-heat-maps", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "node_load.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = [phantoms(tmp / f"in{k}", args.per_sender, seed=100 + k, size=args.size) for k in range(args.senders)]
        dest_port = free_port()
        (tmp / "dest").mkdir()
        destination = subprocess.Popen([str(DCMTK / "storescp"), "-aet", "DEST", "-od", str(tmp / "dest"),
                                        str(dest_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(dest_port)
        node = Node(NodeConfig(run=Path(args.run), store=tmp / "store", port=0, host="127.0.0.1",
                               send_to=[f"DEST@127.0.0.1:{dest_port}"], max_associations=args.senders + 1,
                               heat_maps=not args.no_heat_maps)).start()
        try:
            start = time.time()
            senders = [subprocess.Popen([str(DCMTK / "dcmsend"), "-aet", f"MOD{k}", "-aec", "CHESTAID", "127.0.0.1",
                                         str(node.port), *map(str, files)], stderr=subprocess.PIPE, text=True)
                       for k, files in enumerate(sets)]
            failures = sum(s.wait() != 0 for s in senders)
            received_s = time.time() - start
            total = args.senders * args.per_sender
            while node.store.counts().get("queued", 0) or node.store.outbox("pending"):
                time.sleep(0.2)
            done_s = time.time() - start
            rows = {r["sop_uid"]: r for r in node.store.instances()}
            outbox = node.store.outbox()
            first_scored = min(r["scored_at"] for r in rows.values())
            last_scored = max(r["scored_at"] for r in rows.values())
            sent_at: dict[str, float] = {}
            for r in outbox:
                sent_at[r["source_uid"]] = max(sent_at.get(r["source_uid"], 0.0), r["sent_at"] or np.nan)
            latency = np.array([sent_at[u] - rows[u]["received_at"] for u in rows if u in sent_at])
            result = {
                "senders": args.senders, "instances": total, "image_px": args.size,
                "heat_maps": not args.no_heat_maps, "sender_failures": failures,
                "stored_once": len(rows) == total, "states": node.store.counts(),
                "results_sent": sum(r["state"] == "sent" for r in outbox), "results_dead": sum(
                    r["state"] == "dead" for r in outbox),
                "received_per_s": round(total / received_s, 1),
                "scored_per_s": round(total / max(1e-9, last_scored - first_scored), 1),
                "receipt_to_result_sent_s": {"p50": round(float(np.percentile(latency, 50)), 2),
                                             "p95": round(float(np.percentile(latency, 95)), 2),
                                             "max": round(float(latency.max()), 2)},
                "wall_s": {"all_received": round(received_s, 2), "all_sent": round(done_s, 2)},
                "store_bytes": folder_size(tmp / "store"),
                "store_bytes_per_instance": int(folder_size(tmp / "store") / total),
                "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()},
            }
        finally:
            node.stop()
            destination.terminate()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
