"""The one safe image decoder: PNG (8/16-bit; grey, RGB, RGBA), JPEG and DICOM to 2-D uint8 grey.

Every failure raises `ImageDecodeError(path, reason)`; batch callers catch it, report it and go on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from chestaid.errors import ImageDecodeError

MAX_PIXELS = 60_000_000  # 7,700² — far above any chest X-ray; larger is treated as a decompression bomb
MIN_SIDE = 16
MAX_ASPECT = 8.0
DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", *DICOM_SUFFIXES}

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit (MAX_PIXELS) before any pixel is decoded


def _dicom_by_name_or_magic(path: Path, head: bytes) -> bool:
    return head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES


def is_dicom(path: str | Path) -> bool:
    """A .dcm/.dicom name or the DICM magic at byte 128 (files from PACS often have no suffix)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _dicom_by_name_or_magic(path, f.read(132))
    except OSError:
        return False


def read_grey(path: str | Path, draft_size: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to a 2-D uint8 array (0 = black).

    `draft_size` lets JPEG decoding skip resolution that a later resize to that size would drop.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(path, "is a folder, not an image file") from None
    except OSError as e:
        raise ImageDecodeError(path, f"cannot be opened ({e.strerror or e})") from None
    if not head:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    if _dicom_by_name_or_magic(path, head):
        return _read_dicom(path, max_pixels)
    return _read_pil(path, draft_size, max_pixels)


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(path, f"image is {width}x{height} pixels, over the limit of {max_pixels:,} "
                                     "(possible decompression bomb)")
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageDecodeError(path, f"image is {width}x{height} pixels: too small or too elongated "
                                     "to be a chest X-ray")


def _read_pil(path: Path, draft_size: int | None, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                _check_size(path, *img.size, max_pixels)
                if draft_size and img.format == "JPEG":
                    img.draft("L", (draft_size, draft_size))
                img.load()
                return _pil_to_grey(img)
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "not a recognised image (expected PNG, JPEG or DICOM)") from None
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(path, f"possible decompression bomb ({e})") from None
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(path, f"truncated or corrupt image data ({e})") from None


def _pil_to_grey(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return to_uint8(np.asarray(img, dtype=np.float32))
    if img.mode in ("LA", "RGBA", "PA"):
        img = img.convert("RGBA").convert("RGB")  # alpha is dropped; X-ray PNGs carry no meaning in it
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array to uint8 (a constant image becomes all zeros)."""
    values = values.astype(np.float32, copy=False)
    lo, hi = float(np.min(values)), float(np.max(values))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _read_dicom(path: Path, max_pixels: int) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise ImageDecodeError(path, f"not a readable DICOM file ({e})") from None
    if "PixelData" not in ds:
        raise ImageDecodeError(path, "DICOM file holds no image (no PixelData)")
    _check_size(path, int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), max_pixels)
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for missing codecs and corrupt data
        raise ImageDecodeError(path, f"DICOM pixel data cannot be decoded ({e}); compressed files may need "
                                     "'pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg'") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:  # colour DICOM (RGB or YBR): take luminance
        from pydicom.pixels import convert_color_space

        if photometric.startswith("YBR"):
            pixels = convert_color_space(pixels, photometric, "RGB")
        return np.asarray(Image.fromarray(pixels.astype(np.uint8)).convert("L"))
    values = _apply_luts(pixels, ds)
    grey = to_uint8(values)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def _apply_luts(pixels: np.ndarray, ds) -> np.ndarray:
    """Modality LUT (rescale slope/intercept) then VOI LUT or window, as a viewer would show the image."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds)
    return np.asarray(values, dtype=np.float32)


def resize_square(grey: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 grey image to size×size with antialiasing (Lanczos; fast reduction first)."""
    if grey.shape == (size, size):
        return grey
    img = Image.fromarray(grey)
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.uint8)


def dicom_patient_info(path: str | Path) -> dict[str, float | str | None]:
    """Age (years), sex ('M'/'F') and view ('PA'/'AP') from DICOM tags; None where a tag is absent or odd."""
    import re

    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return {"age": None, "sex": None, "view": None}
    match = re.match(r"^(\d{1,3})([YMWD]?)$", str(ds.get("PatientAge", "")).strip().upper())
    age = None
    if match:
        divisor = {"Y": 1, "": 1, "M": 12, "W": 52, "D": 365}[match.group(2)]
        age = min(int(match.group(1)) / divisor, 100.0)
    sex = str(ds.get("PatientSex", "")).strip().upper()[:1]
    view = str(ds.get("ViewPosition", "")).strip().upper()
    return {"age": age, "sex": sex if sex in ("M", "F") else None, "view": view if view in ("PA", "AP") else None}
