"""Published chest X-ray classifiers as whole chestaid models, classifier included: torchxrayvision's files and
CheXNet-style state dicts of a torchvision network (DenseNet-121, ResNet-18/50, EfficientNet-B0).

Such a model is the network's features → (ReLU for DenseNet) → average pool → one Linear layer: exactly a
ChestNet with the FPN and patient fusion off and no hidden layer. The network's tensors are copied key for key
(whatever prefix the file puts before them: `module.`, `module.densenet121.`, `model.`; old `norm.1` names
modernised); the classifier's rows are taken by finding name, so the run's outputs are the task's findings in
the task's order. Input scaling: a one-channel first convolution is torchxrayvision's [-1024, 1024] input,
folded into three ImageNet-normalised channels exactly (chestaid.models.xrv_import); a three-channel one takes
ImageNet-normalised grey images as chestaid's own models do (CheXNet and its reproductions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import sha256_of
from chestaid.core.tasks import BOX_LABEL_ALIASES, NIH_FINDINGS, TASKS, Task
from chestaid.models.backbone import BACKBONES, CLASSIFIERS, BackboneSpec, modern_key
from chestaid.models.chestnet import ChestNet
from chestaid.models.xrv_import import channel_factors, read_weights

# The output order of CheXNet (Rajpurkar et al. 2017) and its reproductions (arnoweng/CheXNet, jrzech): `--labels chexnet`
CHEXNET_ORDER = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                 "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
# The dataset codes in torchxrayvision's file names (its paper, arXiv:2111.00595, table 1)
XRV_DATASETS = {"nih": "NIH ChestX-ray14", "pc": "PadChest", "chex": "CheXpert",
                "mimic_ch": "MIMIC-CXR (CheXpert labels)", "mimic_nb": "MIMIC-CXR (NegBio labels)",
                "google": "NIH ChestX-ray14 (Google's relabelling)", "openi": "OpenI (Indiana University)",
                "kaggle": "RSNA Pneumonia Challenge (Kaggle)", "rsna": "RSNA Pneumonia Challenge",
                "siim": "SIIM-ACR Pneumothorax", "vin": "VinDr-CXR"}
SYNONYMS = {"pleuraleffusion": "effusion", **{k.lower(): v.lower() for k, v in BOX_LABEL_ALIASES.items()}}


@dataclass(frozen=True)
class Published:
    """A published classifier: its network's tensors (torchvision names, first convolution as published), its
    final Linear layer, the finding each output stands for ("" where the weights never learned one) and where
    it came from (`source`: given, sha256, family, registry name, datasets, input resolution)."""

    backbone: str
    network: dict[str, torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor
    outputs: tuple[str, ...]
    source: dict = field(default_factory=dict)

    @property
    def xrv_scaling(self) -> bool:
        """Whether the network takes torchxrayvision's one channel in [-1024, 1024]."""
        return next(v for v in self.network.values() if v.dim() == 4).shape[1] == 1


def read_published(source: str | Path, labels: Sequence[str] | None = None, trust_pickle: bool = False) -> Published:
    """A file (pickled module with trust_pickle, state dict or checkpoint, safetensors), or with torchxrayvision
    installed one of its weights names (downloaded by torchxrayvision). `labels`: the file's output order, when
    it does not say itself (["chexnet"]: CheXNet's order); "" for an output that was never trained."""
    path = Path(source)
    entry = xrv_entry(path.name if path.exists() else str(source), by_file=path.exists())
    if path.exists():
        raw, stated = read_weights(path, trust_pickle)
        digest, where = sha256_of(path), str(path)
    else:
        if entry is None:
            raise ChestaidError(f"{source}: no such file, nor a torchxrayvision weights name{_known_names()}")
        raw, path = _download_xrv(str(source))
        stated, digest, where = None, sha256_of(path), str(source)
    backbone, network, (weight, bias) = split_network(raw, where)
    outputs = _output_names(labels, stated, entry, len(weight), where)
    info = {"given": str(source), "file": path.name, "sha256": digest,
            "family": "torchxrayvision" if next(v for v in network.values() if v.dim() == 4).shape[1] == 1
            else "torchvision (CheXNet-style)", "backbone": backbone}
    if entry is not None:
        info.update(registry_name=entry["name"], url=entry["weights_url"], datasets=entry["datasets"],
                    input_resolution=entry.get("input_resolution"))
    return Published(backbone, network, weight, bias, tuple(outputs), info)


