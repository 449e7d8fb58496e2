"""The backbone seam: one `BackboneSpec` per network (`model.backbone`), holding everything the rest of chestaid
needs to know about it — how to build it (weights: ImageNet, none, or a local file), the nodes the FPN reads and
their channels, the block groups `freeze_blocks` freezes, the width of the pooled features the input gate
measures, and the Grad-CAM target layers. DenseNet-121 is the default (every seed config); EfficientNet-B0
(0.39 GFLOPs at 224 px against DenseNet-121's 2.9), ResNet-18 and ResNet-50 are the others.

EfficientNet-B0 from random weights needs many steps before its BatchNorm statistics carry the signal through:
at initialisation its pooled features are ~1e-15 in eval mode, and after a 10-step run still constant to 1e-8
(measured at 64 px), so tiny test runs use ResNet-18; start it from ImageNet weights or train it for real."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models, ops

from chestaid.core.errors import ChestaidError


@dataclass(frozen=True)
class BackboneSpec:
    """What chestaid needs to know about one torchvision network.

    levels        the FPN's three input nodes (strides 8, 16, 32) → c3, c4, c5, and their channels
    c5_relu       whether c5 gets a ReLU (DenseNet's norm5 is the last BatchNorm before torchvision's own ReLU)
    block_groups  `model.freeze_blocks = k` freezes the first k groups (module paths inside the network)
    cam_layers    (image size, binary?) → Grad-CAM target layers, as module names inside the ChestNet
    """

    name: str
    title: str  # as people write it: "DenseNet-121"
    constructor: Callable[..., nn.Module]
    imagenet: str  # the torchvision weights enum member, e.g. DenseNet121_Weights.IMAGENET1K_V1
    levels: dict[str, str]
    channels: tuple[int, int, int]
    c5_relu: bool
    block_groups: tuple[tuple[str, ...], ...]
    cam_layers: Callable[[int, bool], list[str]]
    leaf_modules: tuple[type, ...] = ()  # blocks the feature extractor keeps whole, so hooks on them fire

    def cam_module(self, model: nn.Module, name: str) -> str:
        """A Grad-CAM target as a module the traced network really calls (hooks fire only there): a stage whose
        blocks the feature extractor calls one by one becomes its last block, whose output is the stage's."""
        if not name.startswith("backbone."):
            return name
        inner = name.removeprefix("backbone.")
        called = [node.target for node in model.backbone.graph.nodes if node.op == "call_module"]
        inside = [target for target in called if target.startswith(inner + ".")]
        return name if inner in called or not inside else f"backbone.{inside[-1]}"

    @property
    def gate_features(self) -> int:
        """The width of the pooled final features the input gate measures (c5's channels)."""
        return self.channels[-1]

    def build(self, weights: str) -> nn.Module:
        """The network with `weights` = 'imagenet', 'none', or a path to a state dict (its classifier ignored)."""
        if weights == "none":
            return self.constructor(weights=None)
        if weights == "imagenet":
            enum_name, member = self.imagenet.split(".")
            try:
                return self.constructor(weights=getattr(getattr(models, enum_name), member))
            except Exception as e:  # URLError, hash mismatch, no disk: all mean "not available here"
                raise ChestaidError(
                    f"ImageNet weights for {self.title} are not available ({type(e).__name__}: {e}); put torchvision's "
                    f"file in $TORCH_HOME/hub/checkpoints, or set model.weights to a local file or to 'none'") from e
        net = self.constructor(weights=None)
        path = Path(weights)
        load_backbone_file(net, path / "model.safetensors" if path.is_dir() else path, self.title)  # a run: its weights
        return net


MIN_MAP_SIDE = 8  # Grad-CAM maps smaller than 8×8 say little about where the network looked
_DENSENET_TRANSITIONS = ("backbone.features.transition1.conv", "backbone.features.transition2.conv",
                         "backbone.features.transition3.conv")  # maps of side size/4, size/8, size/16


