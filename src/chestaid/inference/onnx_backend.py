"""Fast CPU scoring with ONNX Runtime: `chestaid export RUN` writes RUN/model.onnx; the Predictor uses it.

The exported graph is the network only (normalised image [B,3,S,S] + patient vector [B,3] → logits [B,K] and
the pooled features the input gate measures, dynamic batch); decoding, resizing, the evaluation transform,
calibration and thresholds stay in the one Python path. The file records the SHA-256 of the model.safetensors
it was exported from: after retraining, a stale model.onnx is ignored (the Predictor falls back to torch and
says why) instead of scoring with old weights. Grad-CAM always runs in torch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write, sha256_of
from chestaid.data.sources import neutral_patients

OPSET = 17
PARITY_LIMIT = 1e-4  # max |logit difference| accepted at export
OUTPUTS = ["logits", "features"]
ONNX_FORMAT = "2"  # 2: logits + the input gate's features (pooled c5)


class _Network(torch.nn.Module):
    """The model with a fixed signature for export: (image, tabular) → (logits, features)."""

    def __init__(self, model: torch.nn.Module, tabular: bool) -> None:
        super().__init__()
        self.model, self.use_tabular = model, tabular

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head, features = self.model.embed(image)
        return self.model.classify(head, tabular if self.use_tabular else None), features


def export_onnx(run: str | Path, out: str | Path | None = None) -> dict:
    """Write RUN/model.onnx (or `out`) and check it against torch on random inputs at the model's input size.

    Returns {path, max_abs_logit_difference, image_size}. Raises ChestaidError when ONNX Runtime's logits
    differ from torch's by more than PARITY_LIMIT."""
    import onnx

    from chestaid.core.run_paths import RunPaths
    from chestaid.models.weights import load_model

    paths = RunPaths(run)
    cfg, model = load_model(run)
    size = cfg.data.image_size
    network = _Network(model, cfg.model.tabular).eval()  # export restores the mode it found: keep it eval
    example = (torch.zeros(2, 3, size, size), torch.from_numpy(neutral_patients(2)))
    buffer = io.BytesIO()
    batch = {0: "batch"}
    torch.onnx.export(network, example, buffer, dynamo=False, opset_version=OPSET, input_names=["image", "tabular"],
                      output_names=OUTPUTS, dynamic_axes={"image": batch, "tabular": batch, "logits": batch,
                                                          "features": batch})
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in {"chestaid_weights_sha256": sha256_of(paths.weights), "image_size": str(size),
                       "task": cfg.require_task().name, "chestaid_onnx_format": ONNX_FORMAT}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, 3, size, size, generator=generator)
    tabular = torch.rand(3, 3, generator=generator)
    with torch.inference_mode():
        expected = network(image, tabular)[0].numpy()
    got = OnnxNetwork(data)(image.numpy(), tabular.numpy())[0]
    difference = float(np.abs(got - expected).max())
    if difference > PARITY_LIMIT:
        raise ChestaidError(f"ONNX export of {paths.root} differs from torch by {difference:.2e} "
                            f"(limit {PARITY_LIMIT:.0e}); not written")
    target = Path(out) if out else paths.onnx
    atomic_write(target, lambda f: f.write(data))
    return {"path": str(target), "max_abs_logit_difference": difference, "image_size": size}


class OnnxNetwork:
    """An ONNX Runtime session for an exported network; thread-safe, like ORT's `run`."""

    def __init__(self, model: str | Path | bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # no busy-waiting after a run: torch (Grad-CAM, the page) shares the cores right after each score
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, image: np.ndarray, tabular: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Normalised images [B,3,S,S] float32 + patient vectors [B,3] (None: a model without fusion) →
        (logits, pooled image features)."""
        feeds = {"image": np.ascontiguousarray(image, np.float32)}
        if "tabular" in self.inputs:  # the exporter drops the input when the model does not fuse patient data
            if tabular is None:
                tabular = neutral_patients(image.shape[0])
            feeds["tabular"] = np.ascontiguousarray(tabular, np.float32)
        logits, features = self.session.run(OUTPUTS, feeds)
        return logits, features


def onnx_status(run: str | Path) -> str:
    """"" when RUN/model.onnx is present, of the current format and exported from model.safetensors; else why not
    (read from the file's metadata, without building a session)."""
    import onnx

    from chestaid.core.run_paths import RunPaths

    paths = RunPaths(run)
    path = paths.onnx
    if not path.is_file():
        return f"no {paths.onnx.name} in the run (chestaid export RUN)"
    try:
        metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as e:  # noqa: BLE001 - a corrupt file must not stop scoring with torch
        return f"{path} cannot be loaded ({type(e).__name__})"
    return _stale(path, metadata, paths.weights)


def _stale(path: Path, metadata: dict, weights: Path) -> str:
    if metadata.get("chestaid_onnx_format") != ONNX_FORMAT:
        return f"{path} was exported by an older chestaid (run chestaid export again)"
    if metadata.get("chestaid_weights_sha256") != sha256_of(weights):
        return f"{path} was exported from other weights than model.safetensors (run chestaid export again)"
    return ""


def open_onnx(run: str | Path, threads: int | None = None) -> tuple[OnnxNetwork | None, str]:
    """RUN/model.onnx ready to score, or (None, why not): absent, onnxruntime missing, or stale weights."""
    from chestaid.core.run_paths import RunPaths

    paths = RunPaths(run)
    path = paths.onnx
    if not path.is_file():
        return None, f"no {paths.onnx.name} in the run (chestaid export RUN)"
    try:
        network = OnnxNetwork(path, threads)
    except ImportError:
        return None, "onnxruntime is not installed"
    except Exception as e:  # noqa: BLE001 - a corrupt file must not stop scoring with torch
        return None, f"{path} cannot be loaded ({type(e).__name__})"
    why = _stale(path, network.metadata, paths.weights)
    return (None, why) if why else (network, "")
