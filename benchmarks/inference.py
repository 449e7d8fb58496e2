"""Inference speed of a run's own model on this machine, every backend side by side in one run.

CPU: ms/image at batch 1 and images/s at batch 16 for torch fp32 eager, torch fp32 channels_last, torch bf16
autocast + channels_last, ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16 and OpenVINO int8 (the variants
`chestaid export` wrote), with the max logit difference of each against torch fp32 on the same inputs; the
backend `auto` picks for this CPU against ONNX Runtime fp32; the parity figures export recorded; Grad-CAM in fp32
against bf16 autocast (time, max map difference, argmax agreement); `predict` images/s over a folder of 1024 px
PNGs with decoding in this process (as before issue 27) and in 1 and 2 worker processes (same worklist rows).
Timings are interleaved round by round (medians), so a machine shared with other work slows every variant alike.
Without --run the model is a DenseNet-121 + FPN + fusion with 14 outputs and random weights on a synthetic cache
(say so when quoting it). GPU (when present): images/s at batch 16 and 256 in fp32 and bf16 autocast.
Writes benchmarks/results/inference[_gpu].json. Usage: python benchmarks/inference.py [--run RUN] [--size 224]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from chestaid.data.augment import eval_transform
from chestaid.models.chestnet import ChestNet

from common import write_result

log = logging.getLogger("benchmarks.inference")


@torch.inference_mode()
def images_per_s(model, device: str, batch: int, size: int, repeats: int, channels_last: bool, bf16: bool) -> float:
    images = torch.randint(0, 256, (batch, 1, 256, 256), dtype=torch.uint8, device=device)
    tabular = torch.rand(batch, 3, device=device)
    net = model.to(memory_format=torch.channels_last) if channels_last else model.to(memory_format=torch.contiguous_format)

    def once() -> None:
        x = eval_transform(images, size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
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


def _torch_variant(model, channels_last: bool, bf16: bool, tabular_used: bool):
    net = copy.deepcopy(model).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(image: np.ndarray, tabular: np.ndarray):
        x = torch.from_numpy(image)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            head, features = net.embed(x)
            logits = net.classify(head, torch.from_numpy(tabular) if tabular_used else None)
        return logits.float().numpy(), features.float().numpy()

    return run


def _interleaved(fns: dict, args: tuple, rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn, measured round-robin (one call of each per round)."""
    for fn in fns.values():
        fn(*args)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def backend_table(run: Path, rounds: int, batch: int = 16, batch_rounds: int = 3) -> dict:
    """The issue's table for the run's model: every variant on the same inputs, side by side."""
    from chestaid.inference.backends import open_variant, read_record
    from chestaid.core.run_paths import RunPaths
    from chestaid.models.weights import load_model

    cfg, model = load_model(run)
    model = model.eval().requires_grad_(False)
    size, tab = cfg.data.image_size, cfg.model.tabular
    variants = {"torch fp32 eager": _torch_variant(model, False, False, tab),
                "torch fp32 channels_last": _torch_variant(model, True, False, tab),
                "torch bf16 autocast, channels_last": _torch_variant(model, True, True, tab)}
    notes = {}
    for label, name in (("ONNX Runtime fp32", "onnx"), ("OpenVINO fp32", "openvino"),
                        ("OpenVINO bf16", "openvino-bf16"), ("OpenVINO int8", "openvino-int8")):
        network, why = open_variant(run, name)
        if network is None:
            notes[label] = why
        else:
            variants[label] = network
    rng = np.random.default_rng(0)
    one = (rng.standard_normal((1, 3, size, size)).astype(np.float32), np.full((1, 3), 0.5, np.float32))
    many = (rng.standard_normal((batch, 3, size, size)).astype(np.float32), rng.random((batch, 3)).astype(np.float32))
    reference = variants["torch fp32 eager"](*many)[0]
    diffs = {name: float(np.abs(fn(*many)[0] - reference).max()) for name, fn in variants.items()}
    b1 = _interleaved(variants, one, rounds)
    b16 = _interleaved(variants, many, batch_rounds)
    record = read_record(RunPaths(run))
    rows = {name: {"batch1_ms": round(b1[name] * 1000, 1), f"batch{batch}_images_per_s": round(batch / b16[name], 1),
                   "max_logit_diff_vs_fp32": None if name == "torch fp32 eager" else float(f"{diffs[name]:.2g}")}
            for name in variants}
    return {"image_size": size, "rows": rows, "not_measured": notes,
            "parity_recorded_at_export": {n: {k: v for k, v in e.items() if k != "written"}
                                          for n, e in record.get("variants", {}).items()},
            "parity_data": record.get("parity_data"), "int8_calibration": record.get("int8_calibration")}


