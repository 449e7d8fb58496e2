"""The full-size path, measured: `prepare` on synthetic NIH folders of 1024 px PNGs (the real images' size) for
growing n, each in a fresh process: seconds per image and peak memory (the main process and the largest decode
worker), so linear time and flat memory are shown rather than assumed; a second `prepare` of the finished cache
(no work); then the cache DataLoader's images/s at 256 px with the seed's batch of 160, next to the training
step rate measured by benchmarks/train_throughput.py.

The phantoms are drawn once for the largest n; each smaller n is the same folder with a shorter
Data_Entry_2017.csv. Writes benchmarks/results/prepare_scale.json.
Usage: python benchmarks/prepare_scale.py [--n 500 1000 2000 4000] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import RESULTS, write_result

CHILD = """
import json, resource, sys, time
from chestaid.data.cache import prepare
start = time.perf_counter()
report = prepare(sys.argv[1], sys.argv[2], size=256, workers=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - start, "cached": report.cached, "decoded_now": report.decoded_now,
                  "main_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def subset(full: Path, n: int, out: Path) -> Path:
    """An NIH folder listing the first n images of `full` (the images themselves are shared via a link)."""
    out.mkdir(parents=True)
    entries = pd.read_csv(full / "Data_Entry_2017.csv").head(n)
    entries.to_csv(out / "Data_Entry_2017.csv", index=False)
    for folder in full.glob("images_*"):
        (out / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    for name in ("train_val_list.txt", "test_list.txt"):
        names = set(entries["Image Index"])
        (out / name).write_text("\n".join(x for x in (full / name).read_text().split() if x in names) + "\n")
    return out


def prepare_in_fresh_process(source: Path, cache: Path, workers: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), str(cache), str(workers)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def loader_rate(cache: Path, batch: int, workers: int, batches: int = 20) -> float:
    """Images per second out of the training DataLoader (uint8 batches, shuffled rows, as training reads them)."""
    from torch.utils.data import DataLoader

    from chestaid.data.cache import Cache
    from chestaid.data.dataset import CacheDataset

    data = Cache.open(cache)
    loader = DataLoader(CacheDataset(data, split="train"), batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=False, drop_last=True)
    seen, start = 0, None
    for i, (images, _, _) in enumerate(loader):
        if i == 1:  # the first batch pays for starting the workers
            start, seen = time.perf_counter(), 0
        seen += len(images)
        if i == batches:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, help="keep the phantoms here (and reuse them when present)")
    args = parser.parse_args()
    from chestaid.data.phantoms.synthetic import synth_nih

    tmp = Path(tempfile.mkdtemp())
    full = args.keep or tmp / "full"
    try:
        if not (full / "Data_Entry_2017.csv").is_file():
            started = time.perf_counter()
            synth_nih(full, n=max(args.n), size=1024, seed=0, enrich=False, workers=args.workers)
            print(f"drew {max(args.n)} phantoms in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        rows = []
        for n in sorted(args.n):
            source, cache = subset(full, n, tmp / f"nih{n}"), tmp / f"cache{n}"
            first = prepare_in_fresh_process(source, cache, args.workers)
            again = prepare_in_fresh_process(source, cache, args.workers)
            rows.append({"n": n, "seconds": round(first["seconds"], 2),
                         "ms_per_image": round(1000 * first["seconds"] / n, 2),
                         "main_peak_mb": round(first["main_peak_mb"], 1),
                         "worker_peak_mb": round(first["worker_peak_mb"], 1),
                         "rerun_seconds": round(again["seconds"], 2), "rerun_decoded": again["decoded_now"]})
            print(rows[-1], file=sys.stderr)
        largest = tmp / f"cache{max(args.n)}"
        loader = {f"workers_{w}": round(loader_rate(largest, 160, w), 1) for w in (0, args.workers)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = rows[0], rows[-1]
    throughput = RESULTS / "train_throughput.json"
    train_rate = json.loads(throughput.read_text()) if throughput.is_file() else None
    write_result("prepare_scale", {
        "setup": f"synthetic NIH, 1024 px PNGs, cache 256 px, {args.workers} decode workers, each prepare in a "
                 "fresh process",
        "prepare": rows,
        "time_per_image_ratio_largest_to_smallest": round(large["ms_per_image"] / small["ms_per_image"], 3),
        "main_peak_growth_mb": round(large["main_peak_mb"] - small["main_peak_mb"], 1),
        "worker_peak_growth_mb": round(large["worker_peak_mb"] - small["worker_peak_mb"], 1),
        "loader_images_per_second_256px_batch160": loader,
        "training_rate_for_comparison": train_rate and {k: v for k, v in train_rate.items()
                                                        if k not in ("benchmark", "machine")},
    })


if __name__ == "__main__":
    main()
