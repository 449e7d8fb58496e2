"""The input gate against an out-of-distribution corpus built from packages and code (no downloads).

For each run: the Mahalanobis distance (chestaid.inference.gate) of the run's own test split (in distribution) and of
each category below, the share refused at the run's fitted threshold, and the detection AUROC (test split vs
the category; distance as the score). The threshold and method were fixed before this corpus was built
(99th percentile of validation distances; no outlier data is used to fit or choose anything), so every figure
here is a confirmation, not a fit. Categories (images at the run's cache size, neutral patient data):
- photographs and textures: every bundled scikit-image sample image (astronaut, camera, cat, coins, moon, …);
- noise (uniform, Gaussian, salt-and-pepper), uniform grey levels, gradients (linear, radial), rendered text;
- non-chest DICOM pixels: every single-frame image of pydicom-data and pydicom's own test files whose tags
  are not a frontal chest radiograph (CT, MR, US, NM, SEG, secondary captures, extremity CR), by their pixels
  alone; the tag check refuses them all before this, counted separately;
- the run's own test images rotated by 90°/180°/270°, flipped upside down, inverted, or cropped to a corner.
Writes benchmarks/results/input_gate.json. Usage: python benchmarks/input_gate.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from common import write_result

SKIMAGE = ["astronaut", "binary_blobs", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock",
           "coffee", "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
           "logo", "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text"]


def _grey(image: np.ndarray) -> np.ndarray:
    from chestaid.data.images import to_uint8

    image = np.asarray(image, np.float32)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return to_uint8(image)


def photographs() -> list[np.ndarray]:
    from skimage import data

    return [_grey(getattr(data, name)()) for name in SKIMAGE]


def synthetic(size: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    noise = [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(8)]
    noise += [np.clip(rng.normal(128, s, (size, size)), 0, 255).astype(np.uint8) for s in (10, 30, 60, 90)]
    noise += [np.where(rng.random((size, size)) < p, 255, 0).astype(np.uint8) for p in (0.05, 0.5, 0.95)]
    flat = [np.full((size, size), v, np.uint8) for v in (0, 32, 64, 96, 128, 160, 192, 224, 255)]
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1
    gradients = [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), 255 - np.tile(ramp, (size, 1)),
                 np.hypot(yy, xx) * 180, 255 - np.hypot(yy, xx) * 180, (xx + yy + 2) * 63]
    gradients = [np.clip(g, 0, 255).astype(np.uint8) for g in gradients]
    texts = []
    font = ImageFont.load_default(size=max(10, size // 12))
    for k, (fg, bg) in enumerate(((0, 255), (255, 0), (40, 200), (220, 30))):
        page = Image.new("L", (size, size), bg)
        draw = ImageDraw.Draw(page)
        for line in range(10):
            draw.text((4, 4 + line * size // 10), f"Patient report {k}.{line}: no acute findings", fill=fg, font=font)
        texts.append(np.asarray(page))
    return {"noise": noise, "uniform": flat, "gradient": gradients, "text": texts}


def non_chest_dicoms() -> tuple[list[np.ndarray], dict]:
    """Pixels of every single-frame DICOM in pydicom-data and pydicom's test files except the one real chest
    radiograph (RG1_*), and how many of them the tag check alone refuses (files without the tags pass it)."""
    import pydicom
    from pydicom.data import get_testdata_files

    import data_store
    from chestaid.data.images import dicom_to_grey
    from chestaid.inference.gate import tag_refusal

    files = {p.name: p for p in (Path(data_store.__file__).parent / "data").glob("*.dcm")}
    files.update({Path(f).name: Path(f) for f in get_testdata_files("*.dcm") if Path(f).name not in files})
    images, tags = [], {"files": 0, "refused_by_tags": 0, "passed_tags": []}
    for name, path in sorted(files.items()):
        if name.startswith("RG1_"):
            continue
        try:
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1:
                continue
            pixels = ds.pixel_array
        except Exception:  # noqa: BLE001 - unreadable test files are the decoder's business, not the gate's
            continue
        try:
            grey = dicom_to_grey(pixels, ds)
        except Exception:  # noqa: BLE001
            continue
        if min(grey.shape) < 16:
            continue
        tags["files"] += 1
        if tag_refusal(ds):
            tags["refused_by_tags"] += 1
        else:
            tags["passed_tags"].append(name)
        images.append(grey)
    return images, tags


def transformed(test: np.ndarray, count: int = 40) -> dict[str, list[np.ndarray]]:
    from chestaid.data.images import resize_square

    picks = test[np.linspace(0, len(test) - 1, min(count, len(test))).round().astype(int)]
    size = test.shape[-1]
    half = size // 2
    return {"rotated_90": [np.rot90(x, 1) for x in picks], "rotated_180": [np.rot90(x, 2) for x in picks],
            "rotated_270": [np.rot90(x, 3) for x in picks], "upside_down": [x[::-1] for x in picks],
            "inverted": [255 - x for x in picks],
            "corner_crop": [resize_square(np.ascontiguousarray(x[:half, :half]), size) for x in picks]}


def distances(predictor, images: list[np.ndarray], batch: int = 32) -> np.ndarray:
    from chestaid.data.images import resize_square

    size = predictor.image_size
    out = []
    for start in range(0, len(images), batch):
        part = np.stack([resize_square(np.ascontiguousarray(x), size) for x in images[start:start + batch]])
        features = predictor.forward(torch.from_numpy(part).unsqueeze(1), torch.full((len(part), 3), 0.5))[1]
        out.append(predictor.gate.distance(features.numpy()))
    return np.concatenate(out)


def evaluate_run(run: str) -> dict:
    from chestaid.data.cache import Cache
    from chestaid.inference.predictor import Predictor

    predictor = Predictor.load(run)
    if predictor.gate is None:
        raise SystemExit(f"{run}: no input gate (chestaid calibrate RUN fits one)")
    cache = Cache.open(predictor.cfg.data.path)
    _, test_features, rows = predictor.cache_outputs(cache, "test")
    test_d = predictor.gate.distance(test_features)
    test_images = np.load(cache.root / "images.npy", mmap_mode="r")[rows["row"].to_numpy()]
    dicoms, tags = non_chest_dicoms()
    corpus = {"photographs": photographs(), **synthetic(predictor.image_size), "non_chest_dicom_pixels": dicoms,
              **transformed(np.asarray(test_images))}
    threshold = predictor.gate.threshold
    table, everything = {}, []
    for name, images in corpus.items():
        d = distances(predictor, images)
        everything.append(d)
        labels = np.r_[np.zeros(len(test_d)), np.ones(len(d))]
        table[name] = {"images": len(d), "refused": round(float((d > threshold).mean()), 4),
                       "auroc": round(float(roc_auc_score(labels, np.r_[test_d, d])), 4),
                       "median_distance": round(float(np.median(d)), 2)}
    ood = np.concatenate(everything)
    labels = np.r_[np.zeros(len(test_d)), np.ones(len(ood))]
    return {"run": "/".join(Path(run).resolve().parts[-2:]), "task": predictor.task.name,
            "threshold": round(threshold, 3),
            "gate": predictor.gate.info, "test_images": int(len(test_d)),
            "test_refused": round(float((test_d > threshold).mean()), 4),
            "test_median_distance": round(float(np.median(test_d)), 2),
            "ood_images": int(len(ood)), "ood_refused": round(float((ood > threshold).mean()), 4),
            "auroc_all": round(float(roc_auc_score(labels, np.r_[test_d, ood])), 4),
            "per_category": table, "dicom_tag_check": tags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args()
    write_result("input_gate", {"runs": [evaluate_run(run) for run in args.runs]}, args.out)


if __name__ == "__main__":
    main()
