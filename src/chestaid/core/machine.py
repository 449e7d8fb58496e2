"""What machine this is: CPU model, cores, the instruction sets speed depends on, library versions.

Figures measured on one CPU are not figures of another: benchmarks record `describe()` beside every number and
the inference backends are chosen per `cpu_key()` (chestaid.inference.backends). Nothing here imports torch or
any other heavy library; versions are read from the installed metadata.
"""

from __future__ import annotations

import hashlib
import os
import platform
from functools import lru_cache
from importlib import metadata

ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
LIBRARIES = ("torch", "onnxruntime", "openvino", "nncf", "numpy", "lightning", "chestaid")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; ("", {}) where there is none (macOS, Windows)."""
    model, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """The kernel's CPU flags (Linux); empty where they cannot be read: then nothing is assumed present."""
    return _cpuinfo()[1]


def has(feature: str) -> bool:
    """Whether the CPU has `feature`: avx2, avx512, vnni (AVX512-VNNI or AVX-VNNI), bf16 (AVX512-BF16 or AMX-BF16),
    amx (AMX tiles with bf16), amx_int8, or any raw flag name."""
    flags = cpu_flags()
    groups = {"avx512": {"avx512f"}, "vnni": {"avx512_vnni", "avx_vnni", "amx_int8"},
              "bf16": {"avx512_bf16", "amx_bf16"}, "amx": {"amx_bf16"}}
    return bool(flags & groups.get(feature, {feature}))


def cores() -> int:
    """The cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_key() -> str:
    """A short identifier of this CPU as speed depends on it: model, cores, the ISA flags above."""
    text = f"{cpu_model()}|{cores()}|{','.join(f for f in ISA if f in cpu_flags())}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def describe() -> dict:
    """The machine as benchmarks and RUN/backends.json record it."""
    flags = cpu_flags()
    return {"cpu_model": cpu_model(), "cpu_key": cpu_key(), "cores": cores(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "os": platform.platform(), "python": platform.python_version(),
            "isa": {f: f in flags for f in ISA},
            "summary": {"avx2": has("avx2"), "avx512": has("avx512"), "vnni": has("vnni"), "bf16": has("bf16"),
                        "amx": has("amx")},
            "libraries": library_versions()}
