"""Batch transforms: shapes, normalisation, and that the random path reduces to the eval path."""

from __future__ import annotations

import torch

from chestaid.core.config import AugmentSettings
from chestaid.data.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform


def _batch(n=4, size=80):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)


def test_eval_transform_shape_and_normalisation():
    batch = torch.full((2, 1, 64, 64), 255, dtype=torch.uint8)
    out = eval_transform(batch, 48)
    assert out.shape == (2, 3, 48, 48)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(out[0, :, 10, 10], expected)


def test_train_transform_without_randomness_equals_eval():
    batch = _batch(size=64)
    still = AugmentSettings(crop=1.0, rotate_deg=0.0, translate=0.0, blur_p=0.0)
    torch.testing.assert_close(train_transform(batch, 64, still), eval_transform(batch, 64, crop=1.0),
                               atol=1e-4, rtol=0)


def test_train_transform_is_random_per_image_and_seeded():
    batch = _batch(n=1).expand(4, -1, -1, -1).contiguous()
    cfg = AugmentSettings(brightness=0.1, contrast=0.1)
    out = train_transform(batch, 56, cfg, torch.Generator().manual_seed(1))
    assert out.shape == (4, 3, 56, 56)
    assert not torch.allclose(out[0], out[1])  # same image, different draws
    again = train_transform(batch, 56, cfg, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, again)


def test_large_cache_is_shrunk_with_antialiasing():
    out = train_transform(_batch(n=2, size=512), 64)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()


def test_random_blur_equals_a_gaussian_convolution():
    import torch.nn.functional as F

    from chestaid.data.augment import _random_blur

    x = torch.rand(3, 1, 20, 20)
    sigma = 0.8
    out = _random_blur(x, AugmentSettings(blur_p=1.0, blur_sigma=(sigma, sigma)), lambda lo, hi, n=3: torch.full((n,), lo))
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * sigma**2))
    kernel = (taps / taps.sum()).view(3, 1) * (taps / taps.sum()).view(1, 3)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel.view(1, 1, 3, 3))
    torch.testing.assert_close(out, expected)
