"""Inference latency and throughput of a trained-shape NIH model (DenseNet-121 + FPN + fusion), side by side.

CPU, all in one run on the same model: ms per image at batch 1 for eager fp32, channels_last and ONNX Runtime
(`chestaid export`); score + Grad-CAM at batch 1 for the path before issue 14 (torch score, then Grad-CAM with
the input and every weight taking gradients) against today's (ONNX score, Grad-CAM whose backward pass starts
at the target layer and computes no weight gradients); `predict` with heat maps for every row against the top
8 rows only; and `predict`'s images/s on 1024 px PNG files at batch 16 against batch 1. GPU (when present):
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
    results.update(predictor_figures(ChestNet(num_outputs=14).eval(), args.size))  # a fresh model: the one above
    # was converted to channels_last inside inference_mode
    write_result("inference", results, args.out)


def _ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def _previous_gradcam(predictor, image, tabular) -> None:
    """Grad-CAM as chestaid made it before issue 14, kept here as the reference: input requires grad, every
    weight takes gradients (the backward pass runs down to the input)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from chestaid.explain.gradcam import _ImageOnly

    model = predictor.model.requires_grad_(True)
    layer = dict(model.named_modules())["backbone.features.transition1.conv"]
    batch = torch.from_numpy(image).unsqueeze(1)
    x = eval_transform(batch, predictor.cfg.data.image_size, predictor.cfg.data.augment.crop).requires_grad_(True)
    with torch.enable_grad(), GradCAM(model=_ImageOnly(model, torch.from_numpy(tabular)), target_layers=[layer]) as cam:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(0)])
    model.requires_grad_(False)


def predictor_figures(model: ChestNet, size: int) -> dict:
    """Scoring backends, Grad-CAM latency and `predict` throughput through the real Predictor on a run."""
    import numpy as np

    from chestaid.core.config import RunConfig, save_config
    from chestaid.data.phantoms.synthetic import synth_nih
    from chestaid.explain.gradcam import CamExplainer
    from chestaid.inference.onnx_backend import export_onnx
    from chestaid.inference.predictor import Predictor
    from chestaid.models.weights import save_weights
    from chestaid.workflows.predict import predict_worklist

    image = np.random.default_rng(0).integers(0, 256, (1, 256, 256), dtype=np.uint8)
    tabular = np.full((1, 3), 0.5, np.float32)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cfg = RunConfig.model_validate({"data": {"image_size": size, "cache_size": 256}})
        save_config(cfg, run / "config.yaml")
        save_weights(model, run / "model.safetensors", cfg.task.name)
        export = export_onnx(run)
        torch_p, onnx_p = Predictor.load(run, backend="torch"), Predictor.load(run, backend="onnx")
        explainer = CamExplainer(onnx_p)
        eager = _ms(lambda: torch_p.score_arrays(image, tabular), 10)
        onnx = _ms(lambda: onnx_p.score_arrays(image, tabular), 10)
        previous = _ms(lambda: (torch_p.score_arrays(image, tabular), _previous_gradcam(torch_p, image, tabular)), 5)
        today = _ms(lambda: (onnx_p.score_arrays(image, tabular), explainer.maps(image, tabular, [0])), 5)
        cam_only = _ms(lambda: explainer.maps(image, tabular, [0]), 5)
        out.update({"onnx_max_abs_logit_difference": export["max_abs_logit_difference"],
                    "cpu_batch1_predictor_torch_ms_per_image": round(eager, 1),
                    "cpu_batch1_predictor_onnx_ms_per_image": round(onnx, 1),
                    "onnx_vs_torch_predictor": round(onnx / eager, 2),
                    "cpu_batch1_score_plus_gradcam_previous_ms": round(previous, 1),
                    "cpu_batch1_score_plus_gradcam_ms": round(today, 1),
                    "cpu_batch1_gradcam_only_ms": round(cam_only, 1),
                    "score_plus_gradcam_today_vs_previous": round(today / previous, 2)})
        root = synth_nih(Path(tmp) / "nih", n=64, size=1024, seed=0)
        files = sorted(root.glob("images_*/images/*.png"))
        timings = {}
        for batch in (1, 16):
            onnx_p.score_files(files[:batch], batch_size=batch)  # warm-up
            start = time.perf_counter()
            onnx_p.score_files(files, batch_size=batch)
            timings[batch] = len(files) / (time.perf_counter() - start)
        cams = {}
        for rows in ("all", 8):
            start = time.perf_counter()
            predict_worklist(run, [root], Path(tmp) / f"w{rows}.csv", Path(tmp) / f"cam{rows}", cam_rows=rows)
            cams[rows] = time.perf_counter() - start
    out.update({"predict_1024px_png_batch1_images_per_s": round(timings[1], 1),
                "predict_1024px_png_batch16_images_per_s": round(timings[16], 1),
                "predict_batch16_vs_batch1": round(timings[16] / timings[1], 2),
                "predict_64_files_heat_maps_all_s": round(cams["all"], 1),
                "predict_64_files_heat_maps_top8_s": round(cams[8], 1)})
    return out


if __name__ == "__main__":
    main()
