"""Training-step throughput of the NIH model (DenseNet-121 + FPN + fusion), variants side by side in one run.

Each step is what ChestModule does: uint8 batch on the device → batch augmentation → forward → BCE loss →
backward → Adam step. CPU: fp32 and fp32 + channels_last. GPU (when present): fp32, bf16 autocast, and bf16
autocast + channels_last. Writes benchmarks/results/train_throughput[_gpu].json.
Usage: python benchmarks/train_throughput.py [--size 224] [--batch 16] [--steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch import nn

from chestaid.data.augment import train_transform
from chestaid.models.chestnet import ChestNet

from common import write_result


def measure(device: str, batch: int, size: int, steps: int, channels_last: bool, bf16: bool) -> float:
    torch.manual_seed(0)
    model = ChestNet(num_outputs=14).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    images = torch.randint(0, 256, (batch, 1, 256, 256), dtype=torch.uint8, device=device)
    tabular, target = torch.rand(batch, 3, device=device), (torch.rand(batch, 14, device=device) < 0.1).float()

    def step() -> None:
        x = train_transform(images, size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = loss_fn(model(x, tabular).float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--out")
    args = parser.parse_args()
    results: dict = {"size": args.size, "model": "DenseNet-121 + FPN + fusion, 14 outputs"}
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        variants = {"fp32": (False, False), "bf16_autocast": (False, True), "bf16_autocast_channels_last": (True, True)}
        for batch in (args.batch, args.gpu_batch):
            for name, (cl, bf16) in variants.items():
                results[f"gpu_batch{batch}_{name}_images_per_s"] = round(
                    measure("cuda", batch, args.size, args.gpu_steps, cl, bf16), 1)
        base = results[f"gpu_batch{args.gpu_batch}_fp32_images_per_s"]
        results["gpu_speedup_bf16_channels_last_vs_fp32"] = round(
            results[f"gpu_batch{args.gpu_batch}_bf16_autocast_channels_last_images_per_s"] / base, 2)
        write_result("train_throughput_gpu", results, args.out)
        return
    fp32 = measure("cpu", args.batch, args.size, args.steps, channels_last=False, bf16=False)
    cl = measure("cpu", args.batch, args.size, args.steps, channels_last=True, bf16=False)
    results.update({"batch": args.batch, "cpu_fp32_images_per_s": round(fp32, 2),
                    "cpu_fp32_channels_last_images_per_s": round(cl, 2),
                    "channels_last_speedup": round(cl / fp32, 2),
                    "note": "bf16 is not measured on CPU: without AMX it is far slower than fp32"})
    write_result("train_throughput", results, args.out)


if __name__ == "__main__":
    main()
