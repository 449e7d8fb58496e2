"""Batch transforms that run on the training device: uint8 grey batches in, normalised 3-channel floats out.

Train (SPEC A7/B2): random crop of `crop` of the side, resize, random rotation and translation, optional
Gaussian blur and brightness/contrast jitter, each drawn per image. Eval: centre crop, resize, normalise.
All geometry is one `grid_sample` per batch, so a GPU is not starved by per-image CPU transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from chestaid.core.config import AugmentSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_unit(batch: torch.Tensor, size: int, crop: float) -> torch.Tensor:
    """uint8 [B,1,H,W] → float [0,1]; shrink with antialiasing first when the source is much larger."""
    x = batch.float().div_(255.0)
    target = int(round(size / crop))
    if x.shape[-1] > 1.5 * target:
        x = F.interpolate(x, size=(target, target), mode="bilinear", antialias=True, align_corners=False)
    return x


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Grey [B,1,H,W] in [0,1] → ImageNet-normalised [B,3,H,W] in one fused pass."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return torch.addcmul(-mean / std, x, 1.0 / std)


def _affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """Same as F.affine_grid(theta, [B,1,size,size], align_corners=False), built with fused elementwise ops
    (F.affine_grid and a K=3 matmul are both memory-bound and several times slower on CPU)."""
    coords = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1
    xs, ys = coords.view(1, 1, size), coords.view(1, size, 1)
    t = theta.view(-1, 6, 1, 1)
    gx = torch.addcmul(torch.addcmul(t[:, 2], t[:, 0], xs), t[:, 1], ys)
    gy = torch.addcmul(torch.addcmul(t[:, 5], t[:, 3], xs), t[:, 4], ys)
    return torch.stack([gx, gy], -1)


def eval_transform(batch: torch.Tensor, size: int, crop: float = 0.9) -> torch.Tensor:
    """Centre crop `crop` of the side, resize to size×size (antialiased), ImageNet-normalise."""
    x = _to_unit(batch, size, crop)
    h, w = x.shape[-2:]
    ch, cw = int(round(h * crop)), int(round(w * crop))
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[..., top:top + ch, left:left + cw]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return _normalise(x)


def train_transform(batch: torch.Tensor, size: int, cfg: AugmentSettings = AugmentSettings(),
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop + resize + rotation + translation in one resampling, then blur and jitter, per image."""
    x = _to_unit(batch, size, cfg.crop)
    b, device = x.shape[0], x.device

    def uniform(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return torch.rand(n, generator=generator, device="cpu").mul(hi - lo).add(lo).to(device)

    angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180.0)
    shift = torch.stack([uniform(-cfg.translate, cfg.translate), uniform(-cfg.translate, cfg.translate)], 1) * 2
    centre = torch.stack([uniform(cfg.crop - 1, 1 - cfg.crop), uniform(cfg.crop - 1, 1 - cfg.crop)], 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) * cfg.crop  # crop·R(-θ)
    offset = centre - torch.bmm(rot, shift.unsqueeze(2)).squeeze(2)
    theta = torch.cat([rot, offset.unsqueeze(2)], 2)
    grid = _affine_grid(theta, size)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.blur_p > 0:
        x = _random_blur(x, cfg, uniform)
    if cfg.brightness > 0 or cfg.contrast > 0:
        bright = uniform(1 - cfg.brightness, 1 + cfg.brightness).view(b, 1, 1, 1)
        contrast = uniform(1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1)
        x = x * bright
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean).clamp_(0, 1)
    return _normalise(x)


def _random_blur(x: torch.Tensor, cfg: AugmentSettings, uniform) -> torch.Tensor:
    """3×3 Gaussian blur with σ drawn per image, applied to a random `blur_p` share of the batch.

    The kernel is separable with taps [w, 1-2w, w], so each axis is two shifted adds (reflect padding)."""
    sigma = uniform(*cfg.blur_sigma)
    chosen = torch.nonzero(uniform(0, 1) < cfg.blur_p).flatten()
    if chosen.numel() == 0:
        return x
    edge = torch.exp(-1.0 / (2 * sigma[chosen] ** 2))
    w = (edge / (1 + 2 * edge)).view(-1, 1, 1, 1).to(x.dtype)
    y = F.pad(x[chosen], (1, 1, 1, 1), mode="reflect")
    y = torch.addcmul(y[:, :, 1:-1] * (1 - 2 * w), y[:, :, :-2] + y[:, :, 2:], w)  # vertical pass
    y = torch.addcmul(y[..., 1:-1] * (1 - 2 * w), y[..., :-2] + y[..., 2:], w)  # horizontal pass
    return x.index_copy(0, chosen, y)
