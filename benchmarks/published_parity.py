"""How far an imported torchxrayvision run's logits are from torchxrayvision's own, by image size and shape.

At the model's input size (224 px) both libraries see the same pixels and the logits agree to float rounding
(tests/test_published.py: ≤ 1e-5). At other sizes the two preparations differ in two steps, measured apart here:
- shape: torchxrayvision centre-crops the long side to a square; chestaid resizes the whole image to a square
  (`resize_square`: a non-square image is stretched, nothing is cut off);
- resampling: torchxrayvision resizes with skimage (linear, anti-aliased by a Gaussian), chestaid with Pillow's
  Lanczos (after a fast reduction) and stores uint8.
Rows: "as each library prepares" (the difference a user sees), "chestaid with torchxrayvision's crop" (what the
resampling alone leaves). A random-weights torchxrayvision DenseNet with BatchNorm statistics estimated on
images in its input range (as in the test). Writes benchmarks/results/published_parity.json with the machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchxrayvision as xrv
from PIL import Image

from common import write_result

FILE = "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"


def model_with_statistics() -> torch.nn.Module:
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    grey = (np.random.default_rng(1).random((6, 224, 224)) * 255).astype(np.float32)
    with torch.no_grad():
        model.train()(torch.from_numpy(xrv.datasets.normalize(grey, 255))[:, None])
    return model.eval()


def theirs(model: torch.nn.Module, grey: np.ndarray) -> np.ndarray:
    image = xrv.datasets.normalize(grey.astype(np.float32), 255)[None]
    image = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(image))
    with torch.no_grad():
        return model(torch.from_numpy(image)[None]).numpy()[0]


def centre_crop(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape
    side = min(h, w)
    top, left = h // 2 - side // 2, w // 2 - side // 2
    return grey[top:top + side, left:left + side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import chestaid

    model = model_with_statistics()
    shapes = {"224x224": (224, 224), "512x512": (512, 512), "1024x1024 (NIH)": (1024, 1024),
              "600x480 (landscape)": (480, 600), "2048x2500 (portrait CR)": (2500, 2048)}
    result: dict = {"images_per_shape": args.images, "max_abs_logit_difference": {}}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / FILE
        torch.save(model, source)
        run = chestaid.import_model(source, Path(tmp) / "run", trust_pickle=True)
        predictor = chestaid.load(run, backend="torch")
        rows = [model.targets.index(n) for n in predictor.task.labels]
        rng = np.random.default_rng(2)
        for name, (h, w) in shapes.items():
            seen, cropped, reference = [], [], []
            for k in range(args.images):
                yy, xx = np.mgrid[:h, :w]
                grey = 110 + 60 * np.sin(xx / (w / 20 + k)) * np.cos(yy / (h / 17)) + rng.normal(0, 25, (h, w))
                grey = np.clip(grey, 0, 255).astype(np.uint8)
                path = Path(tmp) / f"{k}.png"
                Image.fromarray(grey).save(path)
                Image.fromarray(centre_crop(grey)).save(Path(tmp) / f"{k}c.png")
                seen.append(path)
                cropped.append(Path(tmp) / f"{k}c.png")
                reference.append(theirs(model, grey)[rows])
            ours = np.stack([s.logits for s in predictor.score_files(seen)[0]])
            ours_cropped = np.stack([s.logits for s in predictor.score_files(cropped)[0]])
            reference = np.stack(reference)
            result["max_abs_logit_difference"][name] = {
                "as_each_library_prepares": float(np.abs(ours - reference).max()),
                "chestaid_with_their_centre_crop": float(np.abs(ours_cropped - reference).max()),
                "logit_spread_across_images": float(reference.std(0).mean())}
    result["cause"] = ("at 224 px the same pixels reach both networks (difference: float rounding); other square "
                       "sizes differ by the resampling (Pillow Lanczos to uint8 vs skimage linear with Gaussian "
                       "anti-aliasing in float); non-square images also by the framing (chestaid stretches to a "
                       "square, torchxrayvision crops the long side), the larger part where the aspect is far from 1")
    write_result("published_parity", result, args.out)


if __name__ == "__main__":
    main()
