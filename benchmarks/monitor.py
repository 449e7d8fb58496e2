"""`chestaid monitor`'s error rates and cost: false alarms over many in-distribution windows, detection rate and
delay after a shift to a phantom family the run never saw, and the monitor's cost per instance against the
node's scoring time per instance.

A DenseNet-121 run is trained on phantom family A (64 px, as the tests' runs) and calibrated (which records its
monitoring reference); it then scores fresh family-A images (another seed) and family-B images through the
Predictor, each scored image becoming a store row as the node writes it (state, reason, gate distance, scores,
header mix); windows of them go through the monitor's signals and Holm's method (chestaid.workflows.monitor).

Two things would make the "in-distribution" windows not in distribution, and the monitor rightly flags both:
- enriched sampling (synth's default) draws rarer findings first, so the finding mix depends on how many images
  are drawn: every set here samples NIH's metadata without enrichment (`enrich=False`; with enrichment, 17 of 30
  windows alarmed, on score and flag-rate signals);
- the files are named by NIH patient id, and NIH's ids are not exchangeable (age and sex drift along them): the
  images arrive in random order (in file order, 13 of 30 windows alarmed on the age and sex mixes).
Writes benchmarks/results/monitor.json with the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from common import write_result


def rows_of(predictor, folder: Path, start: float) -> tuple[list[dict], float]:
    """Store rows (as the node's worker writes them) for every PNG under `folder`, and seconds per image."""
    import pandas as pd

    table = pd.read_csv(folder / "Data_Entry_2017.csv").set_index("Image Index")
    files = sorted(folder.rglob("*.png"))
    began = time.perf_counter()
    scored, _ = predictor.score_files(files, batch_size=32)
    per_image = (time.perf_counter() - began) / max(len(files), 1)
    rows = []
    for k, s in enumerate(scored):
        info = table.loc[Path(s.path).name]
        meta = {"manufacturer": "PHANTOM UNIT", "station": "", "modality": "CR", "view": info["View Position"],
                "sex": info["Patient Gender"], "age_band": f"{int(info['Patient Age']) // 10 * 10}s"}
        rows.append({"sop_uid": str(k), "received_at": start + k, "state": "refused" if s.refused else "scored",
                     "reason": s.refusal, "distance": s.distance, "meta": json.dumps(meta),
                     "scores": json.dumps({n: {"risk": float(s.risk[i]), "decision": int(s.decisions[i])}
                                           for i, n in enumerate(s.labels)})})
    return rows, per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--windows", type=int, default=30, help="in-distribution windows")
    parser.add_argument("--window", type=int, default=100, help="instances per window")
    parser.add_argument("--level", type=float, default=0.01)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import chestaid
    from chestaid.data.phantoms.synthetic import synth_nih
    from chestaid.evaluation.drift import holm
    from chestaid.workflows.monitor import window_signals

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chestaid.prepare(synth_nih(tmp / "train", n=args.train_images, size=64, seed=3, enrich=False), tmp / "cache",
                         size=64)
        run = chestaid.train(tmp / "cache", tmp / "run", config="demo",
                             overrides={"data.image_size": 64, "train.epochs": 3})
        chestaid.calibrate(run)
        reference = json.loads((run / "monitor_reference.json").read_text())
        predictor = chestaid.load(run, backend="torch")
        n_same = args.windows * args.window
        same, per_image = rows_of(predictor, synth_nih(tmp / "a", n=n_same, size=64, seed=11, enrich=False), 0.0)
        shifted, _ = rows_of(predictor, synth_nih(tmp / "b", n=10 * args.window, size=64, seed=12, family="b",
                                                       enrich=False),
                             float(n_same))
        order = np.random.default_rng(0).permutation(len(same))  # arrival order: files sorted by name are not
        same = [dict(same[i], received_at=float(k)) for k, i in enumerate(order)]  # (NIH ids follow age)
        windows = [same[i:i + args.window] for i in range(0, n_same, args.window)]
        first = windows[0]
        began = time.perf_counter()
        raised = [holm(window_signals(w, reference, first if k else None), args.level) for k, w in enumerate(windows)]
        alarms = [bool(r) for r in raised]
        by_signal = dict(Counter(s.name for r in raised for s in r))
        monitor_per_instance = (time.perf_counter() - began) / n_same
        # the new source, window after window: how many windows alarm, and after how many of its instances
        delays, detected = [], 0
        for k in range(0, len(shifted), args.window):
            if holm(window_signals(shifted[k:k + args.window], reference, first), args.level):
                detected += 1
                delays.append(k + args.window)
        shifted_windows = len(range(0, len(shifted), args.window))
    tested = len(window_signals(windows[0], reference, None))
    result = {
        "level": args.level, "window": args.window, "train_images": args.train_images,
        "reference_images": reference["images"], "signals_per_window": tested,
        "in_distribution": {"windows": len(windows), "windows_with_an_alarm": int(sum(alarms)),
                            "false_alarm_rate": float(np.mean(alarms)), "alarms_by_signal": by_signal},
        "shift_to_family_b": {"windows": shifted_windows, "windows_with_an_alarm": detected,
                              "detection_rate": detected / shifted_windows,
                              "first_alarm_after_instances_of_b": (delays[0] if delays else None)},
        "cost": {"scoring_ms_per_image": round(1000 * per_image, 2),
                 "monitor_ms_per_instance": round(1000 * monitor_per_instance, 3),
                 "monitor_share_of_scoring": round(monitor_per_instance / per_image, 4)},
        "note": "the node itself only records each instance's gate distance and header mix (no test runs in the "
                "node); the monitor runs as its own command over the store",
    }
    write_result("monitor", result, args.out)


if __name__ == "__main__":
    main()
