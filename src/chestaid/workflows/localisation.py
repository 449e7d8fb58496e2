"""`chestaid explain`: Grad-CAM maps of a run's images through its Predictor, scored against NIH-format boxes
(chestaid.evaluation.localisation), written to RUN/explain/ with a figure of examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_json, write_text
from chestaid.core.progress import track
from chestaid.core.run_paths import RunPaths
from chestaid.data.cache import Cache
from chestaid.data.images import image_shape
from chestaid.data.sources import find_box_file, read_boxes, read_source
from chestaid.evaluation.localisation import NIH_BOX_FRAME, box_scale, frame_warnings, score_pair, summarise_boxes
from chestaid.explain.gradcam import overlay
from chestaid.inference.predictor import Predictor


def _given(meta: pd.Series) -> dict:
    """The source table's age/sex/view for one image (a DICOM file's own tags still win in the Predictor)."""
    return {"age": meta["age"] if not pd.isna(meta["age"]) else None, "sex": meta["sex"] or None,
            "view": meta["view"] or None}


def _splits(predictor: Predictor, root: Path) -> pd.Series:
    """image_id → split: the run's own cache when it can be opened, else the source's official lists."""
    try:
        table = Cache.open(predictor.cfg.data.path).table
    except (ChestaidError, OSError):
        table = read_source(root).table
    return table.set_index("image_id")["split"]


def score_boxes(run: str | Path, root: str | Path, boxes_file: str | Path | None = None, split: str = "test",
                target_layers: list[str] | None = None, threshold: float = 0.5, batch_size: int = 16,
                out: str | Path | None = None, box_frame: int | None = NIH_BOX_FRAME,
                method: str = "gradcam") -> pd.DataFrame:
    """Score Grad-CAM localisation on every boxed image of `split` ('all' for every one); writes CSV, JSON and
    a figure to RUN/explain/ (or `out`) and returns the per-finding table, whose `attrs["warnings"]` says what
    was left out. Box coordinates are in a `box_frame` × `box_frame` square (NIH: 1024) scaled to each image's
    size; `box_frame=None` means they are in the images' own pixels."""
    predictor = Predictor.load(run)
    root = Path(root)
    if predictor.task.name != "nih":
        raise ChestaidError("localisation needs the NIH box format and a 14-finding model")
    boxes_file = boxes_file or find_box_file(root)
    if boxes_file is None:
        raise ChestaidError(f"{root}: no BBox_List_2017.csv; pass --boxes")
    boxes = read_boxes(boxes_file)
    source = read_source(root).table.set_index("image_id")
    boxes = boxes[boxes["image_id"].isin(source.index[source["path"] != ""])]
    if split != "all":
        splits = _splits(predictor, root)
        boxes = boxes[boxes["image_id"].map(splits).isin([split, "trainval" if split != "test" else "test"])]
    if boxes.empty:
        raise ChestaidError(f"no boxes for images of the {split!r} split under {root}")
    explainer = predictor.explainer(method, target_layers=target_layers)
    labels = list(predictor.task.labels)
    pairs = boxes[["image_id", "finding"]].drop_duplicates().reset_index(drop=True)
    size = predictor.image_size
    rows, examples = [], []
    for start in track(range(0, len(pairs), batch_size), (len(pairs) + batch_size - 1) // batch_size, "Grad-CAM"):
        chunk = pairs.iloc[start:start + batch_size]
        paths = [source.at[image_id, "path"] for image_id in chunk["image_id"]]
        given = [_given(source.loc[image_id]) for image_id in chunk["image_id"]]
        # decoded, resized and given its patient vector by the Predictor: the one inference path
        scored = {s.path: s for s in predictor.score_files(paths, len(paths), given, keep_images=True)[0]}
        kept = [(pair, scored[str(path)]) for pair, path in zip(chunk.itertuples(index=False), paths)
                if str(path) in scored]
        if not kept:
            continue
        maps = explainer.maps(np.stack([s.image for _, s in kept]), np.stack([s.tabular for _, s in kept]),
                              [labels.index(pair.finding) for pair, _ in kept])
        for ((image_id, finding), s), cam in zip(kept, maps):
            shape = image_shape(s.path)
            if shape is None:
                continue
            scale = box_scale(shape, size, box_frame)
            own = boxes[(boxes["image_id"] == image_id) & (boxes["finding"] == finding)]
            rows += score_pair(image_id, finding, cam, own, scale, threshold, size)
            if len(examples) < 16 and finding not in {e[1] for e in examples[-4:]}:
                examples.append((image_id, finding, s.image, cam, own, scale))
    per_box = pd.DataFrame(rows)
    warnings = frame_warnings(per_box, size, box_frame)
    inside = per_box[~per_box["outside"]]
    if inside.empty:
        raise ChestaidError(f"{boxes_file}: no box falls inside its image ({warnings[0]})")
    table = summarise_boxes(inside)
    table.attrs["warnings"] = warnings
    out = Path(out) if out else RunPaths(run).explain
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "localisation_boxes.csv", per_box.to_csv(index=False))
    write_text(out / "localisation.csv", table.to_csv(index=False))
    write_json(out / "localisation.json", {"split": split, "threshold": threshold, "target_layers": explainer.layers,
                                           "method": method, "boxes_file": str(boxes_file), "box_frame": box_frame,
                                           "boxes_outside": int(per_box["outside"].sum()), "warnings": warnings,
                                           "findings": table.to_dict("records")})
    _figure(examples, out / "localisation_examples.png")
    return table


def _figure(examples, path: Path) -> None:
    from matplotlib.patches import Rectangle

    from chestaid.core.figures import save, subplots

    cols = 4
    rows = max(1, int(np.ceil(len(examples) / cols)))
    fig, axes = subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image_id, finding, image, cam, own, (sx, sy)) in zip(axes.ravel(), examples):  # scale: box → square
        ax.imshow(overlay(image, cam, 0.45))
        for bx, by, bw, bh in own[["x", "y", "w", "h"]].to_numpy():
            ax.add_patch(Rectangle((bx * sx, by * sy), bw * sx, bh * sy, fill=False, edgecolor="white", lw=1.5))
        ax.set_title(f"{finding}\n{image_id}", fontsize=8)
    fig.suptitle("Grad-CAM (qualitative) with the annotated boxes in white", fontsize=10)
    save(fig, path)
