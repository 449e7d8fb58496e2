"""Start from chest-pretrained weights: convert a torchxrayvision DenseNet-121 file into our backbone.

torchxrayvision's DenseNet-121 takes one channel scaled to [-1024, 1024] (v = 2048·g − 1024 for a grey value g
in [0, 1]); ours takes three ImageNet-normalised channels x_c = (g − mean_c) / std_c. The first convolution is
expanded from 1 to 3 input channels with per-channel factors α_c chosen so that Σ_c α_c·x_c = v exactly, for
every pixel and for the zero padding too (both inputs pad with the value that means "zero" to their network).
Everything after the first convolution is copied key for key, so the backbone's features equal theirs.

torchxrayvision publishes its weights as pickled modules. Unpickling runs code from the file: it is done only
when asked (`trust_pickle=True`, `--trust-pickle`), for files from a source you trust. State dicts (.pt with
tensors only) and .safetensors files need no such trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save
from torchvision.models import densenet121

from chestaid.data.augment import IMAGENET_MEAN, IMAGENET_STD
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write, sha256_of

XRV_SCALE, XRV_OFFSET = 2048.0, -1024.0  # v = XRV_SCALE·g + XRV_OFFSET (torchxrayvision.datasets.normalize)


def channel_factors() -> np.ndarray:
    """α [3] with Σ α_c·(g − mean_c)/std_c = 2048·g − 1024 for every g: the minimum-norm solution in β = α/std
    of Σ β = 2048, Σ β·mean = 1024 (two equations, three unknowns; exact, as the means are not all equal)."""
    mean, std = np.array(IMAGENET_MEAN, np.float64), np.array(IMAGENET_STD, np.float64)
    system = np.stack([np.ones(3), mean])
    beta = np.linalg.lstsq(system, np.array([XRV_SCALE, -XRV_OFFSET]), rcond=None)[0]
    return beta * std


NAME_KEYS = ("labels", "pathologies", "targets", "classes", "class_names")  # where files keep their output names


def read_weights(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """(the tensors, the output names the file states or None) of a weights file: a pickled module (needs
    trust_pickle; its own `pathologies`/`targets`, not its class's), a checkpoint or state dict (a `labels`,
    `classes`... list beside the tensors), or safetensors (a comma-separated `labels` in its metadata)."""
    path = Path(path)
    if not path.is_file():
        raise ChestaidError(f"{path}: file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                names = (f.metadata() or {}).get("labels")
                return {k: f.get_tensor(k) for k in f.keys()}, names.split(",") if names else None
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if not trust_pickle:
                raise ChestaidError(f"{path}: holds a pickled model; unpickling runs code from the file. If you "
                                    "trust its source (e.g. torchxrayvision's own downloads), pass --trust-pickle"
                                    ) from exc
            loaded = torch.load(path, map_location="cpu", weights_only=False)
    except ChestaidError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is "cannot be read", one line
        raise ChestaidError(f"{path}: cannot be read as a weights file ({type(e).__name__}: {e})") from e
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), torch.nn.Module):
        loaded = {**loaded, **{k: v for k, v in vars(loaded["model"]).items() if k in NAME_KEYS}}
        loaded["state_dict"] = loaded.pop("model").state_dict()  # a checkpoint holding the whole model
    holder = vars(loaded) if isinstance(loaded, torch.nn.Module) else loaded
    state = loaded.state_dict() if isinstance(loaded, torch.nn.Module) else loaded
    if not isinstance(state, dict):
        raise ChestaidError(f"{path}: holds a {type(state).__name__}, not a model or a state dict")
    names = next((list(holder[k]) for k in NAME_KEYS if isinstance(holder.get(k), (list, tuple))
                  and all(isinstance(n, str) for n in holder[k])), None)
    state = state.get("state_dict", state.get("model_state_dict", state))
    if not isinstance(state, dict):
        raise ChestaidError(f"{path}: its state_dict is a {type(state).__name__}, not tensors by name")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, names


def read_xrv_state(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a torchxrayvision DenseNet file: a pickled module (needs trust_pickle), a state dict, or
    safetensors."""
    return {k.removeprefix("module."): v for k, v in read_weights(path, trust_pickle)[0].items()}


def convert_xrv(state: dict[str, torch.Tensor], where: str = "weights") -> dict[str, torch.Tensor]:
    """torchxrayvision DenseNet-121 tensors → our backbone's `features.*` (first convolution folded)."""
    features = {k: v.float() for k, v in state.items() if k.startswith("features.")}
    conv0 = features.get("features.conv0.weight")
    if conv0 is None or tuple(conv0.shape) != (64, 1, 7, 7):
        shape = None if conv0 is None else tuple(conv0.shape)
        raise ChestaidError(f"{where}: not a torchxrayvision DenseNet-121 (first convolution {shape}, expected "
                            "(64, 1, 7, 7)); only the DenseNet-121 models (densenet121-res224-*) convert")
    alpha = torch.from_numpy(channel_factors()).to(torch.float64)
    features["features.conv0.weight"] = (conv0.double() * alpha.view(1, 3, 1, 1)).float()
    reference = densenet121(weights=None).features.state_dict()
    expected = {f"features.{k}": v.shape for k, v in reference.items()}
    missing = sorted(set(expected) - set(features))
    extra = sorted(set(features) - set(expected))
    wrong = sorted(k for k in set(expected) & set(features) if features[k].shape != expected[k])
    if missing or extra or wrong:
        example = (missing or extra or wrong)[0]
        raise ChestaidError(f"{where}: does not match DenseNet-121 ({len(missing)} missing, {len(extra)} unexpected, "
                            f"{len(wrong)} mis-shaped tensors; e.g. {example})")
    return {k: v.contiguous() for k, v in features.items()}


def _through_torchxrayvision(name: str) -> dict[str, torch.Tensor] | None:
    """The tensors of a torchxrayvision weights name (e.g. densenet121-res224-all), loaded by torchxrayvision
    itself (it downloads and unpickles its own files); None when it is not installed or the name is unknown."""
    try:
        import torchxrayvision as xrv
    except ImportError:
        return None
    if name not in xrv.models.model_urls:
        return None
    return xrv.models.DenseNet(weights=name).state_dict()


def import_xrv(src: str | Path, out: str | Path, trust_pickle: bool = False) -> Path:
    """Convert `src` (a file, or with torchxrayvision installed a weights name such as densenet121-res224-all)
    and write our backbone weights to `out` (.safetensors) for `model.weights: OUT`."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ChestaidError(f"{out}: the output must be a .safetensors file")
    by_name = None if Path(src).exists() else _through_torchxrayvision(str(src))
    state = by_name if by_name is not None else read_xrv_state(src, trust_pickle)
    features = convert_xrv(state, str(src))
    origin = f"torchxrayvision weights {src}" if by_name is not None else f"sha256 {sha256_of(src)}"
    data = save(features, metadata={"format": "chestaid-backbone", "converted_from": "torchxrayvision DenseNet-121",
                                    "source": origin, "input_scaling": "folded into features.conv0"})
    atomic_write(out, lambda f: f.write(data))
    return out