def print_table(table: dict, batch: int = 16) -> None:
    lines = [f"| backend | batch 1 ms | batch {batch} img/s | max logit diff vs fp32 |", "| --- | --- | --- | --- |"]
    for name, row in table["rows"].items():
        diff = "—" if row["max_logit_diff_vs_fp32"] is None else f"{row['max_logit_diff_vs_fp32']:.2g}"
        lines.append(f"| {name} | {row['batch1_ms']} | {row[f'batch{batch}_images_per_s']} | {diff} |")
    for name, why in table["not_measured"].items():
        lines.append(f"| {name} | — | — | not measured: {why} |")
    log.warning("\n%s", "\n".join(lines))


def auto_vs_onnx(run: Path, rounds: int) -> dict:
    """Through the real Predictor (decode-free: uint8 arrays in, risk scores out): auto against ONNX Runtime."""
    from chestaid.inference.predictor import Predictor

    auto, onnx = Predictor.load(run), Predictor.load(run, backend="onnx")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, auto.image_size, auto.image_size), dtype=np.uint8)
    tabular = np.full((1, 3), 0.5, np.float32)
    t = _interleaved({"auto": lambda: auto.score_arrays(image, tabular),
                      "onnx": lambda: onnx.score_arrays(image, tabular)}, (), rounds)
    return {"auto_backend": auto.backend, "auto_backend_note": auto.backend_note,
            "predictor_batch1_auto_ms": round(t["auto"] * 1000, 1),
            "predictor_batch1_onnx_ms": round(t["onnx"] * 1000, 1),
            "auto_vs_onnx_batch1": round(t["auto"] / t["onnx"], 3)}


def gradcam_precisions(run: Path, rounds: int) -> dict:
    """Grad-CAM (the predictor's torch model) in fp32 and under bf16 autocast: time and how far the maps move."""
    from chestaid.explain.gradcam import BF16_MAP_TOLERANCE, CamExplainer
    from chestaid.inference.predictor import Predictor

    predictor = Predictor.load(run, backend="torch")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (4, predictor.image_size, predictor.image_size), dtype=np.uint8)
    tabular = np.full((4, 3), 0.5, np.float32)
    findings = [0, 1, 2, 3]
    explainers = {p: CamExplainer(predictor, precision=p) for p in ("fp32", "bf16")}
    t = _interleaved({p: (lambda e=e: e.maps(images[:1], tabular[:1], [0])) for p, e in explainers.items()}, (),
                     rounds)
    maps = {p: e.maps(images, tabular, findings) for p, e in explainers.items()}
    diff = np.abs(maps["fp32"] - maps["bf16"])
    same = [np.unravel_index(np.argmax(a), a.shape) == np.unravel_index(np.argmax(b), b.shape)
            for a, b in zip(maps["fp32"], maps["bf16"])]
    return {"gradcam_batch1_fp32_ms": round(t["fp32"] * 1000, 1), "gradcam_batch1_bf16_ms": round(t["bf16"] * 1000, 1),
            "gradcam_bf16_vs_fp32": round(t["bf16"] / t["fp32"], 2),
            "gradcam_bf16_max_map_difference": round(float(diff.max()), 4),
            "gradcam_bf16_argmax_identical": f"{sum(same)}/{len(same)}",
            "gradcam_bf16_tolerance": BF16_MAP_TOLERANCE,
            "gradcam_maps_nonzero": bool(maps["fp32"].max() > 0),
            **gradcam_auto(predictor, images, tabular, findings)}


