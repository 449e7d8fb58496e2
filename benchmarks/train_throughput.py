"""Training-step throughput of the NIH model (DenseNet-121 + FPN + fusion), variants side by side in one run.

Each step is what ChestModule does: uint8 batch on the device → batch augmentation → forward → BCE loss →
backward → Adam step. CPU: fp32, fp32 + channels_last, bf16 autocast and bf16 autocast + channels_last, interleaved
step by step (a machine shared with other work slows each alike), with what `train.precision: auto` picks here
(training.precision: measured on CPUs with bf16 instructions; benchmarks/results records the CPU's flags). GPU (when present): fp32, bf16
autocast, and bf16 autocast + channels_last. Writes benchmarks/results/train_throughput[_gpu].json.
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
        autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
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


def interleaved_cpu(batch: int, size: int, steps: int, variants: dict) -> dict[str, float]:
    """images/s of each CPU variant, one step of each per round (medians over `steps` rounds)."""
    stepper = {name: _stepper("cpu", batch, size, cl, bf16) for name, (cl, bf16) in variants.items()}
    for fn in stepper.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(steps):
        for name, fn in stepper.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: batch / float(sorted(t)[len(t) // 2]) for name, t in times.items()}


def _stepper(device: str, batch: int, size: int, channels_last: bool, bf16: bool):
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
        with torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_fn(model(x, tabular).float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


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
    from chestaid.core.config import RunConfig, with_task
    from chestaid.core.tasks import get_task
    from chestaid.training.precision import choose_precision

    variants = {"fp32": (False, False), "fp32_channels_last": (True, False), "bf16_autocast": (False, True),
                "bf16_autocast_channels_last": (True, True)}
    got = interleaved_cpu(args.batch, args.size, args.steps, variants)
    results.update({"batch": args.batch, "steps": args.steps,
                    **{f"cpu_{name}_images_per_s": round(v, 2) for name, v in got.items()},
                    "channels_last_speedup": round(got["fp32_channels_last"] / got["fp32"], 2),
                    "bf16_channels_last_vs_fp32": round(got["bf16_autocast_channels_last"] / got["fp32"], 2),
                    "precision_auto_here": choose_precision(with_task(RunConfig.model_validate(
                        {"data": {"image_size": args.size, "batch_size": args.batch},
                         "train": {"precision": "auto", "accelerator": "cpu"}}), get_task("nih"))).to_json()})
    write_result("train_throughput", results, args.out)


if __name__ == "__main__":
    main()
