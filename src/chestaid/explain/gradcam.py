"""Grad-CAM per finding through pytorch-grad-cam (SPEC B9, C2), for both the plain and the FPN model.

Maps come back in the coordinates of the preprocessed image (the cache-size square the model saw before
its centre crop), normalised to [0, 1] per image: a qualitative explanation of where the network looked.
`precision="auto"` is chosen by measurement: on a GPU with bf16, bf16 autocast; on a CPU with bf16 instructions
(AVX512-BF16 or AMX) the first `maps` call times the map in fp32 and in bf16 side by side on its own images and
keeps bf16 only when it is `MIN_SPEEDUP` times faster (on an AMX CPU it was 1.12x *slower* at 96 px:
docs/speed.md); fp32 on every other CPU. A bf16 map differs from the fp32 one by at most BF16_MAP_TOLERANCE with
its peak in the same place (identical at 224 px; within one pixel at 64 px with random weights:
tests/test_backends.py).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam import EigenGradCAM, GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.nn import functional as F

from chestaid.data.augment import eval_transform
from chestaid.core.errors import ChestaidError


METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM,
           "gradcam-elementwise": GradCAMElementWise, "xgradcam": XGradCAM, "eigengradcam": EigenGradCAM}
PRECISIONS = ("auto", "fp32", "bf16")
BF16_MAP_TOLERANCE = 0.25  # max |bf16 - fp32| on [0, 1] maps (0.15 measured at 64 px, random weights)
MIN_SPEEDUP = 1.2  # bf16 must beat fp32 by this much to be kept: below it, a shared machine's noise decides
log = logging.getLogger(__name__)


def resolve_cam_precision(precision: str, device: torch.device) -> str:
    """"bf16" on a CUDA GPU with bf16, "measure" on a CPU with bf16 instructions (the first maps call decides),
    else "fp32"; an explicit "fp32"/"bf16" is kept."""
    if precision not in PRECISIONS:
        raise ChestaidError(f"unknown Grad-CAM precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from chestaid.core.machine import has

    return "measure" if has("bf16") else "fp32"


def default_target_layers(model: nn.Module, image_size: int) -> list[str]:
    """The backbone's own choice (chestaid.models.backbone: BackboneSpec.cam_layers) for a binary or a multi-label
    model at this input size; for DenseNet-121, two transition convolutions (NIH) or norm5 (binary)."""
    return model.spec.cam_layers(image_size, model.head[-1].out_features == 1)


class _ImageOnly(nn.Module):
    """pytorch-grad-cam calls model(x); ours also takes the patient vector, which travels with this one call."""

    def __init__(self, model: nn.Module, tabular: torch.Tensor | None) -> None:
        super().__init__()
        self.model, self.tabular = model, tabular

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.tabular)


def _gradient_starts_here(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """A forward hook: the first target layer's output becomes the leaf of the autograd graph.

    The Predictor's weights take no gradients, so the backward pass runs only from the logits down to the
    target layer(s) and computes only what Grad-CAM needs (activation gradients), whatever blocks are frozen."""
    return output if output.requires_grad else output.requires_grad_(True)


def _fp32_gradient_starts_here(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """As `_gradient_starts_here`, under bf16 autocast: the target layer's output is handed on (and to
    pytorch-grad-cam, which reads it with numpy) in fp32; the layers after it cast back to bf16 themselves."""
    return _gradient_starts_here(module, inputs, output.float())


class CamExplainer:
    """Grad-CAM maps for a Predictor's model: `maps(images, tabular, finding_indices)`.

    The explainer works on its own copy of the Predictor's network (made once: 38 MiB and 0.14 s for DenseNet-121 +
    FPN, benchmarks/results/explainer_concurrency.json): pytorch-grad-cam's hooks see every forward pass through their layers, so on the shared model a
    concurrent request's scoring would land in this map's activations (another patient's image). Nothing else
    runs the copy, and one map is made at a time (a lock), so scoring never waits for a map and a map never
    depends on what else runs. Hooks exist only while `maps` runs. `precision` reads "measure" until the first
    `maps` call of an "auto" explainer has decided fp32 or bf16. Get one through `Predictor.explainer()`, which
    keeps one per setting (the measurement and the copy are made once)."""

    def __init__(self, predictor, target_layers: list[str] | None = None, method: str = "gradcam",
                 precision: str = "auto") -> None:
        if method not in METHODS:
            raise ChestaidError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
        self.predictor, self.method = predictor, method
        self.precision = resolve_cam_precision(precision, predictor.device)
        model = copy.deepcopy(predictor.model)  # this explainer's own weights: see the class docstring
        default = default_target_layers(model, predictor.cfg.data.image_size)
        names = target_layers or default
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ChestaidError(f"unknown target layer(s) {missing}; e.g. {default}")
        names = [model.spec.cam_module(model, n) for n in names]  # a stage → its last block (hooks fire there)
        self.layers, self.model = names, model
        self._modules = [modules[n] for n in names]
        self._lock = threading.Lock()
        self.measured: dict[str, float] = {}  # ms per map call of each precision, when "auto" measured them

    def maps(self, images: np.ndarray, tabular: np.ndarray, findings: list[int]) -> np.ndarray:
        """uint8 images [B,S,S], patient vectors [B,3], one finding index per image → maps [B,S,S] in [0,1]."""
        cfg, device = self.predictor.cfg, self.predictor.device
        batch = torch.from_numpy(np.array(images)).unsqueeze(1).to(device)  # a copy: callers' arrays may be read-only
        x = eval_transform(batch, cfg.data.image_size, cfg.data.augment.crop)
        if cfg.train.channels_last:  # the Predictor's model is in that layout: no conversion inside the network
            x = x.contiguous(memory_format=torch.channels_last)
        tab = torch.from_numpy(np.array(tabular, np.float32)).to(device) if cfg.model.tabular else None
        targets = [ClassifierOutputTarget(int(f)) for f in findings]
        with self._lock:
            if self.precision == "measure":  # timed on two of the images: the first call stays cheap
                self.precision = self._measure(x[:2], None if tab is None else tab[:2], targets[:2])
            grey = self._cam(x, tab, targets, self.precision == "bf16")
        return np.stack([uncrop(m, images.shape[-1], cfg.data.augment.crop) for m in grey])

    def _cam(self, x: torch.Tensor, tab: torch.Tensor | None, targets: list, bf16: bool) -> np.ndarray:
        device = self.predictor.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        hook = _fp32_gradient_starts_here if bf16 else _gradient_starts_here
        with _hooks(self._modules, hook), torch.enable_grad(), autocast:
            with METHODS[self.method](model=_ImageOnly(self.model, tab), target_layers=self._modules) as cam:
                return cam(input_tensor=x, targets=targets)

    def _measure(self, x: torch.Tensor, tab: torch.Tensor | None, targets: list) -> str:
        """Time this call's maps in fp32 and bf16 (a warm-up each, then two rounds interleaved, best of each)."""
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for round_ in range(3):
            for name in times:
                start = time.perf_counter()
                try:
                    self._cam(x, tab, targets, name == "bf16")
                except Exception as e:  # noqa: BLE001 - a bf16 kernel this build lacks: fp32 still works
                    if name == "fp32":
                        raise
                    log.warning("Grad-CAM precision auto: fp32 (bf16 failed here: %s)", type(e).__name__)
                    return "fp32"
                if round_:
                    times[name].append(time.perf_counter() - start)
        self.measured = {name: round(min(t) * 1000, 1) for name, t in times.items()}
        speedup = self.measured["fp32"] / max(self.measured["bf16"], 1e-6)
        choice = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
        log.info("Grad-CAM precision auto: %s (measured: bf16 %.2fx fp32 on this CPU)", choice, speedup)
        return choice


@contextmanager
def _hooks(modules: list[nn.Module], hook) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def uncrop(cam: np.ndarray, size: int, crop: float) -> np.ndarray:
    """Place a map of the centre crop back into the size×size image it came from (zeros outside the crop)."""
    side = int(round(size * crop))
    top = (size - side) // 2
    resized = F.interpolate(torch.from_numpy(np.asarray(cam, np.float32))[None, None], size=(side, side),
                            mode="bilinear", align_corners=False)[0, 0].numpy()
    out = np.zeros((size, size), dtype=np.float32)
    out[top:top + side, top:top + side] = resized
    return out


def overlay(grey: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8: the grey image with the heat map blended in at `alpha` (0 = image only, 1 = map only)."""
    import matplotlib

    if cam.shape != grey.shape:
        cam = F.interpolate(torch.from_numpy(cam.astype(np.float32))[None, None], size=grey.shape,
                            mode="bilinear", align_corners=False)[0, 0].numpy()
    colour = matplotlib.colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    base = np.repeat(grey[..., None].astype(np.float32) / 255.0, 3, axis=2)
    return np.clip(((1 - alpha) * base + alpha * colour) * 255, 0, 255).astype(np.uint8)
