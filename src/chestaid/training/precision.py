"""`train.precision: auto`, chosen by measurement: which precision trains this model fastest on this machine.

GPU: bf16 autocast where the GPU has it, fp32 elsewhere (as Lightning's own advice). CPU: bf16 pays only where
the CPU has bf16 instructions (AVX512-BF16 or AMX), and even there not always (docs/speed.md: on an AVX512-BF16
CPU without AMX bf16 autocast alone was 3x slower than fp32, with channels_last 2.1x faster; on an AVX2-only CPU
~450x slower). So on such a CPU, a single-process run times a few training steps of this run's own model, image
size and batch in fp32 and in bf16 autocast, side by side, and takes bf16 only when it is at least
`MIN_SPEEDUP` times faster. A CPU without bf16 instructions gets fp32 without measuring; so does a run of several
processes (each would measure for itself and they could disagree).

The choice is written into the run's config.yaml (a resumed run keeps it) and, with the figures, into
RUN/manifest.json (the model card shows it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from chestaid.core.config import RunConfig
from chestaid.core.machine import cpu_key, cpu_model, has

MIN_SPEEDUP = 1.2  # bf16 must beat fp32 by this much: below it, the timing noise of a shared machine decides
PROBE_STEPS = 3
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionChoice:
    """The Lightning precision used, why, and (when measured) training images/s of each candidate."""

    precision: str
    reason: str
    images_per_s: dict[str, float] = field(default_factory=dict)
    cpu: str | None = None
    cpu_key: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _several_processes(cfg: RunConfig) -> bool:
    launched = any(os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS"))
    devices = cfg.train.devices  # "auto" on a CPU is one process
    return launched or cfg.train.num_nodes != 1 or not (devices in (1, "1", "auto") or devices == [0])


def choose_precision(cfg: RunConfig, probe_steps: int = PROBE_STEPS) -> PrecisionChoice:
    """What `cfg.train.precision` means on this machine (a fixed value is kept as it is)."""
    if cfg.train.precision != "auto":
        return PrecisionChoice(cfg.train.precision, "set in the config")
    if torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda"):
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16-mixed", "GPU with bf16")
        return PrecisionChoice("32-true", "GPU without bf16")
    here = {"cpu": cpu_model(), "cpu_key": cpu_key()}
    if not has("bf16"):
        return PrecisionChoice("32-true", "CPU without bf16 instructions (AVX512-BF16/AMX): fp32, not measured",
                               **here)
    if _several_processes(cfg):
        return PrecisionChoice("32-true", "several processes: fp32, not measured (set train.precision: bf16-mixed "
                                          "to train in bf16)", **here)
    rates = measure_training_rates(cfg, probe_steps)
    speedup = rates["bf16-mixed"] / rates["32-true"]
    if speedup >= MIN_SPEEDUP:
        choice = PrecisionChoice("bf16-mixed", f"measured: bf16 {speedup:.2f}x fp32 on this CPU", rates, **here)
    else:
        choice = PrecisionChoice("32-true", f"measured: bf16 {speedup:.2f}x fp32 on this CPU (< {MIN_SPEEDUP}x)",
                                 rates, **here)
    log.info("train.precision auto: %s (%s)", choice.precision, choice.reason)
    return choice


def measure_training_rates(cfg: RunConfig, steps: int = PROBE_STEPS) -> dict[str, float]:
    """Training images/s of this run's model in fp32 and in bf16 autocast (median of `steps` interleaved steps
    after one warm-up step each) on random images of the configured size and batch. Leaves torch's random
    state as it found it."""
    from chestaid.models.chestnet import build_model

    task = cfg.require_task()
    batch, size = cfg.data.batch_size, cfg.data.image_size
    candidates = {"32-true": contextlib.nullcontext, "bf16-mixed": lambda: torch.autocast("cpu", torch.bfloat16)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.rand(batch, 3, size, size)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        tabular = torch.rand(batch, 3)
        target = (torch.rand(batch, task.num_outputs) < 0.2).float()
        steppers = {name: _stepper(build_model(cfg.model.model_copy(update={"weights": "none"}), task.num_outputs),
                                   x, tabular, target, autocast) for name, autocast in candidates.items()}
        seconds: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(steps + 1):
            for name, step in steppers.items():
                start = time.perf_counter()
                step()
                seconds[name].append(time.perf_counter() - start)
    return {name: round(batch / sorted(t[1:])[len(t[1:]) // 2], 2) for name, t in seconds.items()}


def _stepper(model: nn.Module, x: torch.Tensor, tabular: torch.Tensor, target: torch.Tensor, autocast):
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        with autocast():
            loss = loss_fn(model(x, tabular).float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step
