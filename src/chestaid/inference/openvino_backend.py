"""CPU scoring with OpenVINO: the exported RUN/model.onnx in fp32 or bf16, or an NNCF int8 model of it.

The network is the one `chestaid export` wrote (normalised image [B,3,S,S] + patient vector [B,3] → logits and
the input gate's pooled features, dynamic batch). Precision is always asked for explicitly: OpenVINO's CPU
plugin otherwise runs bf16 by itself on CPUs that have it, and fp32 must mean fp32. Which variant a run uses is
chosen by measurement in chestaid.inference.backends; this module only builds and runs them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from chestaid.data.sources import neutral_patients

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoNetwork:
    """A compiled OpenVINO model; thread-safe (one infer request per calling thread)."""

    def __init__(self, model: str | Path, precision: str = "fp32", threads: int | None = None) -> None:
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.precision = precision
        self.compiled = ov.Core().compile_model(str(model), "CPU", config)
        self.inputs = {name for port in self.compiled.inputs for name in port.get_names()}
        self._logits, self._features = self.compiled.output("logits"), self.compiled.output("features")
        self._local = threading.local()

    def __call__(self, image: np.ndarray, tabular: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Normalised images [B,3,S,S] float32 + patient vectors [B,3] (None: a model without fusion) →
        (logits, pooled image features), float32."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        feeds = {"image": np.ascontiguousarray(image, np.float32)}
        if "tabular" in self.inputs:
            if tabular is None:
                tabular = neutral_patients(image.shape[0])
            feeds["tabular"] = np.ascontiguousarray(tabular, np.float32)
        out = request.infer(feeds)
        return (np.array(out[self._logits], np.float32, copy=True),
                np.array(out[self._features], np.float32, copy=True))


def quantize_int8(onnx_path: str | Path, batches: Iterable[tuple[np.ndarray, np.ndarray | None]], out: str | Path,
                  subset_size: int = 300) -> Path:
    """NNCF post-training int8 quantisation of `onnx_path`, calibrated on `batches` (normalised images, patient
    vectors: the run's calib part of validation, never test); writes the OpenVINO IR `out` (.xml + .bin)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    names = {name for port in model.inputs for name in port.get_names()}
    items = []
    for image, tabular in batches:
        for k in range(len(image)):
            item = {"image": np.ascontiguousarray(image[k:k + 1], np.float32)}
            if "tabular" in names:
                tab = tabular[k:k + 1] if tabular is not None else neutral_patients(1)
                item["tabular"] = np.ascontiguousarray(tab, np.float32)
            items.append(item)
    if not items:
        raise ValueError("no calibration images")
    nncf_log = logging.getLogger("nncf")
    previous = nncf_log.level
    nncf_log.setLevel(logging.ERROR)  # its progress lines; restored below
    try:
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=min(subset_size, len(items)),
                                  preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=True)
    finally:
        nncf_log.setLevel(previous)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(out.with_suffix(".bin"))
    tmp.replace(out)
    log.info("int8 model written to %s from %d calibration images", out, len(items))
    return out
