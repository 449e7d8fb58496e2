"""One process against two (DDP, gloo on CPU) with the same global batch: the best validation ROC-AUC of the
pneumonia demo recipe on synthetic data, over several seeds, so the difference can be set against the noise
between seeds. The CI test (tests/test_ddp.py) uses the tolerance measured here.

Writes benchmarks/results/ddp_parity.json.
Usage: python benchmarks/ddp_parity.py [--seeds 3] [--images 400] [--size 64] [--epochs 6] [--batch 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import write_result


def run(cache: Path, out: Path, seed: int, processes: int, batch: int, size: int, epochs: int) -> dict:
    sets = [f"data.image_size={size}", f"train.epochs={epochs}", f"train.seed={seed}",
            f"data.batch_size={batch // processes}", "train.checkpoint_every_n_steps=0"]
    if processes > 1:
        sets += [f"train.devices={processes}", "train.strategy=ddp"]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "train", "--config", "demo_pneumonia", "--data",
                    str(cache), "--out", str(out), *[f"--set={s}" for s in sets]], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = pd.read_csv(out / "train_log.csv")
    return {"seed": seed, "processes": processes, "per_device_batch": batch // processes,
            "best_val_auroc": float(log["auroc_mean"].max()), "epochs_run": len(log),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32, help="global batch")
    args = parser.parse_args()
    from chestaid.data.cache import prepare
    from chestaid.data.phantoms.synthetic import synth_pneumonia

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = synth_pneumonia(tmp / "kaggle", n=args.images, size=args.size, seed=11, workers=2)
        prepare(root, tmp / "cache", size=args.size, workers=2, fractions=(0.6, 0.25, 0.15))
        runs = [run(tmp / "cache", tmp / f"run{p}_{s}", s, p, args.batch, args.size, args.epochs)
                for s in range(args.seeds) for p in (1, 2)]
    auroc = {p: np.array([r["best_val_auroc"] for r in runs if r["processes"] == p]) for p in (1, 2)}
    paired = auroc[2] - auroc[1]
    write_result("ddp_parity", {
        "setup": f"pneumonia demo recipe, {args.images} synthetic images at {args.size} px, {args.epochs} epochs, "
                 f"global batch {args.batch}; 1 process vs 2 (DDP, gloo, CPU)",
        "runs": runs,
        "one_process": {"mean": float(auroc[1].mean()), "sd_between_seeds": float(auroc[1].std(ddof=1))},
        "two_processes": {"mean": float(auroc[2].mean()), "sd_between_seeds": float(auroc[2].std(ddof=1))},
        "paired_difference": {"mean": float(paired.mean()), "max_abs": float(np.abs(paired).max())},
    })


if __name__ == "__main__":
    main()
