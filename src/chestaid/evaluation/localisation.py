"""How well Grad-CAM maps point at annotated boxes (NIH box format), per finding.

Pointing game: for an (image, finding) pair, is the map's maximum inside a box of that finding?
IoBB (Wang et al. 2017): for a box, the share of the thresholded map (map ≥ `threshold`) that lies inside the
box; we report the share of boxes whose IoBB exceeds 0.1, 0.25 and 0.5. Wang et al. drew boxes around the
thresholded map first; here the thresholded map itself is used, which is the stricter reading.

NIH's box file is in the 1024 × 1024 frame of the released PNGs; resized copies are common, so boxes are scaled
from that frame (`box_frame`) to each image's own size. Boxes that still fall outside their image are left out
and counted in a warning, never scored as misses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.data.cache import Cache
from chestaid.data.images import image_shape
from chestaid.data.sources import find_box_file, read_boxes, read_source
from chestaid.core.errors import ChestaidError
from chestaid.explain.gradcam import overlay
from chestaid.core.fileio import write_json, write_text
from chestaid.inference.predictor import Predictor
from chestaid.core.progress import track
from chestaid.core.run_paths import RunPaths

IOBB_LEVELS = (0.1, 0.25, 0.5)
NIH_BOX_FRAME = 1024


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
            scale = _box_scale(shape, size, box_frame)
            own = boxes[(boxes["image_id"] == image_id) & (boxes["finding"] == finding)]
            rows += _score_pair(image_id, finding, cam, own, scale, threshold, size)
            if len(examples) < 16 and finding not in {e[1] for e in examples[-4:]}:
                examples.append((image_id, finding, s.image, cam, own, scale))
    per_box = pd.DataFrame(rows)
    warnings = _frame_warnings(per_box, size, box_frame)
    inside = per_box[~per_box["outside"]]
    if inside.empty:
        raise ChestaidError(f"{boxes_file}: no box falls inside its image ({warnings[0]})")
    table = _summarise(inside)
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


def _box_scale(shape: tuple[int, ...], size: int, frame: int | None) -> tuple[float, float]:
    """Box units → pixels of the size × size square the map is in: frame → the image's pixels → the square."""
    height, width = shape[:2]
    return (size / frame, size / frame) if frame else (size / width, size / height)


def _score_pair(image_id, finding, cam, own: pd.DataFrame, scale, threshold, size: int) -> list[dict]:
    """One row per box; a box reaching more than 2% of the side beyond its image is `outside` and not scored."""
    sx, sy = scale
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    rects = [(bx * sx, by * sy, (bx + bw) * sx, (by + bh) * sy) for bx, by, bw, bh in own[["x", "y", "w", "h"]].to_numpy()]
    slack = 0.02 * size
    outside = [min(x0, y0) < -slack or max(x1, y1) > size + slack for x0, y0, x1, y1 in rects]
    hit = any(x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1 for (x0, y0, x1, y1), out in zip(rects, outside) if not out)
    mask = cam >= threshold
    area = max(int(mask.sum()), 1)
    rows = []
    for (x0, y0, x1, y1), out in zip(rects, outside):
        inside = mask[max(int(np.floor(y0)), 0):int(np.ceil(y1)), max(int(np.floor(x0)), 0):int(np.ceil(x1))].sum()
        rows.append({"image_id": image_id, "finding": finding, "pointing_hit": hit, "iobb": float(inside / area),
                     "outside": out, "x1": x1 / size, "y1": y1 / size})
    return rows


def _frame_warnings(per_box: pd.DataFrame, size: int, frame: int | None) -> list[str]:
    """What suggests the boxes are not in the frame they were read in."""
    frame_text = f"a {frame}-pixel frame (--box-frame)" if frame else "the images' own pixels"
    warnings = []
    outside = int(per_box["outside"].sum())
    if outside:
        warnings.append(f"{outside} of {len(per_box)} boxes fall outside their images when read in {frame_text}; "
                        f"they are left out, not scored")
    inside = per_box[~per_box["outside"]]
    if len(inside) >= 10 and inside["x1"].max() <= 0.5 and inside["y1"].max() <= 0.5:
        warnings.append(f"all {len(inside)} boxes lie in the top-left quarter of their images when read in "
                        f"{frame_text}: are they in another frame? pass --box-frame")
    return warnings


def _summarise(per_box: pd.DataFrame) -> pd.DataFrame:
    records = []
    for finding, group in per_box.groupby("finding"):
        pairs = group.drop_duplicates("image_id")
        record = {"finding": finding, "images": len(pairs), "boxes": len(group),
                  "pointing_game": float(pairs["pointing_hit"].mean())}
        for level in IOBB_LEVELS:
            record[f"iobb>{level}"] = float((group["iobb"] > level).mean())
        records.append(record)
    table = pd.DataFrame(records)
    mean = {"finding": "mean", "images": int(table["images"].sum()), "boxes": int(table["boxes"].sum())}
    mean.update({c: float(table[c].mean()) for c in table.columns if c not in mean})
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


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
