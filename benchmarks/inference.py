"""Inference latency and throughput of a trained-shape NIH model (DenseNet-121 + FPN + fusion), side by side.

CPU: ms per image at batch 1 (eager fp32 vs channels_last), score + Grad-CAM at batch 1, and `predict`'s
images/s on 1024 px PNG files (decode + resize + score) at batch 16 against batch 1. GPU (when present):
images/s at batch 16 and 256 in fp32 and bf16 autocast + channels_last.
Writes benchmarks/results/inference[_gpu].json. Usage: python benchmarks/inference.py [--size 224]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

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
    results.update(predictor_figures(ChestNet(num_outputs=14).eval(), args.size))  # fresh: the model above
    # was converted inside inference_mode, and its weights can no longer take part in a backward pass
    write_result("inference", results, args.out)


def predictor_figures(model: ChestNet, size: int) -> dict:
    """Grad-CAM latency and `predict` throughput through the real Predictor on PNG files."""
    import numpy as np

    from chestaid.config import RunConfig
    from chestaid.data.synthetic import synth_nih
    from chestaid.explain.gradcam import CamExplainer
    from chestaid.predictor import Predictor

    cfg = RunConfig.model_validate({"data": {"image_size": size, "cache_size": 256}})
    predictor = Predictor(cfg, model)
    image = np.random.default_rng(0).integers(0, 256, (1, 256, 256), dtype=np.uint8)
    tabular = np.full((1, 3), 0.5, np.float32)
    cam_ms = {}
    for name, layers in (("default", None), ("p3", ["fpn.layer_blocks.0"])):  # default: stride-4 transition1.conv
        explainer = CamExplainer(predictor, layers)
        for _ in range(2):
            predictor.score_arrays(image, tabular)
            explainer.maps(image, tabular, [0])
        start = time.perf_counter()
        for _ in range(5):
            predictor.score_arrays(image, tabular)
            explainer.maps(image, tabular, [0])
        cam_ms[name] = (time.perf_counter() - start) / 5 * 1000
    with tempfile.TemporaryDirectory() as tmp:
        root = synth_nih(Path(tmp) / "nih", n=64, size=1024, seed=0)
        files = sorted(root.glob("images_*/images/*.png"))
        timings = {}
        for batch in (1, 16):
            predictor.score_files(files[:batch], batch_size=batch)  # warm-up
            start = time.perf_counter()
            predictor.score_files(files, batch_size=batch)
            timings[batch] = len(files) / (time.perf_counter() - start)
    return {"cpu_batch1_score_plus_gradcam_ms_per_image": round(cam_ms["default"], 1),
            "cpu_batch1_score_plus_gradcam_p3_ms_per_image": round(cam_ms["p3"], 1),
            "predict_1024px_png_batch1_images_per_s": round(timings[1], 1),
            "predict_1024px_png_batch16_images_per_s": round(timings[16], 1),
            "predict_batch16_vs_batch1": round(timings[16] / timings[1], 2)}


if __name__ == "__main__":
    main()
