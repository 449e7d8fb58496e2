"""What keeping heat maps apart from concurrent scoring costs, for the two designs issue 34 named, side by side:

- copy (chosen): the explainer runs its own copy of the network — the copy's time (once per Predictor) and its
  memory (parameters + buffers);
- lock: one lock shared by scoring and maps — how long a scoring request waits while a map is made (a map's time
  at batch 1), and the scoring throughput while maps run in another thread, under each design.

    python benchmarks/explainer_concurrency.py [--run RUN] [--size 224] [--seconds 20] [--out FILE]

Without --run, a DenseNet-121 + FPN NIH model (the demo config) with random weights at --size px (torch backend,
Grad-CAM in fp32). Writes benchmarks/results/explainer_concurrency.json with the machine.
"""

from __future__ import annotations

import argparse
import copy
import threading
import time

import numpy as np
import torch
from common import write_result


def _predictor(run: str | None, size: int):
    from chestaid.core.config import load_config
    from chestaid.inference.predictor import Predictor
    from chestaid.models.chestnet import build_model

    if run:
        return Predictor.load(run, backend="torch")
    cfg = load_config("demo", [f"data.image_size={size}", f"data.cache_size={size}", "task=nih"])
    return Predictor(cfg, build_model(cfg.model, cfg.require_task().num_outputs))


def _scoring_rate(predictor, images, tabular, seconds: float, maps_lock: threading.Lock | None) -> dict:
    """Scoring batches of 4 for `seconds` while another thread makes maps back to back; with `maps_lock`, both
    take it (the lock design)."""
    stop, maps = threading.Event(), [0]
    explainer = predictor.explainer(precision="fp32")

    def map_loop() -> None:
        while not stop.is_set():
            with maps_lock or _nothing():
                explainer.maps(images[:1], tabular[:1], [0])
            maps[0] += 1

    mapper = threading.Thread(target=map_loop)
    mapper.start()
    scored, waits, end = 0, [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        with maps_lock or _nothing():
            waits.append(time.perf_counter() - start)
            predictor.score_arrays(images, tabular)
        scored += len(images)
    stop.set()
    mapper.join()
    return {"images_per_s": round(scored / seconds, 2), "maps_per_s": round(maps[0] / seconds, 2),
            "mean_wait_ms": round(1000 * float(np.mean(waits)), 1), "max_wait_ms": round(1000 * max(waits), 1)}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    predictor = _predictor(args.run, args.size)
    start = time.perf_counter()
    clone = copy.deepcopy(predictor.model)
    copy_ms = 1000 * (time.perf_counter() - start)
    mib = sum(t.numel() * t.element_size() for t in [*clone.parameters(), *clone.buffers()]) / 2 ** 20
    size = predictor.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, size, size), dtype=np.uint8)
    tabular = np.full((4, 3), 0.5, np.float32)
    explainer = predictor.explainer(precision="fp32")
    explainer.maps(images[:1], tabular[:1], [0])  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        explainer.maps(images[:1], tabular[:1], [0])
        times.append(time.perf_counter() - start)
    result = {
        "model": args.run or f"demo config, random weights, {args.size} px", "image_size": size,
        "copy": {"copy_ms_once": round(copy_ms, 1), "extra_MiB": round(mib, 1)},
        "map_ms_batch1": round(1000 * min(times), 1),
        "while_maps_run": {"copy": _scoring_rate(predictor, images, tabular, args.seconds, None),
                           "lock": _scoring_rate(predictor, images, tabular, args.seconds, threading.Lock())},
        "chosen": "copy",
        "note": "lock: every scoring request waits for a map in progress (up to a map's time at batch 1); copy: "
                "scoring and maps share the CPU instead of taking turns, for one copy of the weights per explainer",
    }
    write_result("explainer_concurrency", result, args.out)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
