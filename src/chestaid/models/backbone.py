"""The DenseNet-121 backbone: weights (ImageNet, none, or a local file) and the frozen-blocks switch."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models import DenseNet121_Weights, densenet121

from chestaid.core.errors import ChestaidError

# DenseNet-121's features in order; `freeze_blocks = k` freezes the first k groups (B3 partial fine-tuning).
BLOCK_GROUPS = (
    ("conv0", "norm0", "relu0", "pool0"),
    ("denseblock1", "transition1"),
    ("denseblock2", "transition2"),
    ("denseblock3", "transition3"),
    ("denseblock4", "norm5"),
)
# Old torchvision checkpoints name layers 'norm.1'; today they are 'norm1' (torchvision does the same fix).
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def load_densenet(weights: str) -> nn.Module:
    """torchvision densenet121 with `weights` = 'imagenet', 'none', or a path to a state dict."""
    if weights == "none":
        return densenet121(weights=None)
    if weights == "imagenet":
        try:
            return densenet121(weights=DenseNet121_Weights.IMAGENET1K_V1)
        except Exception as e:  # URLError, hash mismatch, no disk: all mean "not available here"
            raise ChestaidError(
                f"ImageNet weights for DenseNet-121 are not available ({type(e).__name__}: {e}); put "
                f"densenet121-a639ec97.pth in $TORCH_HOME/hub/checkpoints, or set model.weights to a local "
                f"file or to 'none'") from e
    net = densenet121(weights=None)
    load_backbone_file(net, Path(weights))
    return net


def load_backbone_file(net: nn.Module, path: Path) -> None:
    """Load DenseNet-121 weights from a .pth/.pt or .safetensors state dict (the classifier is ignored)."""
    if not path.is_file():
        raise ChestaidError(f"{path}: weights file not found (model.weights takes 'imagenet', 'none' or a path)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ChestaidError(f"{path}: cannot be read as a weights file ({e})") from e
    state = state.get("state_dict", state)
    state = {_OLD_KEY.sub(r"\1\2", k.removeprefix("module.").removeprefix("backbone.")): v for k, v in state.items()}
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise ChestaidError(f"{path}: holds no DenseNet 'features.*' weights")
    missing, _ = net.load_state_dict(features, strict=False)
    missing = [k for k in missing if k.startswith("features.")]
    if missing:
        raise ChestaidError(f"{path}: DenseNet-121 weights missing {len(missing)} tensors (e.g. {missing[0]})")


def freeze_blocks(features: nn.Module, count: int) -> list[nn.Module]:
    """Freeze the first `count` block groups; returns the frozen modules (kept in eval mode by the model)."""
    if not 0 <= count <= len(BLOCK_GROUPS):
        raise ValueError(f"freeze_blocks must be 0..{len(BLOCK_GROUPS)}, got {count}")
    frozen = []
    for group in BLOCK_GROUPS[:count]:
        for name in group:
            module = getattr(features, name)
            module.requires_grad_(False)
            frozen.append(module)
    return frozen
