"""Data pipeline throughput, measured side by side in one run.

(a) naive, as the seed did: per item, PIL-decode the full-size PNG, then torchvision v2 transforms
    (crop 90%, resize, affine, blur, normalise) one image at a time;
(b) chestaid: batches from the uint8 cache (data/cache.py) with the same transforms applied per batch
    (data/augment.py).
Writes benchmarks/results/data_pipeline.json. Usage: python benchmarks/data_pipeline.py [--n 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from chestaid.data.augment import IMAGENET_MEAN, IMAGENET_STD, train_transform
from chestaid.data.cache import Cache, prepare
from chestaid.data.dataset import CacheDataset
from chestaid.data.sources import read_source
from chestaid.data.phantoms.synthetic import synth_nih

from common import write_result


def naive_transform(size: int) -> v2.Compose:
    return v2.Compose([
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
        v2.Lambda(lambda x: v2.functional.crop(x, 0, 0, *[int(0.9 * s) for s in x.shape[-2:]])),
        v2.Resize((size, size), antialias=True),
        v2.RandomAffine(degrees=7, translate=(0.06, 0.06)),
        v2.RandomApply([v2.GaussianBlur(3, sigma=(0.2, 1.5))], p=0.4),
        v2.Lambda(lambda x: x.expand(3, -1, -1)),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def run_naive(paths: list[str], size: int) -> float:
    transform = naive_transform(size)
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            transform(img.convert("L"))
    return len(paths) / (time.perf_counter() - start)


def run_cached(cache_dir: Path, size: int, batch: int, epochs: int, device: str = "cpu", workers: int = 0) -> float:
    dataset = CacheDataset(Cache.open(cache_dir))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=device == "cuda", persistent_workers=workers > 0)
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _, _ in loader:
            train_transform(images.to(device, non_blocking=True), size)
            count += len(images)
    if device == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="an NIH-layout folder (default: 200 synthetic 1024 px images)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cache-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or synth_nih(Path(tmp) / "nih", n=args.n, size=1024, seed=0)
        paths = [p for p in read_source(root).table["path"] if p][: args.n]
        prepare(root, Path(tmp) / "cache", size=args.cache_size)
        run_naive(paths[:5], args.size)  # warm-up
        naive = run_naive(paths, args.size)
        cached = run_cached(Path(tmp) / "cache", args.size, args.batch, epochs=3)
        gpu = {}
        if torch.cuda.is_available():  # the same batches, augmented on the GPU, loaded by 8 workers
            run_cached(Path(tmp) / "cache", args.size, 256, epochs=1, device="cuda", workers=8)
            gpu["cached_batched_gpu_augment_images_per_s"] = round(
                run_cached(Path(tmp) / "cache", args.size, 256, epochs=10, device="cuda", workers=8), 1)
    write_result("data_pipeline_gpu" if gpu else "data_pipeline", {**gpu,
        "images": len(paths), "source_size": "1024x1024 PNG", "cache_size": args.cache_size, "input_size": args.size,
        "naive_images_per_s": round(naive, 1), "cached_batched_images_per_s": round(cached, 1),
        "speedup": round(cached / naive, 1),
        "note": "one process each, same augmentations; naive = PIL decode + per-item torchvision v2 transforms",
    }, args.out)


if __name__ == "__main__":
    main()