def xrv_entry(name: str, by_file: bool = False) -> dict | None:
    """torchxrayvision's registry entry for a weights name (or, by_file, for its downloaded file's name), with
    `datasets` read from the file name's dataset codes; None when torchxrayvision is not installed or does not
    know it."""
    try:
        from torchxrayvision.models import model_urls
    except ImportError:
        return None
    for key, entry in model_urls.items():
        file = entry["weights_url"].rsplit("/", 1)[-1]
        if (file == name) if by_file else (key == name):
            codes = re.split(r"-(?:densenet|resnet)", file)[0].split("-")
            return {**entry, "name": key, "datasets": [XRV_DATASETS.get(c, c) for c in codes]}
    return None


def _known_names() -> str:
    try:
        from torchxrayvision.models import model_urls
    except ImportError:
        return " (torchxrayvision is not installed: pip install torchxrayvision to import by name)"
    return f" (torchxrayvision knows: {', '.join(k for k in model_urls if '-res' in k)})"


def _download_xrv(name: str) -> tuple[dict[str, torch.Tensor], Path]:
    """torchxrayvision's own download of `name` (it unpickles its own files): (tensors, the local file)."""
    import torchxrayvision as xrv

    kind = xrv.models.ResNet if name.startswith("resnet") else xrv.models.DenseNet
    try:
        model = kind(weights=name)
    except Exception as e:  # noqa: BLE001 - no internet, a broken download: one line
        raise ChestaidError(f"{name}: torchxrayvision could not fetch its weights (this needs the internet; or "
                            f"download the file yourself and give its path): {type(e).__name__}: {e}") from e
    state = model.model.state_dict() if hasattr(model, "model") else model.state_dict()
    return state, Path(model.weights_filename_local)


def split_network(raw: dict[str, torch.Tensor], where: str) -> tuple[str, dict[str, torch.Tensor],
                                                                     tuple[torch.Tensor, torch.Tensor]]:
    """(backbone name, the network's tensors by torchvision's names, (classifier weight, bias)) of a state dict
    of one of chestaid's backbones plus one final Linear layer; a one-line error naming the first tensor that
    does not fit otherwise."""
    best: tuple[int, str, str] | None = None  # (tensors found, backbone, problem)
    for spec in BACKBONES.values():
        expected = _network_shapes(spec)
        first = next(k for k, shape in expected.items() if len(shape) == 4)
        for prefix in {k[:-len(first)] for k in raw if k == first or k.endswith("." + first)}:
            state = {modern_key(k[len(prefix):]): v for k, v in raw.items() if k.startswith(prefix)}
            problem = _mismatch(state, expected, first, spec)
            if not problem:
                return spec.name, {k: state[k] for k in expected if k in state}, _classifier(state, expected, spec, where)
            found = sum(k in state for k in expected)
            if best is None or found > best[0]:
                best = (found, spec.title, problem)
    if best is None:
        raise ChestaidError(f"{where}: not a network chestaid can take (none of DenseNet-121, ResNet-18/50, "
                            "EfficientNet-B0: no first convolution named as theirs)")
    raise ChestaidError(f"{where}: does not fit {best[1]}: {best[2]}")


def _network_shapes(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = spec.constructor(weights=None)
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith(CLASSIFIERS)}


def _mismatch(state: dict, expected: dict, first: str, spec: BackboneSpec) -> str:
    """"" when `state` holds every tensor of the network with its shape (the first convolution may take one
    channel), else the first one that does not."""
    for key, shape in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue  # old checkpoints lack the counter, which nothing reads in eval mode
            return f"{key} is missing"
        got = tuple(state[key].shape)
        allowed = {shape, (shape[0], 1, *shape[2:])} if key == first else {shape}
        if got not in allowed:
            return f"{key} has shape {got}, {spec.title} needs {shape}"
    return ""