def gradcam_auto(predictor, images: np.ndarray, tabular: np.ndarray, findings: list[int]) -> dict:
    """What `precision="auto"` resolves to here and, where it measures, what it measured and kept."""
    from chestaid.explain.gradcam import CamExplainer

    explainer = CamExplainer(predictor)
    resolved = explainer.precision
    explainer.maps(images[:1], tabular[:1], findings[:1])
    return {"gradcam_auto_resolves_to": resolved, "gradcam_auto_precision_here": explainer.precision,
            "gradcam_auto_measured_ms": explainer.measured}


def predict_workers(run: Path, files: int, tmp: Path, batch: int = 16) -> dict:
    """`predict` images/s over `files` 1024 px PNGs: decoding in this process vs in 1 and 2 worker processes."""
    from chestaid.data.phantoms.synthetic import synth_nih
    from chestaid.workflows.predict import predict_worklist

    root = synth_nih(tmp / "png1024", n=files, size=1024, seed=0)
    out, tables = {}, {}
    predict_worklist(run, [root], tmp / "warm.csv", batch_size=batch, decode_workers=0)  # compile, page cache
    for workers in (0, 1, 2):
        start = time.perf_counter()
        worklist = predict_worklist(run, [root], tmp / f"w{workers}.csv", batch_size=batch, decode_workers=workers)
        out[workers] = (worklist.scored + len(worklist.refused)) / (time.perf_counter() - start)
        tables[workers] = (tmp / f"w{workers}.csv").read_text()
    return {"predict_files": files, "predict_batch": batch,
            "predict_1024px_png_in_process_images_per_s": round(out[0], 1),
            "predict_1024px_png_1_worker_images_per_s": round(out[1], 1),
            "predict_1024px_png_2_workers_images_per_s": round(out[2], 1),
            "predict_2_workers_vs_in_process": round(out[2] / out[0], 2),
            "predict_worklists_identical": tables[0] == tables[1] == tables[2]}


def synthetic_run(tmp: Path, size: int) -> Path:
    """A run with a random-weight NIH model on a synthetic 256 px cache, its input gate fitted, exported."""
    from chestaid.core.config import RunConfig, save_config
    from chestaid.data.cache import Cache, prepare
    from chestaid.data.phantoms.synthetic import synth_nih
    from chestaid.workflows.export import export_backends
    from chestaid.inference.gate import DistanceGate
    from chestaid.inference.onnx_backend import export_onnx
    from chestaid.inference.predictor import Predictor
    from chestaid.models.weights import save_weights

    cache_dir = tmp / "cache"
    prepare(synth_nih(tmp / "nih", n=400, size=256, seed=1), cache_dir, size=256)
    cache = Cache.open(cache_dir)
    run = tmp / "run"
    cfg = RunConfig.model_validate({"data": {"image_size": size, "cache_size": 256, "path": str(cache_dir)},
                                    "task": cache.task.model_dump()})
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    save_weights(ChestNet(num_outputs=len(cache.task.labels)).eval(), run / "model.safetensors", cache.task.name)
    predictor = Predictor.load(run, backend="torch")
    train, val = (predictor.cache_outputs(cache, split, limit=120)[1] for split in ("train", "val"))
    DistanceGate.fit(train, val).save(run / "gate.safetensors")
    export_onnx(run)
    export_backends(run)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, help="a trained run (exported: chestaid export RUN); default: synthetic")
    parser.add_argument("--size", type=int, default=224, help="input size of the synthetic run")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--files", type=int, default=500, help="1024 px PNGs for the predict figures (0: skip)")
    parser.add_argument("--out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
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
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or synthetic_run(Path(tmp), args.size)
        results.update(run=str(args.run) if args.run else "synthetic: random weights, synthetic cache (400 images)")
        if args.run:  # the run's own input size, not --size
            from chestaid.core.config import load_config
            results["size"] = load_config(args.run / "config.yaml").data.image_size
        table = backend_table(run, args.rounds)
        print_table(table)
        results["table"] = table
        results.update(auto_vs_onnx(run, args.rounds))
        results.update(gradcam_precisions(run, max(3, args.rounds // 3)))
        if args.files:
            results.update(predict_workers(run, args.files, Path(tmp)))
    write_result("inference", results, args.out, echo=False)


if __name__ == "__main__":
    main()
