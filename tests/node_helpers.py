"""Helpers of tests/test_node.py: phantom chest CR files, DCMTK and Orthanc peers as real processes."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DCMTK = Path("/usr/bin")  # DCMTK's tools, not pynetdicom's apps of the same names earlier on PATH
ORTHANC = Path("/usr/sbin/Orthanc")
CR = "1.2.840.10008.5.1.4.1.1.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def phantom(path: Path, study_uid: str, index: int, size: int = 64, modality: str = "CR", seed: int = 0,
            patient: str = "PHANTOM01") -> Path:
    """A small 12-bit frontal chest CR (a bright mediastinum between two darker lungs, noise)."""
    rng = np.random.default_rng(seed * 100_003 + index)
    y, x = np.mgrid[0:size, 0:size] / size
    lungs = np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) / 0.03) + np.exp(-((x - 0.7) ** 2 + (y - 0.5) ** 2) / 0.03)
    pixels = np.clip(2500 - 1500 * lungs + rng.normal(0, 80, (size, size)), 0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CR, ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[study_uid, str(index), modality])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid(entropy_srcs=[study_uid, "series"])
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "PHANTOM^TEST", patient, "F", "19600101"
    ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = "ACC" + patient[-4:], "1", "20240101", "120000"
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", modality, 1, index + 1
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", "PA", ["L", "F"]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def phantoms(folder: Path, n: int, seed: int = 0, study_uid: str | None = None, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study = study_uid or generate_uid(entropy_srcs=["study", str(seed)])
    return [phantom(folder / f"IM{seed:03d}_{i:04d}.dcm", study, i, size=size, seed=seed) for i in range(n)]


def dcmtk(tool: str, *args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(DCMTK / tool), *map(str, args)], capture_output=True, text=True, check=check,
                          timeout=timeout)


def dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def node_process(run: Path, store: Path, port: int, *args: str, log: Path) -> subprocess.Popen:
    """The node as its own process (`python -m chestaid.apps.node node ...`), listening before this returns."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "chestaid.apps.node", "node", str(run), "--store", str(store),
                                "--port", str(port), *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                               env=env)
    wait_port(port, 120, process)
    return process


class Orthanc:
    """A real Orthanc (Debian's) on free ports, its storage in `folder`, one modality: the node."""

    def __init__(self, folder: Path, node_port: int, node_aet: str = "CHESTAID", extra: dict | None = None) -> None:
        self.folder, self.http, self.dicom = folder, free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = {"Name": "chestaid-test", "StorageDirectory": str(folder / "db"),
                  "IndexDirectory": str(folder / "db"), "HttpPort": self.http, "DicomPort": self.dicom,
                  "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                  "DicomModalities": {"chestaid": [node_aet, "127.0.0.1", node_port]},
                  "DicomCheckCalledAet": False, "Plugins": [], "HttpTimeout": 60, "DicomScuTimeout": 60,
                  "StableAge": 2, "SaveJobs": False, **(extra or {})}
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = (folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        wait_port(self.http, 60, self.process)
        wait_port(self.dicom, 60, self.process)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url(path), timeout=60) as r:
            data = r.read()
        return json.loads(data) if r.headers.get_content_type() == "application/json" else data

    def post(self, path: str, body: bytes, content_type: str = "application/dicom"):
        request = urllib.request.Request(self.url(path), data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=300) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def dcmsend(port: int, files, *args: str, aet: str = "DCMSEND", report: Path | None = None,
            check: bool = True, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    """DCMTK's dcmsend to the node; its detailed report: SOPInstanceUIDs sent with success / failure."""
    import tempfile

    target = report or Path(tempfile.mkstemp(suffix=".txt")[1])
    done = dcmtk("dcmsend", "-aet", aet, "-aec", "CHESTAID", "127.0.0.1", port, "+crf", target, *args, *files,
                 check=check, timeout=timeout)
    return done, read_report(target)


def read_report(path: Path) -> dict:
    text = path.read_text(errors="replace") if path.is_file() else ""
    ok, failed = [], []
    for block in text.split("\n\n"):
        uid = re.search(r"SOP Instance\s*:\s*(\S+)", block)
        status = re.search(r"DIMSE Status\s*:\s*0x([0-9A-Fa-f]{4})", block)
        if uid:
            (ok if status and (status[1] == "0000" or status[1].upper().startswith("B")) else failed).append(uid[1])
    return {"ok": ok, "failed": failed, "text": text}


def grey_cr(pixels: np.ndarray, path: Path, key: str, **attributes) -> str:
    """An 8-bit grey image as a chest CR (PA) of its own study, UIDs derived from `key`; `attributes` (PatientID,
    PatientSex, PatientAge, AccessionNumber, Manufacturer …) override the defaults. Returns its SOPInstanceUID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CR, ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[key, "sop"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[key, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[key, "series"])
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "TEST^PATIENT", "P0001", "M", ""
    ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = "", "1", "20260101", "120000"
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "CR", 1, 1
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", "PA", ["L", "F"]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID
