"""The one inference path: load a run directory, turn uint8 images into logits with the evaluation transform.

Evaluation, `predict`, the web page and the API all score images through `Predictor`. Logits come from the
backend chosen by measurement for this CPU among what `chestaid export` wrote and checked (ONNX Runtime,
OpenVINO fp32/bf16/int8: chestaid.inference.backends), from ONNX Runtime when the run has only a current
model.onnx, and from torch otherwise; Grad-CAM always uses the torch model.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from chestaid.core.config import RunConfig
from chestaid.data.augment import eval_transform
from chestaid.data.cache import Cache
from chestaid.data.dataset import CacheDataset
from chestaid.data.images import array_to_grey, read_grey, resize_square
from chestaid.data.sources import patient_vectors
from chestaid.core.errors import ChestaidError, ImageDecodeError, describe
from chestaid.inference.calibration import Calibration, score_name
from chestaid.inference.thresholds import Thresholds
from chestaid.inference.gate import DistanceGate, refusal_of, tag_refusal
from chestaid.inference.backends import CHOICES, Network, select
from chestaid.inference.prediction import Prediction
from chestaid.inference.result import Scored
from chestaid.models.chestnet import ChestNet
from chestaid.data.patient import patient_from_header, read_header
from chestaid.core.run_paths import RunPaths
from chestaid.models.weights import load_model
from chestaid.core.tasks import Task

if TYPE_CHECKING:
    from chestaid.explain.gradcam import CamExplainer


def decode_file(path: str, size: int) -> tuple[np.ndarray | None, str, object]:
    """(image as the model sees it, "", DICOM header or None) or (None, one-line reason, None); never raises.
    The same decoding as `Predictor.read`, in a form a worker process can run."""
    try:
        image = resize_square(read_grey(path, draft_size=size), size)
    except ImageDecodeError as e:
        return None, e.reason, None
    except Exception as e:  # noqa: BLE001 - the per-file safety net
        return None, f"cannot be decoded ({describe(e)})", None
    return image, "", read_header(path)


class Predictor:
    """A trained model ready to score images: `Predictor.load(RUN)`.

    Raw logits → calibrated risk scores (RUN/calibration.json; plain sigmoid when absent) → decisions at
    RUN/thresholds.json (0.5 when absent). `calibrated` and `thresholded` say which the run had; `backend` says
    what computes the logits and the input gate's features (chestaid.inference.backends.VARIANTS) and
    `backend_note` why a faster one was not used;
    `gate` is the run's fitted input gate (RUN/gate.safetensors; None: no gate, which is said wherever it scores).
    The Predictor owns its model: it is put in eval mode and its weights take no gradients."""

    def __init__(self, cfg: RunConfig, model: ChestNet, device: str = "cpu", calibration: Calibration | None = None,
                 thresholds: Thresholds | None = None, network: Network | None = None,
                 backend: str | None = None) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.task: Task = cfg.require_task()
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.network: Network | None = network  # None: the torch model
        self._backend = backend or ("torch" if network is None else "onnx")
        self.backend_note = ""
        self.gate: DistanceGate | None = None
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.calibrated, self.thresholded = calibration is not None, thresholds is not None
        self.calibration = calibration or Calibration.identity(self.task.labels)
        self.thresholds = thresholds or Thresholds({n: 0.5 for n in self.task.labels}, "default", {})
        self._readers: ThreadPoolExecutor | None = None  # decoding threads, made once and shared by callers
        self._explainers: dict[tuple, "CamExplainer"] = {}
        self._lazy = threading.Lock()  # guards the two lazily made members above

    @property
    def readers(self) -> ThreadPoolExecutor:
        """The threads that decode files for `score_files` (made on first use, shared by concurrent callers)."""
        with self._lazy:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                                   thread_name_prefix="chestaid-read")
            return self._readers

    def explainer(self, method: str = "gradcam", precision: str = "auto",
                  target_layers: list[str] | None = None) -> "CamExplainer":
        """This Predictor's Grad-CAM explainer for these settings, made once (its own copy of the network, its
        precision measured once) and shared by every caller: maps never see another request's forward pass."""
        from chestaid.explain.gradcam import CamExplainer

        key = (method, precision, tuple(target_layers or ()))
        with self._lazy:
            if key not in self._explainers:
                self._explainers[key] = CamExplainer(self, target_layers, method, precision)
            return self._explainers[key]

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu", raw: bool = False, backend: str = "auto",
             threads: int | None = None) -> "Predictor":
        """Load a run; raw=True ignores its calibration and thresholds (used while fitting them).

        backend: "auto" (on the CPU, the fastest variant `chestaid export` recorded as passing parity for this
        CPU, measured again on a CPU not recorded; ONNX Runtime when the run has only a current model.onnx; else
        torch), or one of torch, onnx, openvino, openvino-bf16, openvino-int8 (an error when it cannot be used).
        threads: CPU threads of ONNX Runtime / OpenVINO (None: theirs, all cores)."""
        if backend not in CHOICES:
            raise ChestaidError(f"backend must be one of {', '.join(CHOICES)}, got {backend!r}")
        cfg, model = load_model(run)
        network, name, note = select(run, backend, device, model, cfg, threads)
        predictor = cls(cfg, model, device, network=network, backend=name)
        predictor.backend_note = note
        if not raw:
            predictor.load_fitted(run)
        return predictor

    @property
    def score_name(self) -> str:
        """"calibrated risk score", or "uncalibrated score" for a run `calibrate` has not fitted."""
        return score_name(self.calibrated)

    @property
    def backend(self) -> str:
        return self._backend

    def load_fitted(self, run: str | Path) -> None:
        """(Re)read the run's calibration.json, thresholds.json and input gate; what is absent stays sigmoid / 0.5
        / no gate."""
        paths = RunPaths(run)
        if (paths.gate).is_file():
            self.gate = DistanceGate.load(paths.gate)
        if paths.calibration.is_file():
            self.calibration, self.calibrated = Calibration.load(paths.calibration, self.task.labels), True
        if paths.thresholds.is_file():
            self.thresholds, self.thresholded = Thresholds.load(paths.thresholds), True

    def risk_scores(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated risk scores [N, labels] in [0, 1]: a risk score, not a clinical probability."""
        return self.calibration(logits)

    def decisions(self, scores: np.ndarray) -> np.ndarray:
        return self.thresholds.decide(scores, self.task.labels)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, tabular: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [B,1,H,W] + patient vectors [B,3] → (logits [B, labels], the pooled backbone features the
        input gate measures), on the CPU."""
        x = eval_transform(images.to(self.device), self.cfg.data.image_size, self.cfg.data.augment.crop)
        if self.network is not None:
            logits, features = self.network(x.numpy(), tabular.numpy() if self.cfg.model.tabular else None)
            return torch.from_numpy(logits), torch.from_numpy(features)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        tab = tabular.to(self.device) if self.cfg.model.tabular else None
        head, features = self.model.embed(x)
        return self.model.classify(head, tab).float().cpu(), features.float().cpu()

    def distances(self, features: np.ndarray) -> np.ndarray | None:
        """The input gate's distance per image, or None when the run has no gate."""
        return None if self.gate is None else self.gate.distance(features)

    @property
    def image_size(self) -> int:
        """The size images are resized to before the evaluation transform: the training cache's size."""
        return self.cfg.data.cache_size

    def score_arrays(self, images: np.ndarray, tabular: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 [B,S,S] images + patient vectors [B,3] → (logits, calibrated risk scores, decisions)."""
        logits = self.forward(torch.from_numpy(np.array(images)).unsqueeze(1), torch.from_numpy(tabular))[0].numpy()
        risk = self.risk_scores(logits)
        return logits, risk, self.decisions(risk)

    def read(self, path: str | Path) -> tuple[np.ndarray | None, str]:
        """(the image as the model sees it, "") or (None, one-line reason). Never raises: whatever a decoder
        throws, of any type, becomes the reason, so one bad file cannot stop a batch."""
        try:
            return resize_square(read_grey(path, draft_size=self.image_size), self.image_size), ""
        except ImageDecodeError as e:
            return None, e.reason
        except Exception as e:  # noqa: BLE001 - the per-file safety net
            return None, f"cannot be decoded ({describe(e)})"

    def score_files(self, paths: list[str | Path], batch_size: int = 16, patient: dict | list[dict] | None = None,
                    keep_images: bool = False, progress=None) -> tuple[list[Scored], list[tuple[str, str]]]:
        """Score files in batches. Returns the scored images and (file, reason) for each unreadable one.

        `patient` values (age/sex/view; one dict for all files, or one per file) fill only what a file's DICOM
        tags lack (chestaid.data.patient). Each scored
        image carries the input gate's verdict: its DICOM tags (chestaid.inference.gate), then its distance from the
        training images when the run has a fitted gate."""
        scored, failed = [], []
        pool = self.readers
        for start in range(0, len(paths), batch_size):
            batch = [str(p) for p in paths[start:start + batch_size]]
            given = patient[start:start + batch_size] if isinstance(patient, list) else [patient] * len(batch)
            loaded = list(pool.map(self.read, batch))
            good = [(p, img, g) for p, (img, _), g in zip(batch, loaded, given) if img is not None]
            failed += [(p, reason) for p, (img, reason) in zip(batch, loaded) if img is None]
            if good:
                headers = list(pool.map(read_header, [p for p, _, _ in good]))
                scored += self.score_images([p for p, _, _ in good], [img for _, img, _ in good], headers,
                                            [g for _, _, g in good], keep_images)
            if progress is not None:
                progress(len(batch))
        return scored, failed

    def gate_features(self, paths: list[str | Path], batch_size: int = 16,
                      progress=None) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
        """(the pooled features the input gate measures, the files they are of) for every file that decodes and
        whose DICOM tags allow a frontal chest X-ray, and (file, reason) for each of the others."""
        features, kept, passed = [], [], []
        for start in range(0, len(paths), batch_size):
            batch = [str(p) for p in paths[start:start + batch_size]]
            loaded = list(self.readers.map(self.read, batch))
            headers = list(self.readers.map(read_header, batch))
            good = []
            for path, (image, reason), header in zip(batch, loaded, headers):
                reason = reason or (tag_refusal(header) if header is not None else "")
                if reason:
                    passed.append((path, reason))
                else:
                    good.append((path, image))
            if good:
                images = torch.from_numpy(np.stack([image for _, image in good])).unsqueeze(1)
                features.append(self.forward(images, torch.zeros(len(good), 3))[1].numpy())
                kept += [path for path, _ in good]
            if progress is not None:
                progress(len(batch))
        width = self.model.spec.gate_features
        return (np.concatenate(features) if features else np.zeros((0, width), np.float32)), kept, passed

    def score_images(self, names: list[str], images: list[np.ndarray], headers: list,
                     patient: dict | list[dict | None] | None = None, keep_images: bool = False) -> list[Scored]:
        """Score decoded uint8 images (resized to `image_size`) with their DICOM headers (None where not DICOM):
        patient data (`patient`: given values, one dict for all or one per image), logits, calibrated risk
        scores, decisions, and the input gate's verdict."""
        given = patient if isinstance(patient, list) else [patient] * len(headers)
        data = [patient_from_header(h, g) for h, g in zip(headers, given)]
        tabular = patient_vectors([d.values for d in data])
        batch = torch.from_numpy(np.stack(images)).unsqueeze(1)
        logits, features = (t.numpy() for t in self.forward(batch, torch.from_numpy(tabular)))
        risk = self.risk_scores(logits)
        decisions, distances = self.decisions(risk), self.distances(features)
        labels = tuple(self.task.labels)
        thresholds = np.array([self.thresholds.values[n] for n in labels], dtype=np.float64)
        scored = []
        for k, name in enumerate(names):
            distance = None if distances is None else float(distances[k])
            refusal, kind = refusal_of(self.gate, headers[k], distance)
            scored.append(Scored(name, labels, logits[k], risk[k], thresholds, decisions[k], data[k], tabular[k],
                                 images[k] if keep_images else None, refusal, distance, kind))
        return scored

    def predict(self, image: str | Path | np.ndarray, age: float | None = None, sex: str | None = None,
                view: str | None = None) -> Prediction:
        """Score one image: a file path (PNG, JPEG, DICOM ...) or a 2-D numpy array (any numeric dtype; uint8 is
        taken as it is, anything else is scaled from its min to its max). Patient data you give fills only what
        a DICOM file's tags lack; what nobody gives is assumed neutral and reported as assumed (a model without
        patient-data fusion ignores it).

        >>> result = predictor.predict("chest.png", age=61, sex="F", view="PA")  # doctest: +SKIP
        >>> result.risk["Effusion"], result.decision["Effusion"]                   # doctest: +SKIP
        (0.41, True)

        Raises ChestaidError (one line, naming the file) for a file or array that cannot be read."""
        given = {"age": age, "sex": sex, "view": view} if self.cfg.model.tabular else None  # else: not used
        if isinstance(image, np.ndarray):
            grey = resize_square(array_to_grey(image), self.image_size)
            scored = self.score_images(["<array>"], [grey], [None], given, keep_images=True)[0]
        else:
            grey, reason = self.read(image)
            if grey is None:
                raise ChestaidError(f"{image}: {reason}")
            scored = self.score_images([str(image)], [grey], [read_header(image)], given, keep_images=True)[0]
        return Prediction.of(scored, self)

    def cache_outputs(self, cache: Cache, split: str | None, batch_size: int = 64,
                      limit: int | None = None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """(logits, pooled image features, rows) for one split of a cache; `limit` takes an evenly spaced
        subset of at most that many rows."""
        rows = cache.table if split is None else cache.table[cache.table["split"] == split]
        if limit is not None and len(rows) > limit:
            rows = rows.iloc[np.linspace(0, len(rows) - 1, limit).round().astype(int)]
        dataset = CacheDataset(cache, rows=rows)
        rows = dataset.rows
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        out = [tuple(t.numpy() for t in self.forward(images, tabular)) for images, tabular, _ in loader]
        if not out:
            return np.zeros((0, self.task.num_outputs), np.float32), np.zeros((0, 0), np.float32), rows
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]), rows
