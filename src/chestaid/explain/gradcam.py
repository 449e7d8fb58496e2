"""Grad-CAM per finding through pytorch-grad-cam (SPEC B9, C2), for both the plain and the FPN model.

Maps come back in the coordinates of the preprocessed image (the cache-size square the model saw before
its centre crop), normalised to [0, 1] per image: a qualitative explanation of where the network looked.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.nn import functional as F

from chestaid.data.augment import eval_transform
from chestaid.errors import ChestaidError


def default_target_layers(model: nn.Module) -> list[str]:
    """The FPN model: the backbone's stride-4 features (the conv of the first transition), chosen on the val
    split's synthetic boxes, where it pointed better than stride 8 (c3, P3), P4, P5, their average or the
    backbone's last features (docs/localisation.md); the plain model: the last DenseNet features (norm5, the
    last convolutional block's output, as seed 003 did)."""
    if getattr(model, "use_fpn", False):
        return ["backbone.features.transition1.conv"]
    return ["backbone.features.norm5"]


class _ImageOnly(nn.Module):
    """pytorch-grad-cam calls model(x); ours also takes the patient vector."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.tabular: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.tabular)


class CamExplainer:
    """Grad-CAM maps for a Predictor's model: `maps(images, tabular, finding_indices)`."""

    def __init__(self, predictor, target_layers: list[str] | None = None) -> None:
        self.predictor = predictor
        model = predictor.model
        names = target_layers or default_target_layers(model)
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ChestaidError(f"unknown target layer(s) {missing}; e.g. {default_target_layers(model)}")
        self.layers = names
        self.wrapper = _ImageOnly(model)
        self.cam = GradCAM(model=self.wrapper, target_layers=[modules[n] for n in names])

    def maps(self, images: np.ndarray, tabular: np.ndarray, findings: list[int]) -> np.ndarray:
        """uint8 images [B,S,S], patient vectors [B,3], one finding index per image → maps [B,S,S] in [0,1]."""
        cfg = self.predictor.cfg
        batch = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(self.predictor.device)
        x = eval_transform(batch, cfg.data.image_size, cfg.data.augment.crop).requires_grad_(True)  # frozen blocks too
        self.wrapper.tabular = torch.from_numpy(tabular).to(self.predictor.device) if cfg.model.tabular else None
        with torch.enable_grad():
            grey = self.cam(input_tensor=x, targets=[ClassifierOutputTarget(int(f)) for f in findings])
        return np.stack([uncrop(m, images.shape[-1], cfg.data.augment.crop) for m in grey])


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