def _classifier(state: dict, expected: dict, spec: BackboneSpec, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The one Linear layer over the pooled features (torchvision's `classifier`/`fc`, CheXNet's
    `classifier.0`), as (weight [N, C], bias [N])."""
    width = spec.channels[-1]
    heads = [k for k, v in state.items() if k not in expected and k.endswith(".weight") and v.dim() == 2]
    over_features = [k for k in heads if state[k].shape[1] == width]
    if len(heads) != 1 or len(over_features) != 1:
        found = ", ".join(f"{k} {tuple(state[k].shape)}" for k in heads) or "none"
        raise ChestaidError(f"{where}: the classifier must be one Linear layer over the {width} pooled features "
                            f"(found {found})")
    weight = state[over_features[0]].float()
    bias = state.get(over_features[0][:-len("weight")] + "bias")
    return weight, (bias.float() if bias is not None else torch.zeros(len(weight)))


def _output_names(labels: Sequence[str] | None, stated: list[str] | None, entry: dict | None, outputs: int,
                  where: str) -> list[str]:
    if labels is not None:
        names = list(CHEXNET_ORDER) if [n.lower() for n in labels] == ["chexnet"] else [n.strip() for n in labels]
        origin = "--labels"
    elif entry is not None:
        names, origin = list(entry["labels"]), f"torchxrayvision's registry ({entry['name']})"
    elif stated is not None:
        names, origin = stated, "the file"
    else:
        raise ChestaidError(f"{where}: does not say which finding each of its {outputs} outputs is: give --labels "
                            "A,B,… in output order (--labels chexnet for CheXNet's order; an empty name for an "
                            "output never trained)")
    if len(names) != outputs:
        raise ChestaidError(f"{where}: {origin} names {len(names)} outputs, its classifier has {outputs}")
    return names


def _key(name: str) -> str:
    plain = re.sub(r"[\s_\-]+", "", name).casefold()
    return SYNONYMS.get(plain, plain)


def task_for(published: Published, task: str | None, where: str = "weights") -> Task:
    """The run's task: nih, pneumonia, or the comma-separated findings given (default: nih when the weights
    cover all of NIH's findings)."""
    covered = [n for n in published.outputs if n]
    if task is None:
        if all(_key(n) in {_key(c) for c in covered} for n in NIH_FINDINGS):
            return TASKS["nih"]
        raise ChestaidError(f"{where}: choose the run's findings with --task pneumonia, or --task A,B,… among what "
                            f"the weights cover: {', '.join(covered)}")
    if task in TASKS:
        return TASKS[task]
    names = [n.strip() for n in task.split(",") if n.strip()]
    try:
        return Task(name="imported", labels=tuple(names))
    except ValueError as e:
        raise ChestaidError(f"--task {task}: {e}") from e


def output_rows(published: Published, task: Task, where: str = "weights") -> list[int]:
    """The classifier row of each of the task's findings; a one-line error naming those the weights never
    learned, with what they do cover."""
    rows = {_key(n): i for i, n in enumerate(published.outputs) if n}
    missing = [n for n in task.labels if _key(n) not in rows]
    if missing:
        raise ChestaidError(f"{where}: the weights never learned {', '.join(missing)} (task {task.name}); they "
                            f"cover: {', '.join(n for n in published.outputs if n) or 'nothing named'}")
    return [rows[_key(n)] for n in task.labels]


def as_chestnet(published: Published, task: Task, where: str = "weights") -> ChestNet:
    """A ChestNet (no FPN, no patient fusion, no hidden layer) whose outputs are the task's findings."""
    rows = output_rows(published, task, where)
    model = ChestNet(num_outputs=task.num_outputs, fpn=False, tabular=False, weights="none", hidden=(),
                     dropout=0.0, backbone=published.backbone)
    network = dict(published.network)
    if published.xrv_scaling:
        first = next(k for k, v in network.items() if v.dim() == 4)
        alpha = torch.from_numpy(channel_factors()).view(1, 3, 1, 1)
        network[first] = (network[first].double() * alpha).float()
    state = model.state_dict()
    unplaced = [k for k in network if f"backbone.{k}" not in state]
    if unplaced:  # the feature extractor keeps every tensor the features use; none may be left behind
        raise ChestaidError(f"{where}: {unplaced[0]} has no place in chestaid's {published.backbone}")
    state.update({f"backbone.{k}": v.to(state[f"backbone.{k}"].dtype) for k, v in network.items()})
    last = len(model.head) - 1
    state[f"head.{last}.weight"], state[f"head.{last}.bias"] = published.weight[rows], published.bias[rows]
    model.load_state_dict(state)
    return model.eval()
