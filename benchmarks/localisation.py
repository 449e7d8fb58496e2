"""Which Grad-CAM target points at the lesion: the pointing game (and IoBB) of candidate layers and CAM methods on
the planted boxes of trained runs (e.g. the runs benchmarks/recipe.py keeps), one split of one phantom family.

Choose on one family's validation boxes, then confirm the choice on the other family's test boxes.
Writes benchmarks/results/localisation_<name>.json.
Usage: python benchmarks/localisation.py --name a_val --data DIR --split val --runs RUN [RUN ...]
                                         [--candidates "layer[+layer]@method" ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import write_result

T1, T2, T3 = (f"backbone.features.transition{i}.conv" for i in (1, 2, 3))
B2 = "backbone.features.transition2.relu"
CANDIDATES = [f"{T1}@gradcam", f"{T2}@gradcam", f"{T3}@gradcam", f"{B2}@gradcam", "fpn.layer_blocks.0@gradcam",
              "backbone.features.norm5@gradcam", f"{T1}+{T2}@gradcam", f"{T2}+{T3}@gradcam", f"{T1}@gradcam++",
              f"{T1}@hirescam", f"{T2}@hirescam", f"{T1}@layercam", f"{T2}@layercam", f"{T3}@layercam",
              f"{T1}+{T2}@layercam", f"{T2}+{T3}@layercam"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--data", type=Path, required=True, help="the NIH-layout root the runs were trained on")
    parser.add_argument("--split", default="val")
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES)
    args = parser.parse_args()
    from chestaid.workflows.localisation import score_boxes

    results = []
    for candidate in args.candidates:
        layers, method = candidate.split("@")
        per_run = []
        for run in args.runs:
            with tempfile.TemporaryDirectory() as out:
                table = score_boxes(run, args.data, split=args.split, target_layers=layers.split("+"),
                                    method=method, out=out)
            per_run.append(table.set_index("finding")["pointing_game"].to_dict())
        mean = [r["mean"] for r in per_run]
        findings = [f for f in per_run[0] if f != "mean"]
        results.append({"candidate": candidate, "pointing_game": round(float(np.mean(mean)), 3),
                        "per_run": [round(m, 3) for m in mean],
                        "per_finding": {f: round(float(np.mean([r[f] for r in per_run if f in r])), 2)
                                        for f in findings}})
        print(candidate, results[-1]["pointing_game"], results[-1]["per_run"], flush=True)
    write_result(f"localisation_{args.name}", {
        "setup": f"{args.data} split {args.split}; runs {[str(r) for r in args.runs]}",
        "candidates": sorted(results, key=lambda r: -r["pointing_game"])}, echo=False)


if __name__ == "__main__":
    main()
