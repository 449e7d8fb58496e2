"""Inference latency and throughput of a trained-shape NIH model (DenseNet-121 + FPN + fusion), side by side.

CPU: ms per image at batch 1 (eager fp32, channels_last) and images/s at batch 16. GPU (when present): images/s
at batch 16 and 256 in fp32 and bf16 autocast + channels_last. Grad-CAM timings come with the explain module.
Writes benchmarks/results/inference[_gpu].json. Usage: python benchmarks/inference.py [--size 224]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from chestaid.data.augment import eval_transform
from chestaid.models.chestnet import ChestNet

from common import write_result


@torch.inference_mode()
def images_per_s(model, device: str, batch: int, size: int, repeats: int, channels_last: bool, bf16: bool) -> float:
    images = torch.randint(0, 256, (batch, 1, 256, 256), dtype=torch.uint8, device=device)
    tabular = torch.rand(batch, 3, device=device)
    net = model.to(memory_format=torch.channels_last) if channels_last else model.to(memory_format=torch.contiguous_format)

    def once() -> None:
        x = eval_transform(images, size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            net(x, tabular)

    for _ in range(2):
        once()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict = {"size": args.size, "model": "DenseNet-121 + FPN + fusion, 14 outputs"}
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        model = ChestNet(num_outputs=14).cuda().eval()
        for batch in (16, 256):
            for name, (cl, bf16) in {"fp32": (False, False), "bf16_channels_last": (True, True)}.items():
                results[f"gpu_batch{batch}_{name}_images_per_s"] = round(
                    images_per_s(model, "cuda", batch, args.size, 20, cl, bf16), 1)
        write_result("inference_gpu", results, args.out)
        return
    model = ChestNet(num_outputs=14).eval()
    eager = images_per_s(model, "cpu", 1, args.size, 10, False, False)
    cl = images_per_s(model, "cpu", 1, args.size, 10, True, False)
    batch16 = images_per_s(model, "cpu", 16, args.size, 3, True, False)
    results.update({"cpu_batch1_eager_ms_per_image": round(1000 / eager, 1),
                    "cpu_batch1_channels_last_ms_per_image": round(1000 / cl, 1),
                    "cpu_batch16_channels_last_images_per_s": round(batch16, 1)})
    write_result("inference", results, args.out)


if __name__ == "__main__":
    main()
