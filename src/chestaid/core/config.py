"""A run's configuration: pydantic models, YAML in and out, and `--set key=value` overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_text
from chestaid.core.tasks import Task


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentSettings(Strict):
    """Train augmentation (SPEC A7 defaults; seed 003 uses crop 1.0, rotate 5, blur 0, jitter 0.1)."""

    crop: float = Field(0.9, gt=0.5, le=1.0)
    rotate_deg: float = Field(7.0, ge=0, le=45)
    translate: float = Field(0.06, ge=0, le=0.3)
    blur_p: float = Field(0.4, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    brightness: float = Field(0.0, ge=0, le=0.5)
    contrast: float = Field(0.0, ge=0, le=0.5)


class DataConfig(Strict):
    path: str | None = None
    image_size: int = Field(224, ge=32, le=1024)
    cache_size: int = Field(256, ge=32, le=2048, description="used when `train` must build a cache")
    balance: Literal["none", "seed000"] = "none"
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0)
    augment: AugmentSettings = AugmentSettings()


class ModelConfig(Strict):
    backbone: Literal["densenet121", "efficientnet_b0", "resnet18", "resnet50"] = Field(
        "densenet121", description="the network under the FPN and head (chestaid.models.backbone.BACKBONES)")
    weights: str = "imagenet"
    fpn: bool = True
    tabular: bool = True
    freeze_blocks: int = Field(0, ge=0, le=5)
    hidden: list[int] = [128]
    dropout: float = Field(0.3, ge=0, lt=1)
    fpn_head: Literal["seed", "with_c5"] = Field("seed", description="seed: the projected pyramid alone (SPEC "
                                                 "A11); with_c5: the plain model's pooled c5 kept beside it")
    pool: Literal["avg", "avgmax"] = Field("avg", description="global pooling of each level: mean (seed), or "
                                           "mean and maximum")
    fpn_norm: bool = Field(False, description="BatchNorm after each FPN convolution (the seed has none)")


class LossConfig(Strict):
    pos_weight: Literal["log", "ratio", "none"] | float = "log"
    overrides: dict[str, float] = {}


class TrainConfig(Strict):
    epochs: int = Field(15, ge=1)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["plateau", "cosine"] = Field("plateau", description="plateau: ReduceLROnPlateau on val "
                                                   "loss (SPEC A13); cosine: decay to 0 over the run, per step")
    warmup_epochs: float = Field(0.0, ge=0, description="cosine: linear warm-up from lr/100 over this many epochs")
    plateau_patience: int = Field(2, ge=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    monitor: Literal["macro_f1", "auroc", "precision", "loss"] = "macro_f1"
    early_stopping_patience: int | None = Field(None, ge=1)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: bool = True
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1, description="machines in a multi-node run (torchrun, SLURM)")
    strategy: str = "auto"
    checkpoint_every_n_steps: int = Field(200, ge=0, description="mid-epoch last.ckpt; 0 = epoch ends only")
    logger: Literal["csv", "tensorboard", "none"] = Field("csv", description="RUN/logs/: Lightning's CSV logger; "
                                                          "tensorboard adds TensorBoard's; train_log.csv is always written")
    limit_train_batches: int | float = 1.0
    seed: int = 0

    @model_validator(mode="after")
    def _check_warmup(self) -> "TrainConfig":
        if self.warmup_epochs and self.schedule != "cosine":
            raise ValueError("warmup_epochs needs schedule: cosine")
        return self


class RunConfig(Strict):
    task: Task | None = Field(None, description="a built-in task's name (nih, pneumonia) or {name, labels, kind}; "
                                             "None: the task of the training data")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check_overrides(self) -> "RunConfig":
        unknown = sorted(set(self.loss.overrides) - set(self.task.labels)) if self.task else []
        if unknown:
            raise ValueError(f"loss.overrides names unknown finding(s) {unknown} for task {self.task.name!r}")
        return self

    def require_task(self) -> Task:
        """The task, which every trained run's config names (train records the data's task)."""
        if self.task is None:
            raise ChestaidError("the config names no task; train it on data first")
        return self.task


def with_task(cfg: RunConfig, task: Task) -> RunConfig:
    """The config with `task` set, validated again (loss.overrides must name its labels)."""
    try:
        return RunConfig.model_validate({**cfg.model_dump(), "task": task.model_dump()})
    except ValidationError as e:
        raise ChestaidError(f"config: {e.errors()[0]['msg']}") from e


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ChestaidError(f"--set {key}: {part!r} is not a section")
    node[parts[-1]] = value


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ChestaidError(f"--set expects key=value, got {item!r}")
    return key.strip(), yaml.safe_load(value)


BUNDLED = Path(__file__).parent.parent / "configs"


def bundled_configs() -> list[str]:
    """Names of the configs shipped with chestaid (usable as `--config NAME`)."""
    return sorted(p.stem for p in BUNDLED.glob("*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """A YAML file, or the name of a bundled config (`demo`, `nih_densenet_fpn`, ...)."""
    given = Path(path)
    bundled = BUNDLED / f"{given.stem}.yaml"
    if not given.is_file() and given.parent == Path(".") and bundled.is_file():  # a folder named `demo` is not it
        return bundled
    return given


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] = ()) -> RunConfig:
    """Read a YAML config (a file or a bundled name; None = the defaults) and apply overrides: 'a.b=value'
    strings (values parsed as YAML) or a {"a.b": value} dict."""
    tree: dict = {}
    if path is not None:
        path = resolve_config(path)
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ChestaidError(f"{path}: cannot read config ({e.strerror or e}); bundled configs: "
                                f"{', '.join(bundled_configs())}") from e
        except yaml.YAMLError as e:
            raise ChestaidError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(tree, dict):
            raise ChestaidError(f"{path}: a config must be a mapping of sections")
    pairs = list(overrides.items() if isinstance(overrides, dict) else [_parse_override(item) for item in overrides])
    for key, value in pairs:
        _set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        first = e.errors()[0]
        where = _error_key([str(p) for p in first["loc"]], first["type"] == "extra_forbidden")
        unknown = first["type"] == "extra_forbidden"  # an unknown section blames the --set keys under it
        mine = [key for key, _ in pairs if key == where or (unknown and key.startswith(where + "."))]
        where = mine[0] if mine else where
        origin = f"--set {where}" if mine else f"{path or 'config'}: {where}"
        if first["type"] == "extra_forbidden":
            close = difflib.get_close_matches(where, config_keys(), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; the section's keys: {_siblings(where)}"
            raise ChestaidError(f"{origin}: not a config key{hint}") from e
        raise ChestaidError(f"{origin}: {first['msg']} (got {first.get('input')!r})") from e


def _error_key(loc: list[str], unknown: bool) -> str:
    """The config key an error is about: its location without pydantic's type tags (e.g. `.int` of a union)."""
    if unknown or not loc:
        return ".".join(loc) or "config"
    keys = config_keys()
    for n in range(len(loc), 0, -1):
        candidate = ".".join(loc[:n])
        if candidate in keys or any(k.startswith(candidate + ".") for k in keys):
            return candidate
    return ".".join(loc)


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key a config (or `--set`) may give, e.g. train.epochs."""
    keys = []
    for name, field in (model or RunConfig).model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys += config_keys(kind, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _siblings(key: str) -> str:
    section = key.rpartition(".")[0]
    keys = [k for k in config_keys() if k.rpartition(".")[0] == section] if section else []
    return ", ".join(keys) if keys else ", ".join(sorted({k.split(".")[0] for k in config_keys()}))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
