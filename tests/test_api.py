"""The public Python API: `chestaid.load(run).predict(...)` on a numpy array and on a DICOM file, results keyed
by finding name, heat maps, clear errors; and no process-global state is changed by importing or using it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import chestaid
from chestaid.data.images import read_grey, to_uint8
from chestaid.core.tasks import NIH_FINDINGS

from test_images import _dicom


def test_score_an_array_and_a_dicom_file_in_five_lines(ungated_run, nih_root, tmp_path):
    png = sorted((nih_root / "images_001" / "images").glob("*.png"))[0]
    _dicom(tmp_path / "chest.dcm", read_grey(png).astype(np.uint16) * 16, "MONOCHROME2", Modality="DX",
           PatientAge="061Y", PatientSex="F", ViewPosition="PA")
    array = read_grey(png)

    predictor = chestaid.load(ungated_run.root)
    from_array = predictor.predict(array, age=61, sex="F", view="PA")
    from_dicom = predictor.predict(tmp_path / "chest.dcm")

    assert from_array.risk == predictor.predict(png, age=61, sex="F", view="PA").risk  # the file's own pixels
    scaled = array.astype(np.float64) * 3.7 - 20  # other dtypes are scaled from their min to their max
    assert predictor.predict(scaled).risk == predictor.predict(to_uint8(scaled)).risk

    for result in (from_array, from_dicom):
        assert list(result.risk) == list(result.decision) == list(result.threshold) == list(NIH_FINDINGS)
        assert all(0 <= v <= 1 for v in result.risk.values()) and not result.refused
        assert all(result.decision[n] == (result.risk[n] >= result.threshold[n]) for n in NIH_FINDINGS)
        assert set(result.flagged) == {n for n, d in result.decision.items() if d}
        assert result.patient == {"age": 61.0, "sex": "F", "view": "PA"}
    assert from_array.patient_source == {"age": "given", "sex": "given", "view": "given"}
    assert from_dicom.patient_source == {"age": "tag", "sex": "tag", "view": "tag"}
    cam = from_dicom.heatmap("Cardiomegaly")
    assert cam.shape == from_dicom.image.shape and 0 <= cam.min() and cam.max() <= 1


def test_the_input_gate_verdict_comes_with_the_result(tiny_run):
    photo = np.add.outer(np.arange(200), np.arange(160)) % 37 * 7.0  # stripes: not a chest X-ray
    result = chestaid.load(tiny_run.root).predict(photo)
    assert result.refused and "unlike the training images" in result.refusal and result.flagged == []
    assert result.gate_distance is not None and len(result.risk) == 14


def test_bad_input_is_one_clear_error(ungated_run, tmp_path):
    predictor = chestaid.load(ungated_run.root)
    (tmp_path / "notes.png").write_text("not an image")
    cases = [(tmp_path / "notes.png", "notes.png: not a recognised image"),
             (tmp_path / "missing.png", "missing.png: file not found"),
             (np.zeros((3, 64, 64)), "expected a 2-D grey image"), (np.full((8, 8), np.nan), "NaN"),
             (np.array([["a", "b"], ["c", "d"]]), "expected numbers")]
    for image, message in cases:
        with pytest.raises(chestaid.ChestaidError, match=message):
            predictor.predict(image)
    with pytest.raises(chestaid.ChestaidError, match="unknown finding 'Flu'"):
        predictor.predict(np.zeros((64, 64), np.uint8)).heatmap("Flu")
    with pytest.raises(chestaid.ChestaidError, match="not a chestaid run"):
        chestaid.load(tmp_path)


def test_public_names_are_documented():
    assert set(chestaid.__all__) >= {"load", "prepare", "train", "evaluate", "calibrate", "Predictor", "Prediction"}
    for name in chestaid.__all__:
        assert name == "__version__" or getattr(chestaid, name).__doc__, name


# Run in a fresh interpreter with a matplotlib backend other than Agg (so switching it shows), after importing
# the libraries chestaid uses, which install warning filters of their own when imported.
GLOBAL_STATE = """
import logging, warnings
import lightning, matplotlib, PIL.Image, pydicom, scipy.special, sklearn, torch, torchvision  # their own filters
state = lambda: (matplotlib.get_backend(), PIL.Image.MAX_IMAGE_PIXELS, list(warnings.filters),
                 [list(logging.getLogger(n).filters) for n in ("lightning.pytorch.utilities.rank_zero", "")])
before = state()
"""


def test_importing_and_scoring_leave_process_state_alone(ungated_run, nih_root):
    png = sorted((nih_root / "images_001" / "images").glob("*.png"))[0]
    script = GLOBAL_STATE + textwrap.dedent(f"""
        import chestaid
        result = chestaid.load({str(ungated_run.root)!r}).predict({str(png)!r})
        result.heatmap("Mass")
        from chestaid.core.figures import save, subplots
        fig, ax = subplots()
        ax.plot([0, 1])
        save(fig, {str(nih_root.parent / "figure.png")!r})
        after = state()
        assert after == before, [(a, b) for a, b in zip(after, before) if a != b]
        """)
    assert_state_kept(script)


def assert_state_kept(script: str, timeout: int = 300) -> None:
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
