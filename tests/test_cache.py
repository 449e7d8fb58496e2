"""The cache: bad files are skipped and reported, 16-bit PNGs are kept, interrupted runs resume."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.data.cache import Cache, prepare
from chestaid.data.dataset import CacheDataset
from chestaid.data.images import read_grey, resize_square
from chestaid.core.errors import ChestaidError


@pytest.fixture()
def broken_root(nih_root, tmp_path):
    """The synthetic NIH folder with a zero-byte, a truncated and a text '.png', and one 16-bit PNG."""
    root = tmp_path / "nih"
    shutil.copytree(nih_root, root)
    files = sorted((root / "images_001" / "images").iterdir())
    files[0].write_bytes(b"")
    files[1].write_bytes(files[1].read_bytes()[:300])
    files[2].write_text("not a png\n")
    deep = read_grey(files[3]).astype(np.uint16) * 257
    Image.fromarray(deep).save(files[3])
    assert Image.open(files[3]).mode.startswith("I")
    return root, files


def test_prepare_skips_bad_files_and_keeps_16bit(broken_root, tmp_path):
    root, files = broken_root
    result = CliRunner().invoke(app, ["prepare", str(root), "--out", str(tmp_path / "cache"), "--size", "32"])
    assert result.exit_code == 0, result.output
    skipped = pd.read_csv(tmp_path / "cache" / "skipped.csv")
    reasons = dict(zip(skipped["file"].map(lambda p: p.split("/")[-1]), skipped["reason"]))
    assert reasons == {files[0].name: "empty file (0 bytes)",
                       files[1].name: reasons[files[1].name],
                       files[2].name: "not a recognised image (expected PNG, JPEG or DICOM)"}
    assert "truncated" in reasons[files[1].name]
    assert "3 file(s) skipped" in result.output
    cache = Cache.open(tmp_path / "cache")
    assert len(cache.table) == 117 and files[3].name in set(cache.table["image_id"])
    row = cache.table.loc[cache.table["image_id"] == files[3].name, "row"].item()
    np.testing.assert_allclose(cache.images[row].astype(int), resize_square(read_grey(files[3]), 32), atol=1)
    assert set(cache.table["split"]) == {"train", "val", "test"}


def test_prepare_exits_1_when_nothing_is_readable(nih_root, tmp_path):
    root = tmp_path / "nih"
    shutil.copytree(nih_root, root)
    for f in root.glob("images_*/images/*.png"):
        f.write_bytes(b"")
    result = CliRunner().invoke(app, ["prepare", str(root), "--out", str(tmp_path / "cache"), "--size", "32"])
    assert result.exit_code == 1 and "no image could be read" in result.output


def test_interrupted_prepare_resumes_without_redoing_work(nih_root, tmp_path):
    out = tmp_path / "cache"
    first = prepare(nih_root, out, size=32, workers=2)
    assert first.decoded_now == 120
    reference = np.load(out / "images.npy").copy()
    # simulate an interruption: the last 50 images were never flushed nor marked done
    done = np.load(out / "done.npy")
    done[70:] = 0
    np.save(out / "done.npy", done)
    images = np.load(out / "images.npy", mmap_mode="r+")
    images[70:] = 0
    images.flush()
    second = prepare(nih_root, out, size=32, workers=2)
    assert second.decoded_now == 50 and second.cached == 120
    np.testing.assert_array_equal(np.load(out / "images.npy"), reference)
    assert prepare(nih_root, out, size=32, workers=2).decoded_now == 0


def test_cache_of_another_size_is_refused(nih_root, tmp_path):
    prepare(nih_root, tmp_path / "cache", size=32, workers=1)
    with pytest.raises(ChestaidError, match="another source or size"):
        prepare(nih_root, tmp_path / "cache", size=48, workers=1)


def test_dataset_returns_uint8_image_patient_vector_and_target(nih_root, tmp_path):
    prepare(nih_root, tmp_path / "cache", size=32, workers=1)
    cache = Cache.open(tmp_path / "cache")
    train = CacheDataset(cache, "train")
    image, tabular, target = train[0]
    assert image.dtype.is_floating_point is False and tuple(image.shape) == (1, 32, 32)
    assert tabular.shape == (3,) and 0 <= tabular.min() and tabular.max() <= 1
    assert target.shape == (14,) and set(target.unique().tolist()) <= {0.0, 1.0}
    rows = train.rows.iloc[:2].copy()
    rows["flip"] = [0, 1]
    flipped = CacheDataset(cache, rows=rows)
    assert np.array_equal(flipped[1][0].numpy()[0], cache.images[rows["row"].iloc[1]][:, ::-1])
    assert len(train) + len(CacheDataset(cache, "val")) + len(CacheDataset(cache, "test")) == 120


def test_cache_records_whether_its_source_is_synthetic(nih_root, tmp_path):
    from chestaid.data.cache import trained_on_synthetic
    from chestaid.data.sources import SYNTHETIC_MARK

    prepare(nih_root, tmp_path / "synthetic", size=32, workers=1)
    assert trained_on_synthetic(tmp_path / "synthetic")
    real = tmp_path / "unmarked"
    shutil.copytree(nih_root, real, ignore=shutil.ignore_patterns(SYNTHETIC_MARK))
    prepare(real, tmp_path / "real", size=32, workers=1)
    assert not trained_on_synthetic(tmp_path / "real") and not trained_on_synthetic(None)
