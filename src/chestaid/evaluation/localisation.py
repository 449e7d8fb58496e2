"""How well Grad-CAM maps point at annotated boxes (NIH box format), per finding.

Pointing game: for an (image, finding) pair, is the map's maximum inside a box of that finding?
IoBB (Wang et al. 2017): for a box, the share of the thresholded map (map ≥ `threshold`) that lies inside the
box; we report the share of boxes whose IoBB exceeds 0.1, 0.25 and 0.5. Wang et al. drew boxes around the
thresholded map first; here the thresholded map itself is used, which is the stricter reading.

NIH's box file is in the 1024 × 1024 frame of the released PNGs; resized copies are common, so boxes are scaled
from that frame (`box_frame`) to each image's own size. Boxes that still fall outside their image are left out
and counted in a warning, never scored as misses. The run that makes the maps: chestaid.workflows.localisation.
"""

from __future__ import annotations


import numpy as np
import pandas as pd


IOBB_LEVELS = (0.1, 0.25, 0.5)
NIH_BOX_FRAME = 1024


def box_scale(shape: tuple[int, ...], size: int, frame: int | None) -> tuple[float, float]:
    """Box units → pixels of the size × size square the map is in: frame → the image's pixels → the square."""
    height, width = shape[:2]
    return (size / frame, size / frame) if frame else (size / width, size / height)


def score_pair(image_id, finding, cam, own: pd.DataFrame, scale, threshold, size: int) -> list[dict]:
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


def frame_warnings(per_box: pd.DataFrame, size: int, frame: int | None) -> list[str]:
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


def summarise_boxes(per_box: pd.DataFrame) -> pd.DataFrame:
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


