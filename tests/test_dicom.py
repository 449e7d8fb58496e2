"""Hospital DICOM: the real pydicom-data corpus (68 files: CR, CT, MR, US, NM, SEG; many transfer syntaxes),
chest CR re-encoded in every lossless syntax we decode, PACS folders, colour and multi-frame files, and a
batch that no decoder error can stop."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom import uid
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.data.images import is_dicomdir, looks_like_image, read_grey
from chestaid.core.errors import ImageDecodeError
from chestaid.inference.predictor import Predictor

data_store = pytest.importorskip("data_store", reason="pydicom-data is a test dependency")
CORPUS = Path(data_store.__file__).parent / "data"


def _broken(folder: Path) -> list[Path]:
    """Files a PACS export or a careless copy can hold."""
    rg1 = (CORPUS / "RG1_UNCR.dcm").read_bytes()
    folder.mkdir()
    files = {"cut_half.dcm": rg1[:len(rg1) // 2], "header_only.dcm": rg1[:2000], "empty.dcm": b"",
             "magic_garbage": b"\0" * 128 + b"DICM" + b"\xff" * 500, "text.dcm": b"hello"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def test_every_pydicom_data_file_and_broken_ones_are_scored_or_listed(tiny_run, tmp_path):
    broken = _broken(tmp_path / "broken")
    out = tmp_path / "worklist.csv"
    result = CliRunner().invoke(app, ["predict", str(tiny_run.root), str(CORPUS), str(tmp_path / "broken"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    table = pd.read_csv(out, keep_default_na=False)
    skipped = pd.read_csv(tmp_path / "worklist_skipped.csv")
    refused = pd.read_csv(tmp_path / "worklist_refused.csv", keep_default_na=False)
    name = lambda p: Path(p).name  # noqa: E731
    listed = [name(p) for frame in (table, refused, skipped) for p in frame["file"]]
    assert sorted(listed) == sorted([p.name for p in CORPUS.iterdir()] + [p.name for p in broken])
    for frame in (skipped, refused):
        assert frame["reason"].str.len().gt(0).all() and not frame["reason"].str.contains("Traceback").any()
    decoded = {name(p) for p in table["file"]} | {name(p) for p in refused["file"]}
    # JPEG Lossless (process 14 SV1), JPEG 2000 (lossless and lossy), RLE, colour JPEG 2000 (YBR_RCT/ICT)
    assert {"JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "OBXXXX1A_rle.dcm",
            "US1_J2KR.dcm", "US1_J2KI.dcm", "SC_ybr_full_uncompressed.dcm"} <= decoded
    reasons = skipped.assign(name=skipped["file"].map(name)).set_index("name")["reason"]
    assert "multi-frame" in reasons["emri_small_jpeg_ls_lossless.dcm"]
    assert "not a readable DICOM" in reasons["text.dcm"] and "empty" in reasons["empty.dcm"]
    # every non-chest DICOM is refused by its tags, the tag named; the chest CR is not refused by its tags
    refused_by = refused.assign(name=refused["file"].map(name)).set_index("name")["reason"]
    assert "Modality is MR" in refused_by["MR2_J2KR.dcm"] and "Modality is US" in refused_by["US1_J2KR.dcm"]
    assert "BodyPartExamined is EXTREMITY" in refused_by["RG3_UNCR.dcm"]
    assert "DICOM" not in refused_by.get("RG1_UNCR.dcm", "")
    ranked = set(table["file"].map(name))
    for path in CORPUS.iterdir():  # no non-chest file of the corpus reaches the worklist; tags name the reason
        if not path.name.startswith("RG1_") and path.name not in reasons:
            assert path.name not in ranked and refused_by[path.name].startswith("DICOM "), path.name
    # the lossless pair scores identically, the lossy copy within 0.01
    scored, _ = Predictor.load(tiny_run.root).score_files([CORPUS / f"RG1_{k}.dcm" for k in ("UNCR", "J2KR", "J2KI")])
    np.testing.assert_array_equal(scored[0].risk, scored[1].risk)
    assert np.abs(scored[2].risk - scored[0].risk).max() <= 0.01
    # DICOM results carry the identifiers a PACS user looks a study up by, and say where patient data came from
    rg1 = scored[0].data
    assert rg1.ids["PatientID"] == "9RG1" and rg1.ids["SOPInstanceUID"].startswith("1.3.6.1.4.1.5962")
    assert (rg1.values["sex"], rg1.sources["sex"], rg1.values["view"], rg1.sources["view"]) == ("F", "tag", "PA", "tag")
    assert rg1.sources["age"] == "assumed"
    gate_rows = table if "RG1_UNCR.dcm" in set(table["file"].map(name)) else refused
    row = gate_rows[gate_rows["file"].map(name) == "RG1_UNCR.dcm"].iloc[0]
    assert row["PatientID"] == "9RG1" and row["AccessionNumber"] == "exam Number"


def test_lossless_pairs_decode_to_identical_pixels():
    reference = read_grey(CORPUS / "RG1_UNCR.dcm")
    assert reference.shape == (1955, 1841)
    np.testing.assert_array_equal(read_grey(CORPUS / "RG1_J2KR.dcm"), reference)
    np.testing.assert_array_equal(read_grey(CORPUS / "US1_J2KR.dcm"), read_grey(CORPUS / "US1_UNCR.dcm"))
    assert np.abs(read_grey(CORPUS / "RG1_J2KI.dcm").astype(int) - reference).mean() < 1.0
    # MONOCHROME1: the lungs (air, low stored values after inversion) are darker than the spine
    assert reference[900:1100, 300:500].mean() < reference[900:1100, 870:970].mean()


@pytest.mark.parametrize("syntax", [uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless],
                         ids=lambda s: s.keyword)
def test_chest_cr_reencoded_in_each_lossless_syntax_decodes_identically(syntax, tmp_path):
    ds = pydicom.dcmread(CORPUS / "RG1_UNCR.dcm")
    ds.compress(syntax)
    ds.save_as(tmp_path / "x.dcm")
    assert pydicom.dcmread(tmp_path / "x.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_grey(tmp_path / "x.dcm"), read_grey(CORPUS / "RG1_UNCR.dcm"))


@pytest.mark.peers
@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="Debian's dcmtk is not installed")
@pytest.mark.parametrize("option,syntax", [("+e1", uid.JPEGLosslessSV1), ("+el", uid.JPEGLossless)])
def test_chest_cr_in_jpeg_lossless_from_dcmtk(option, syntax, tmp_path):
    subprocess.run(["dcmcjpeg", option, str(CORPUS / "RG1_UNCR.dcm"), str(tmp_path / "x.dcm")], check=True)
    assert pydicom.dcmread(tmp_path / "x.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_grey(tmp_path / "x.dcm"), read_grey(CORPUS / "RG1_UNCR.dcm"))


def test_decoders_for_every_documented_syntax_are_installed():
    from pydicom.pixels import get_decoder

    for syntax in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
                   uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
                   uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K, uid.RLELossless):
        assert get_decoder(syntax).is_available, syntax.name


def test_colour_palette_and_multiframe(tmp_path):
    assert read_grey(CORPUS / "OBXXXX1A.dcm").shape == (600, 800)  # PALETTE COLOR through its palette
    grey = read_grey(CORPUS / "SC_rgb.dcm")
    assert grey.shape == (100, 100) and grey.dtype == np.uint8 and grey.max() == 255
    ybr, rgb = read_grey(CORPUS / "SC_ybr_full_uncompressed.dcm"), grey
    assert np.abs(ybr.astype(int) - rgb).max() <= 3  # YBR_FULL converted once, not twice
    for name in ("SC_rgb_2frame.dcm", "emri_small_RLE.dcm", "liver.dcm"):
        with pytest.raises(ImageDecodeError, match="multi-frame DICOM"):
            read_grey(CORPUS / name)


def test_a_decoder_raising_anything_does_not_stop_the_batch(tiny_run, nih_root, monkeypatch):
    import chestaid.inference.predictor as predictor_module

    class StrangeDecoderError(Exception):
        pass

    files = sorted((nih_root / "images_001" / "images").glob("*.png"))[:4]
    real = predictor_module.read_grey

    def flaky(path, *args, **kwargs):
        if Path(path) == files[1]:
            raise StrangeDecoderError("codec exploded")
        if Path(path) == files[2]:
            raise NotImplementedError("YBR_ICT")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "read_grey", flaky)
    scored, failed = Predictor.load(tiny_run.root).score_files(files)
    assert [s.path for s in scored] == [str(files[0]), str(files[3])]
    assert dict(failed) == {str(files[1]): "cannot be decoded (StrangeDecoderError: codec exploded)",
                            str(files[2]): "cannot be decoded (NotImplementedError: YBR_ICT)"}


def _pacs_export(folder: Path, pixels: list[np.ndarray]) -> None:
    """A real DICOMDIR file-set (pydicom.fileset): extension-less files in PT*/ST*/SE*/IM* folders."""
    from pydicom.fileset import FileSet

    from test_images import _dicom

    fs = FileSet()
    for k, image in enumerate(pixels):
        path = folder.parent / f"src{k}.dcm"
        _dicom(path, image, "MONOCHROME2", PatientID=f"P{k}", PatientName=f"Test^{k}", StudyInstanceUID=f"1.2.3.{k}",
               SeriesInstanceUID=f"1.2.3.{k}.1", Modality="DX", StudyDate="20260101", StudyTime="120000",
               AccessionNumber=f"A{k}", StudyID="1", SeriesNumber="1", InstanceNumber="1",
               SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1", SOPInstanceUID=f"1.2.3.{k}.1.1", PatientAge="055Y")
        fs.add(path)
    fs.write(folder)


def test_pacs_folder_with_extensionless_files_and_dicomdir(ungated_run, nih_root, tmp_path):
    pngs = sorted((nih_root / "images_001" / "images").glob("*.png"))[:3]
    _pacs_export(tmp_path / "export", [read_grey(p).astype(np.uint16) * 16 for p in pngs])
    files = [p for p in (tmp_path / "export").rglob("*") if p.is_file()]
    images = [p for p in files if p.name != "DICOMDIR"]
    assert len(images) == 3 and all(p.suffix == "" for p in images)
    assert is_dicomdir(tmp_path / "export" / "DICOMDIR") and not looks_like_image(tmp_path / "export" / "DICOMDIR")
    out = tmp_path / "worklist.csv"
    result = CliRunner().invoke(app, ["predict", str(ungated_run.root), str(tmp_path / "export"), "--out", str(out),
                                      "--cam", str(tmp_path / "cams"), "--age", "30"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 3  # the index file is passed over, and listed as such
    skipped = pd.read_csv(tmp_path / "worklist_skipped.csv")
    assert [Path(f).name for f in skipped["file"]] == ["DICOMDIR"] and "DICOMDIR" in skipped["reason"][0]
    assert sorted(table["AccessionNumber"]) == ["A0", "A1", "A2"]
    assert (table["age"] == 55).all() and (table["age_source"] == "tag").all()  # --age never overrides a tag
    assert (table["sex_source"] == "assumed").all()
    for row in table.itertuples():  # heat maps mirror the PACS tree
        relative = Path(row.file).relative_to(tmp_path / "export")
        assert Path(row.heat_map).parent == tmp_path / "cams" / "export" / relative.parent


def test_same_named_files_of_two_studies_get_their_own_heat_maps(ungated_run, nih_root, tmp_path):
    from chestaid.explain.gradcam import CamExplainer, overlay

    pngs = sorted((nih_root / "images_001" / "images").glob("*.png"))[:2]
    for study, png in zip(("study_a", "study_b"), pngs):
        (tmp_path / "in" / study).mkdir(parents=True)
        shutil.copy(png, tmp_path / "in" / study / "IM-0001.png")
    out = tmp_path / "worklist.csv"
    result = CliRunner().invoke(app, ["predict", str(ungated_run.root), str(tmp_path / "in" / "study_a"),
                                      str(tmp_path / "in" / "study_b"), "--out", str(out), "--cam",
                                      str(tmp_path / "cams"), "--cam-finding", "Effusion"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table["heat_map"].nunique() == 2
    from PIL import Image

    predictor = Predictor.load(ungated_run.root)
    explainer = CamExplainer(predictor)
    effusion = predictor.task.labels.index("Effusion")
    expected = {}
    for row in table.itertuples():
        assert Path(row.heat_map) == tmp_path / "cams" / Path(row.file).parent.name / "IM-0001_Effusion.png"
        scored, _ = predictor.score_files([row.file], keep_images=True)
        cam = explainer.maps(scored[0].image[None], scored[0].tabular[None], [effusion])[0]
        expected[row.heat_map] = overlay(scored[0].image, cam).astype(np.int16)
    # predict makes maps in batches, this test one at a time: oneDNN may pick other kernels per batch size
    # (AVX-512/AMX CPUs), so the overlays agree within a few grey levels rather than bit for bit. Each saved
    # map must still be far closer to its own image's map than to the other study's.
    for own, other in (tuple(expected), tuple(expected)[::-1]):
        saved = np.asarray(Image.open(own)).astype(np.int16)
        to_own = np.abs(saved - expected[own])
        to_other = np.abs(saved - expected[other]).mean()
        assert to_own.max() <= 16 and to_own.mean() <= 0.5, (to_own.max(), to_own.mean())
        assert to_own.mean() < 0.05 * to_other, (to_own.mean(), to_other)


def test_heat_maps_only_for_the_rows_asked_for(ungated_run, nih_root, tmp_path):
    files = sorted((nih_root / "images_001" / "images").glob("*.png"))[:5]
    out = tmp_path / "worklist.csv"
    result = CliRunner().invoke(app, ["predict", str(ungated_run.root), *map(str, files), "--out", str(out),
                                      "--cam", str(tmp_path / "cams"), "--cam-rows", "2"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["heat_map"] != "") == [True, True, False, False, False]
    assert len(list((tmp_path / "cams").glob("*.png"))) == 2
    bad = CliRunner().invoke(app, ["predict", str(ungated_run.root), str(files[0]), "--cam-rows", "some"])
    assert bad.exit_code == 2 and "--cam-rows must be" in bad.output
