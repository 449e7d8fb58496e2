"""ChestNet: a backbone (DenseNet-121 by default: `model.backbone`, chestaid.models.backbone) → (FPN over c3, c4,
c5) → pooled image features ⊕ patient vector → logits.

SPEC A8–A11 (seed 000): FPN on, tabular on, 14 outputs. SPEC B3 (seed 003): FPN off, tabular off, 1 output,
early blocks frozen — then the model is DenseNet-121 with its classifier replaced by one logit.

Three choices beyond the seed, measured in benchmarks/recipe.py (docs/recipe.md):
- `fpn_head="with_c5"` keeps the plain model's pooled c5 beside the projected pyramid, so the pyramid adds to
  the plain DenseNet-121 instead of replacing its features (the seed's head: "seed");
- `pool="avgmax"` pools every level by its mean and its maximum (a small lesion moves a maximum, hardly a mean);
- `fpn_norm=True` puts BatchNorm after each FPN convolution: the lateral convolutions read c3 and c4, the raw
  concatenated outputs of dense blocks (no normalisation before the next transition), whose scale differs from
  the normalised c5.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork

from chestaid.models.backbone import backbone_spec, freeze_blocks


class ChestNet(nn.Module):
    """Image [B,3,H,W] (+ patient vector [B,3]) → logits [B, num_outputs]."""

    def __init__(self, num_outputs: int = 14, fpn: bool = True, tabular: bool = True, weights: str = "none",
                 freeze: int = 0, hidden: tuple[int, ...] = (128,), dropout: float = 0.3,
                 fpn_channels: int = 256, fpn_head: str = "seed", pool: str = "avg", fpn_norm: bool = False,
                 backbone: str = "densenet121") -> None:
        super().__init__()
        self.spec = spec = backbone_spec(backbone)
        channels = spec.channels
        if fpn_head not in ("seed", "with_c5") or pool not in ("avg", "avgmax"):
            raise ValueError(f"fpn_head must be seed or with_c5 and pool avg or avgmax, got {fpn_head}, {pool}")
        self.use_fpn, self.use_tabular = fpn, tabular
        self.keep_c5, self.pool = fpn and fpn_head == "with_c5", pool
        widen = 2 if pool == "avgmax" else 1
        network = spec.build(weights)
        self._frozen = freeze_blocks(network, freeze, spec)
        c5_node = next(node for node, level in spec.levels.items() if level == "c5")
        nodes = spec.levels if fpn else {c5_node: "c5"}
        leaves = {"tracer_kwargs": {"leaf_modules": list(spec.leaf_modules)}} if spec.leaf_modules else {}
        self.backbone = create_feature_extractor(network, return_nodes=nodes, **leaves)
        if fpn:
            self.fpn = FeaturePyramidNetwork(list(channels), fpn_channels,
                                             norm_layer=nn.BatchNorm2d if fpn_norm else None)
            self.project = nn.Sequential(nn.Linear(3 * fpn_channels * widen, 256), nn.ReLU(inplace=True))
            image_dim = 256 + (channels[-1] * widen if self.keep_c5 else 0)
        else:
            image_dim = channels[-1] * widen
        self.tabular = nn.Sequential(nn.Linear(3, 8), nn.ReLU(inplace=True)) if tabular else None
        layers: list[nn.Module] = []
        width = image_dim + (8 if tabular else 0)
        for size in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers += [nn.Dropout(dropout), nn.Linear(width, num_outputs)]
        self.head = nn.Sequential(*layers)

    def _backbone_and_pyramid(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict | None]:
        feats = self.backbone(image)
        if self.spec.c5_relu:
            feats["c5"] = torch.relu(feats["c5"])
        pyramid = self.fpn(OrderedDict((k, feats[k]) for k in ("c3", "c4", "c5"))) if self.use_fpn else None
        return feats, pyramid

    def levels(self, image: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The backbone levels (c3, c4, c5; c5 after the final ReLU), or P3–P5 when the FPN is on."""
        feats, pyramid = self._backbone_and_pyramid(image)
        return OrderedDict(feats) if pyramid is None else OrderedDict(zip(("p3", "p4", "p5"), pyramid.values()))

    def forward(self, image: torch.Tensor, tabular: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.embed(image)[0], tabular)

    def embed(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the pooled image features the head sees: the projected pyramid (with pooled c5 beside it when
        `fpn_head` is with_c5), or pooled c5; the average-pooled final backbone features c5, which the input gate
        measures for every model, as Wollek et al. measured CheXNet's)."""
        feats, pyramid = self._backbone_and_pyramid(image)
        c5 = _pool(feats["c5"], self.pool)
        gate = c5[:, :self.spec.gate_features]  # the mean half of avgmax
        if pyramid is None:
            return c5, gate
        projected = self.project(torch.cat([_pool(v, self.pool) for v in pyramid.values()], 1))
        return (torch.cat([projected, c5], 1) if self.keep_c5 else projected), gate

    def classify(self, features: torch.Tensor, tabular: torch.Tensor | None = None) -> torch.Tensor:
        """Image features (+ patient vector) → logits."""
        if self.tabular is not None:
            if tabular is None:
                raise ValueError("this model fuses patient data: pass tabular [B,3]")
            features = torch.cat([features, self.tabular(tabular.to(features.dtype))], 1)
        return self.head(features)

    def train(self, mode: bool = True) -> "ChestNet":
        super().train(mode)
        for module in self._frozen:  # frozen blocks keep their BatchNorm statistics
            module.eval()
        return self


def _pool(x: torch.Tensor, mode: str = "avg") -> torch.Tensor:
    mean = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
    return mean if mode == "avg" else torch.cat([mean, torch.flatten(nn.functional.adaptive_max_pool2d(x, 1), 1)], 1)


def build_model(cfg, num_outputs: int) -> ChestNet:
    """A ChestNet from a ModelConfig (config.py)."""
    return ChestNet(num_outputs=num_outputs, fpn=cfg.fpn, tabular=cfg.tabular, weights=cfg.weights,
                    freeze=cfg.freeze_blocks, hidden=tuple(cfg.hidden), dropout=cfg.dropout, fpn_head=cfg.fpn_head,
                    pool=cfg.pool, fpn_norm=cfg.fpn_norm, backbone=cfg.backbone)
