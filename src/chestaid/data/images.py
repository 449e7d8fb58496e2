"""The one safe image decoder: PNG (8/16-bit; grey, RGB, RGBA), JPEG and DICOM to 2-D uint8 grey.

Every failure raises `ImageDecodeError(path, reason)`; batch callers catch it, report it and go on.

The intensity path, the same for every file a model sees (cache, `predict`, the page, the API):
- DICOM, grey (MONOCHROME1/2): stored values → Modality LUT (RescaleSlope/Intercept or a Modality LUT
  Sequence) → VOI LUT Sequence, else the first WindowCenter/WindowWidth, else nothing → min–max to 0–255 →
  MONOCHROME1 inverted (so bone is always bright, as in the NIH PNGs).
- DICOM, colour (RGB; YBR_* is converted to RGB by pydicom; PALETTE COLOR through its palette): luminance
  0.299 R + 0.587 G + 0.114 B over the stored range (BitsStored; a palette's 16-bit entries), as Pillow does
  for an 8-bit RGB PNG. Chest radiographs are grey; colour files (secondary captures, screenshots) are read,
  and the input gate decides whether to score them.
- DICOM, several frames: refused (a radiograph is one frame; a cine loop or a volume is not a chest X-ray).
- PNG/JPEG, 8-bit: as stored; RGB(A) to luminance, alpha dropped. 16-bit PNG: min–max to 0–255, as a window
  over the full stored range.
Compressed DICOM is decoded by pydicom's pixel-data plugins: see README "DICOM support" for the syntaxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from chestaid.core.errors import ChestaidError, ImageDecodeError, describe

MAX_PIXELS = 60_000_000  # 7,700² — far above any chest X-ray; larger is treated as a decompression bomb
MIN_SIDE = 16
MAX_ASPECT = 8.0
DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", *DICOM_SUFFIXES}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: an index, not an image


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


def is_dicomdir(path: str | Path) -> bool:
    """A DICOMDIR index file of a PACS export or CD (by name or by its SOP class): not an image."""
    path = Path(path)
    if path.name.upper() == "DICOMDIR":
        return True
    if not is_dicom(path):
        return False
    from pydicom.filereader import read_file_meta_info

    try:
        return str(read_file_meta_info(path).get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS
    except Exception:  # noqa: BLE001 - an unreadable header is for the decoder to report
        return False


def looks_like_image(path: str | Path) -> bool:
    """What a folder search takes: PNG/JPEG/DICOM suffixes, or DICOM by content (PACS files often have no
    suffix), never a DICOMDIR index."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        try:
            with open(path, "rb") as f:
                if f.read(132)[128:132] != b"DICM":
                    return False
        except OSError:
            return False
    return not is_dicomdir(path)