def _densenet_cam_layers(image_size: int, binary: bool) -> list[str]:
    """Multi-label (NIH) models: the two deepest transition convolutions whose maps are still at least 8×8 at
    this input size (64-96 px: transition1+2; 128 px and up: transition2+3), Grad-CAM averaged over both. Chosen
    on phantom family A's validation boxes at 64 and 128 px over single layers, other pairs, norm5, P3,
    Grad-CAM++, HiResCAM and LayerCAM; confirmed on family B (docs/localisation.md). Binary models: norm5, as
    seed 003 did."""
    if binary:
        return ["backbone.features.norm5"]
    usable = [n for i, n in enumerate(_DENSENET_TRANSITIONS) if image_size // 2 ** (i + 2) >= MIN_MAP_SIDE]
    return list(_DENSENET_TRANSITIONS[:2]) if len(usable) < 2 else usable[-2:]


def _efficientnet_cam_layers(image_size: int, binary: bool) -> list[str]:
    """Binary: the last features (stride 32). Multi-label: the two deepest stages whose maps are at least 8×8
    among stride 8 (features.3), 16 (features.5) and 32 (features.7), as for DenseNet (not tuned on boxes)."""
    if binary:
        return ["backbone.features.8"]
    stages = (("backbone.features.3", 8), ("backbone.features.5", 16), ("backbone.features.7", 32))
    usable = [name for name, stride in stages if image_size // stride >= MIN_MAP_SIDE]
    return [s for s, _ in stages[:2]] if len(usable) < 2 else usable[-2:]


def _resnet_cam_layers(image_size: int, binary: bool) -> list[str]:
    """Binary: layer4 (stride 32). Multi-label: the two deepest of layer1-3 (strides 4, 8, 16) whose maps are at
    least 8×8, as DenseNet's transitions (not tuned on boxes)."""
    if binary:
        return ["backbone.layer4"]
    stages = (("backbone.layer1", 4), ("backbone.layer2", 8), ("backbone.layer3", 16))
    usable = [name for name, stride in stages if image_size // stride >= MIN_MAP_SIDE]
    return [s for s, _ in stages[:2]] if len(usable) < 2 else usable[-2:]


BACKBONES: dict[str, BackboneSpec] = {
    "densenet121": BackboneSpec(
        name="densenet121", title="DenseNet-121", constructor=models.densenet121,
        imagenet="DenseNet121_Weights.IMAGENET1K_V1",
        # c3: after denseblock2 (512 ch, stride 8); c4: after denseblock3 (1024, /16); c5: final (1024, /32)
        levels={"features.denseblock2": "c3", "features.denseblock3": "c4", "features.norm5": "c5"},
        channels=(512, 1024, 1024), c5_relu=True,
        block_groups=(("features.conv0", "features.norm0", "features.relu0", "features.pool0"),
                      ("features.denseblock1", "features.transition1"),
                      ("features.denseblock2", "features.transition2"),
                      ("features.denseblock3", "features.transition3"),
                      ("features.denseblock4", "features.norm5")),
        cam_layers=_densenet_cam_layers),
    "efficientnet_b0": BackboneSpec(
        name="efficientnet_b0", title="EfficientNet-B0", constructor=models.efficientnet_b0,
        imagenet="EfficientNet_B0_Weights.IMAGENET1K_V1",
        # c3: stage 3 (40 ch, stride 8); c4: stage 5 (112, /16); c5: the final 1×1 convolution (1280, /32)
        levels={"features.3": "c3", "features.5": "c4", "features.8": "c5"},
        channels=(40, 112, 1280), c5_relu=False,  # features.8 ends in its own SiLU
        block_groups=(("features.0", "features.1"), ("features.2",), ("features.3",), ("features.4", "features.5"),
                      ("features.6", "features.7", "features.8")),
        cam_layers=_efficientnet_cam_layers,
        leaf_modules=(models.efficientnet.MBConv, ops.Conv2dNormActivation)),
    "resnet50": BackboneSpec(
        name="resnet50", title="ResNet-50", constructor=models.resnet50, imagenet="ResNet50_Weights.IMAGENET1K_V2",
        levels={"layer2": "c3", "layer3": "c4", "layer4": "c5"}, channels=(512, 1024, 2048), c5_relu=False,
        block_groups=(("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
        cam_layers=_resnet_cam_layers, leaf_modules=(models.resnet.BasicBlock, models.resnet.Bottleneck)),
    "resnet18": BackboneSpec(
        name="resnet18", title="ResNet-18", constructor=models.resnet18, imagenet="ResNet18_Weights.IMAGENET1K_V1",
        # c3: layer2 (128 ch, stride 8); c4: layer3 (256, /16); c5: layer4 (512, /32), already after its ReLU
        levels={"layer2": "c3", "layer3": "c4", "layer4": "c5"}, channels=(128, 256, 512), c5_relu=False,
        block_groups=(("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
        cam_layers=_resnet_cam_layers, leaf_modules=(models.resnet.BasicBlock, models.resnet.Bottleneck)),
}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ChestaidError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def load_densenet(weights: str) -> nn.Module:
    """torchvision densenet121 with `weights` = 'imagenet', 'none', or a path to a state dict."""
    return BACKBONES["densenet121"].build(weights)


# Old torchvision checkpoints name layers 'norm.1'; today they are 'norm1' (torchvision does the same fix).
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def modern_key(key: str) -> str:
    """A tensor name as today's torchvision spells it (old DenseNet checkpoints say 'norm.1' for 'norm1')."""
    return _OLD_KEY.sub(r"\1\2", key)


def load_backbone_file(net: nn.Module, path: Path, title: str = "DenseNet-121") -> None:
    """Load a network's weights from a .pth/.pt or .safetensors state dict (its classifier ignored; every other
    tensor of the network must be there, with its shape)."""
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
    state = {modern_key(k.removeprefix("module.").removeprefix("backbone.")): v for k, v in state.items()}
    expected = net.state_dict()
    usable = {k: v for k, v in state.items() if k in expected and not k.startswith(CLASSIFIERS)}
    if not usable:
        raise ChestaidError(f"{path}: holds no {title} weights (none of its tensors is named as {title}'s, e.g. "
                            f"{next(iter(expected))})")
    wrong = [k for k, v in usable.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise ChestaidError(f"{path}: not {title} weights ({wrong[0]} has shape {tuple(usable[wrong[0]].shape)}, "
                            f"{title} needs {tuple(expected[wrong[0]].shape)})")
    net.load_state_dict(usable, strict=False)
    missing = [k for k in expected if k not in usable and not k.startswith(CLASSIFIERS)]
    if missing:
        raise ChestaidError(f"{path}: {title} weights missing {len(missing)} tensors (e.g. {missing[0]})")


CLASSIFIERS = ("classifier.", "fc.")  # torchvision's heads: chestaid puts its own head on the features


def freeze_blocks(network: nn.Module, count: int, spec: BackboneSpec | None = None) -> list[nn.Module]:
    """Freeze the first `count` block groups of `network` (a torchvision model, or the feature extractor made
    from one); returns the frozen modules (kept in eval mode by the model)."""
    spec = spec or BACKBONES["densenet121"]
    if not 0 <= count <= len(spec.block_groups):
        raise ValueError(f"freeze_blocks must be 0..{len(spec.block_groups)}, got {count}")
    frozen = []
    for group in spec.block_groups[:count]:
        for name in group:
            module = network.get_submodule(name)
            module.requires_grad_(False)
            frozen.append(module)
    return frozen
