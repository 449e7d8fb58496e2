"""Helpers shared by the benchmark scripts: machine facts and JSON output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """CPU model, cores, ISA flags (AVX2/AVX-512/VNNI/BF16/AMX), library versions (chestaid.core.machine), plus
    torch's threads and the GPU: figures from different machines can be told apart."""
    from chestaid.core.machine import describe

    return {**describe(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_result(name: str, result: dict, out: str | Path | None = None, echo: bool = True) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **result}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)  # a benchmark killed while writing leaves its previous result whole
    if echo:
        print(json.dumps(result, indent=2))
    return path