def read_grey(path: str | Path, draft_size: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to a 2-D uint8 array (0 = black).

    `draft_size` lets JPEG decoding skip resolution that a later resize to that size would drop.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except FileNotFoundError as exc:
        raise ImageDecodeError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(path, "is a folder, not an image file") from exc
    except OSError as e:
        raise ImageDecodeError(path, f"cannot be opened ({e.strerror or e})") from e
    if not head:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    if _dicom_by_name_or_magic(path, head):
        return _read_dicom(path, max_pixels)
    return _read_pil(path, draft_size, max_pixels)


def image_shape(path: str | Path) -> tuple[int, int] | None:
    """(height, width) of an image file from its header alone (DICOM Rows/Columns, or Pillow's lazy open), or
    None when it cannot be read; what a resize to the model's size started from (e.g. to scale boxes)."""
    path = Path(path)
    try:
        if is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return int(ds.Rows), int(ds.Columns)
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except Exception:  # noqa: BLE001 - unreadable means "no shape"; the decoder says why when it is read
        return None


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(path, f"image is {width}x{height} pixels, over the limit of {max_pixels:,} "
                                     "(possible decompression bomb)")
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageDecodeError(path, f"image is {width}x{height} pixels: too small or too elongated "
                                     "to be a chest X-ray")


def _read_pil(path: Path, draft_size: int | None, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(path) as img:  # Pillow's own warnings reach the caller's filters (no global state here)
            _check_size(path, *img.size, max_pixels)
            if draft_size and img.format == "JPEG":
                img.draft("L", (draft_size, draft_size))
            img.load()
            return _pil_to_grey(img)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not a recognised image (expected PNG, JPEG or DICOM)") from exc
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(path, f"possible decompression bomb ({e})") from e
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(path, f"truncated or corrupt image data ({e})") from e


def _pil_to_grey(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return to_uint8(np.asarray(img, dtype=np.float32))
    if img.mode in ("LA", "RGBA", "PA"):
        img = img.convert("RGBA").convert("RGB")  # alpha is dropped; X-ray PNGs carry no meaning in it
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def array_to_grey(values: np.ndarray, where: str = "array") -> np.ndarray:
    """A 2-D numeric array as a uint8 grey image: uint8 unchanged, anything else min-max scaled (raises
    ChestaidError naming `where` for other shapes, non-numeric or non-finite values)."""
    values = np.asarray(values)
    if values.ndim != 2 or min(values.shape) < 2:
        raise ChestaidError(f"{where}: expected a 2-D grey image (height × width), got shape {values.shape}")
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ChestaidError(f"{where}: expected numbers, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise ChestaidError(f"{where}: holds NaN or infinite values")
    return to_uint8(values)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array to uint8 (a constant image becomes all zeros)."""
    values = values.astype(np.float32, copy=False)
    lo, hi = float(np.min(values)), float(np.max(values))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _read_dicom(path: Path, max_pixels: int) -> np.ndarray:
    from pydicom.errors import InvalidDicomError

    try:
        ds = _dcmread(path)
    except InvalidDicomError as exc:
        raise ImageDecodeError(path, "not a readable DICOM file (no DICOM header, and no image without one)") from exc
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad file, never a crash
        raise ImageDecodeError(path, f"not a readable DICOM file ({describe(e)})") from e
    if "PixelData" not in ds:
        what = "a DICOMDIR index" if is_dicomdir(path) else "no PixelData"
        raise ImageDecodeError(path, f"DICOM file holds no image ({what})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageDecodeError(path, f"multi-frame DICOM ({frames} frames): a chest radiograph is a single frame")
    _check_size(path, int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), max_pixels)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        pixels = ds.pixel_array
        return dicom_to_grey(pixels, ds)
    except Exception as e:  # noqa: BLE001 - decoders raise every type for missing codecs and corrupt data
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        raise ImageDecodeError(path, f"DICOM pixel data ({name}) cannot be decoded ({describe(e)})") from e


def _dcmread(path: Path):
    """pydicom's reader; a file without the 128-byte preamble and file meta (older exports) is read as the
    implicit-VR little-endian dataset it then is, but only when it holds an image of known size."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
            raise
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit = ds.original_encoding[0]
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        return ds


def dicom_to_grey(pixels: np.ndarray, ds) -> np.ndarray:
    """One frame's decoded pixels → uint8 grey, by the intensity path in this module's docstring."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    top = 2 ** int(ds.get("BitsStored", 8) or 8) - 1
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)  # the palette's entries: 8 or 16 bits, whatever the indices are
        top = 255 if pixels.dtype == np.uint8 else 65535
    if pixels.ndim == 3:  # RGB (pydicom already turned YBR into RGB)
        rgb = pixels.astype(np.float32) * (255.0 / top)
        luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        return np.clip(np.round(luma), 0, 255).astype(np.uint8)
    if pixels.ndim != 2:
        raise ValueError(f"pixel array of shape {pixels.shape} is not one grey image")
    grey = to_uint8(_apply_luts(pixels, ds))
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
