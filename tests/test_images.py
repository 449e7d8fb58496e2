"""The one safe decoder: every supported kind decodes to uint8 grey; every bad file raises one clear error."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from chestaid.data.images import read_grey, resize_square, to_uint8
from chestaid.core.errors import ImageDecodeError

RAMP = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # 64×64 horizontal ramp


def test_png_8bit_grey_rgb_rgba_and_jpeg(tmp_path):
    Image.fromarray(RAMP).save(tmp_path / "g.png")
    Image.fromarray(np.stack([RAMP] * 3, -1)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([RAMP] * 3 + [np.full_like(RAMP, 128)])).save(tmp_path / "rgba.png")
    Image.fromarray(RAMP).save(tmp_path / "g.jpeg", quality=95)
    for name in ("g.png", "rgb.png", "rgba.png"):
        out = read_grey(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (64, 64)
        np.testing.assert_array_equal(out, RAMP)
    assert np.abs(read_grey(tmp_path / "g.jpeg").astype(int) - RAMP).max() <= 6


def test_png_16bit_uses_full_range(tmp_path):
    values = (np.tile(np.linspace(0, 4095, 64), (64, 1))).astype(np.uint16)  # 12-bit data in a 16-bit PNG
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = read_grey(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)


def _dicom(path, pixels: np.ndarray, photometric: str, **extra) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_voi_window_and_monochrome1(tmp_path):
    pixels = np.tile(np.linspace(0, 4000, 64), (64, 1)).astype(np.uint16)
    _dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2")
    _dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    _dicom(tmp_path / "win.dcm", pixels, "MONOCHROME2", WindowCenter=1000, WindowWidth=1000)
    m2, m1, win = (read_grey(tmp_path / n) for n in ("m2.dcm", "m1.dcm", "win.dcm"))
    assert m2[0, 0] == 0 and m2[0, -1] == 255
    np.testing.assert_array_equal(m1, 255 - m2)  # MONOCHROME1: high values are dark
    # the window 500..1500 saturates: everything above 1500 is white, below 500 black
    assert win[0, -1] == 255 and win[0, 0] == 0
    assert (win[0] == 255).sum() > 30 and (win[0] == 0).sum() >= 7


def _png_with_size(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, content, reason", [
    ("empty.png", b"", "empty file"),
    ("text.png", b"this is not an image at all\n" * 20, "not a recognised image"),
    ("bomb.png", _png_with_size(60_000, 60_000), "decompression bomb"),
    ("sliver.png", _png_with_size(4, 3000), "too small or too elongated"),
    ("fake.dcm", b"\0" * 128 + b"DICM" + b"garbage" * 10, "DICOM"),
])
def test_bad_files_raise_one_clear_error(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageDecodeError) as info:
        read_grey(tmp_path / name)
    assert reason in info.value.reason and name in str(info.value)


def test_truncated_png_and_missing_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        read_grey(tmp_path / "cut.png")
    with pytest.raises(ImageDecodeError, match="file not found"):
        read_grey(tmp_path / "nope.png")
    with pytest.raises(ImageDecodeError, match="folder"):
        read_grey(tmp_path)


def test_resize_square_and_to_uint8():
    big = np.tile(np.arange(512, dtype=np.uint16) // 2, (512, 1)).astype(np.uint8)
    small = resize_square(big, 64)
    assert small.shape == (64, 64) and small.dtype == np.uint8
    assert abs(int(small[0, 32]) - int(big[0, 256])) <= 4
    assert to_uint8(np.full((4, 4), 7.0)).max() == 0
