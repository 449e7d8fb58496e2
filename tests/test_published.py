"""Published weights as whole runs (`weights import-xrv … --as-run`): a torchxrayvision DenseNet-121 saved the way
torchxrayvision saves its files (a pickled module, under its registry's file name) and a CheXNet-style state dict
(`module.densenet121.` prefix, old `norm.1` names, Linear + Sigmoid head) score as their own libraries score
them; a hospital then gates the run on its own images, calibrates it on a labelled local cohort and serves it,
and every output says "uncalibrated score" until it has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import skimage.io
import torch
import torchvision
import torchxrayvision as xrv
from PIL import Image
from typer.testing import CliRunner

import chestaid
from chestaid.apps.cli import app
from chestaid.core.errors import ChestaidError
from chestaid.core.manifest import read_manifest
from chestaid.core.run_paths import RunPaths
from chestaid.core.tasks import NIH_FINDINGS
from chestaid.models.published import CHEXNET_ORDER

XRV_NIH_FILE = "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"  # the name torchxrayvision downloads
XRV_RSNA_FILE = "kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "chestaid" / "configs"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def with_statistics(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """BatchNorm statistics estimated on images in the model's own input range, as any trained model's are
    (with the defaults, random features run into the thousands and every logit saturates)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(images)
    return model.eval()


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[Path]:
    """20 grey 8-bit PNGs at the models' input size (224 px)."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(20):
        yy, xx = np.mgrid[:224, :224]
        image = 110 + 60 * np.sin(xx / (9 + i)) * np.cos(yy / 13) + rng.normal(0, 25, (224, 224))
        paths.append(folder / f"img{i:02d}.png")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def xrv_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None)
    grey = (np.random.default_rng(1).random((6, 224, 224)) * 255).astype(np.float32)
    model = with_statistics(model, torch.from_numpy(xrv.datasets.normalize(grey, 255))[:, None])
    path = tmp_path_factory.mktemp("xrv") / XRV_NIH_FILE
    torch.save(model, path)  # torchxrayvision's format: the whole module, pickled
    return path, model


@pytest.fixture(scope="module")
def xrv_run(xrv_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "xrv-nih"
    result = invoke("weights", "import-xrv", xrv_file[0], "--as-run", out, "--trust-pickle")
    assert result.exit_code == 0, result.output
    return out


def xrv_logits(model: torch.nn.Module, path: Path) -> np.ndarray:
    """torchxrayvision's own preparation (its README's): read, scale to [-1024, 1024], centre crop, resize to
    224 with skimage; its raw outputs (no sigmoid, no op_norm)."""
    image = xrv.datasets.normalize(skimage.io.imread(path).astype(np.float32), 255)[None]
    image = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(image))
    with torch.no_grad():
        return model(torch.from_numpy(image)[None]).numpy()[0]


def chestaid_logits(run: Path, paths: list[Path]) -> np.ndarray:
    scored, failed = chestaid.load(run, backend="torch").score_files(paths)
    assert not failed
    return np.stack([s.logits for s in scored])


def test_a_torchxrayvision_file_becomes_a_run_that_scores_as_torchxrayvision(xrv_file, xrv_run, pngs):
    _, model = xrv_file
    manifest = read_manifest(RunPaths(xrv_run).manifest)
    imported = manifest.extra["imported"]
    assert imported["registry_name"] == "nih" and imported["datasets"] == ["NIH ChestX-ray14"]
    assert imported["sha256"] == manifest.weights["start_sha256"] and imported["input_resolution"] == 224
    assert imported["scores_at_import"] == "uncalibrated" and not (Path(xrv_run) / "checkpoints").exists()
    rows = [model.targets.index(name) for name in NIH_FINDINGS]  # by name: theirs and ours order differ
    assert [imported["outputs"][n]["index"] for n in NIH_FINDINGS] == rows
    ours = chestaid_logits(xrv_run, pngs)
    theirs = np.stack([xrv_logits(model, p) for p in pngs])[:, rows]
    assert np.abs(theirs).mean() > 0.05 and theirs.std(0).mean() > 0.01  # not a trivially small comparison
    assert np.abs(ours - theirs).max() <= 1e-5
    # nothing pickled is kept: the run holds safetensors only
    assert not [p for p in Path(xrv_run).rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".ckpt")]


def test_a_state_dict_needs_no_consent_and_its_order_comes_from_labels(xrv_file, pngs, tmp_path):
    _, model = xrv_file
    torch.save(model.state_dict(), tmp_path / "mine.pt")  # tensors only, a name torchxrayvision does not know
    result = invoke("weights", "import-xrv", tmp_path / "mine.pt", "--as-run", tmp_path / "run")
    assert result.exit_code == 2 and "does not say which finding each of its 18 outputs is" in result.output
    order = ",".join(name if i < 14 else "" for i, name in enumerate(model.targets))  # 4 outputs never trained
    result = invoke("weights", "import-xrv", tmp_path / "mine.pt", "--as-run", tmp_path / "run", "--labels", order,
                    "--task", "Effusion,Pneumothorax")
    assert result.exit_code == 0, result.output
    ours = chestaid_logits(tmp_path / "run", pngs[:5])
    theirs = np.stack([xrv_logits(model, p) for p in pngs[:5]])[:, [7, 3]]
    assert np.abs(ours - theirs).max() <= 1e-5


def chexnet_like(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """arnoweng/CheXNet's layout: DenseNet121 wrapper, classifier Linear(1024, 14) + Sigmoid, saved under
    DataParallel (`module.`) by an old torchvision (`norm.1` names), in a checkpoint dict."""
    class DenseNet121(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.densenet121 = torchvision.models.densenet121(weights=None)
            self.densenet121.classifier = torch.nn.Sequential(torch.nn.Linear(1024, 14), torch.nn.Sigmoid())

    torch.manual_seed(3)
    wrapper = DenseNet121()
    from chestaid.data.augment import eval_transform

    grey = torch.from_numpy((np.random.default_rng(2).random((6, 1, 224, 224)) * 255).astype(np.uint8))
    with_statistics(wrapper.densenet121, eval_transform(grey, 224, crop=1.0))
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", f"module.{k}"): v
           for k, v in wrapper.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in old
    path = tmp_path / "m-25012018-123527.pth.tar"
    torch.save({"epoch": 7, "state_dict": old, "best_loss": 0.15}, path)
    return path, wrapper.densenet121.eval()


def test_a_chexnet_state_dict_scores_as_torchvision_with_its_head(pngs, tmp_path):
    path, densenet = chexnet_like(tmp_path)
    result = invoke("weights", "import", path, "--as-run", tmp_path / "chexnet", "--labels", "chexnet")
    assert result.exit_code == 0, result.output
    from chestaid.data.augment import eval_transform

    grey = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in pngs]))[:, None]
    with torch.no_grad():  # torchvision's DenseNet-121 up to its Linear layer (CheXNet's Sigmoid left out)
        theirs = densenet.classifier[0](torch.flatten(torch.nn.functional.adaptive_avg_pool2d(
            torch.relu(densenet.features(eval_transform(grey, 224, crop=1.0))), 1), 1)).numpy()
    rows = [CHEXNET_ORDER.index(n) for n in NIH_FINDINGS]
    assert np.abs(chestaid_logits(tmp_path / "chexnet", pngs) - theirs[:, rows]).max() <= 1e-5
    result = invoke("weights", "import", path, "--as-run", tmp_path / "pneumonia", "--labels", "chexnet",
                    "--task", "pneumonia")
    assert result.exit_code == 0, result.output
    assert chestaid.load(tmp_path / "pneumonia").task.labels == ("Pneumonia",)
    assert np.abs(chestaid_logits(tmp_path / "pneumonia", pngs[:3])[:, 0] - theirs[:3, 6]).max() <= 1e-5


def test_what_cannot_be_imported_is_one_line_naming_it(xrv_file, tmp_path):
    path, model = xrv_file
    def fails(*args: str) -> str:
        result = invoke("weights", "import-xrv", *args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        return result.output

    assert "pickled model; unpickling runs code" in fails(path, "--as-run", tmp_path / "a")
    rsna = tmp_path / XRV_RSNA_FILE  # torchxrayvision's RSNA model learned Pneumonia and Lung Opacity only
    torch.save(model, rsna)
    said = fails(rsna, "--as-run", tmp_path / "b", "--trust-pickle", "--task", "nih")
    assert "never learned Atelectasis" in said and "they cover: Pneumonia, Lung Opacity" in said
    assert "choose the run's findings with --task" in fails(rsna, "--as-run", tmp_path / "b", "--trust-pickle")
    state = model.state_dict()
    state["features.denseblock3.denselayer5.conv2.weight"] = torch.zeros(32, 128, 1, 1)
    torch.save(state, tmp_path / "wrong.pt")
    assert "features.denseblock3.denselayer5.conv2.weight has shape (32, 128, 1, 1)" in fails(
        tmp_path / "wrong.pt", "--as-run", tmp_path / "c", "--labels", ",".join(model.targets))
    torch.save(model.state_dict(), tmp_path / "right.pt")
    assert "names 3 outputs, its classifier has 18" in fails(
        tmp_path / "right.pt", "--as-run", tmp_path / "c", "--labels", "A,B,C")
    hidden = {**model.state_dict(), "classifier.weight": torch.zeros(64, 1024), "extra.weight": torch.zeros(18, 64)}
    torch.save(hidden, tmp_path / "hidden.pt")
    assert "one Linear layer over the 1024 pooled features" in fails(
        tmp_path / "hidden.pt", "--as-run", tmp_path / "d", "--labels", ",".join(model.targets))
    torch.save(torchvision.models.vgg11().state_dict(), tmp_path / "vgg.pt")
    assert "not a network chestaid can take" in fails(tmp_path / "vgg.pt", "--as-run", tmp_path / "e",
                                                      "--labels", "chexnet")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert "already exists" in fails(path, "--as-run", tmp_path / "taken", "--trust-pickle")
    assert "no such file, nor a torchxrayvision weights name" in fails("densenet121-res224-nowhere", "--as-run",
                                                                       tmp_path / "f")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # no half-written run is left


def test_a_torchxrayvision_resnet50_at_512_px_imports_too(tmp_path):
    torch.manual_seed(5)
    net = torchvision.models.resnet50(num_classes=18)
    net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    grey = (np.random.default_rng(3).random((4, 512, 512)) * 255).astype(np.float32)
    with_statistics(net, torch.from_numpy(xrv.datasets.normalize(grey, 255))[:, None])
    path = tmp_path / "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt"  # torchxrayvision's: a state dict
    torch.save(net.state_dict(), path)
    result = invoke("weights", "import-xrv", path, "--as-run", tmp_path / "r50", "--task", "Pneumothorax,Effusion")
    assert result.exit_code == 0, result.output
    predictor = chestaid.load(tmp_path / "r50", backend="torch")
    assert predictor.cfg.model.backbone == "resnet50" and predictor.image_size == 512
    image = tmp_path / "big.png"
    Image.fromarray(np.clip(np.random.default_rng(4).normal(120, 40, (512, 512)), 0, 255).astype(np.uint8)).save(image)
    theirs = xrv_logits_at(net, image, 512)[[3, 7]]
    assert np.abs(chestaid_logits(tmp_path / "r50", [image])[0] - theirs).max() <= 1e-5


def xrv_logits_at(net: torch.nn.Module, path: Path, size: int) -> np.ndarray:
    image = xrv.datasets.normalize(skimage.io.imread(path).astype(np.float32), 255)[None]
    image = xrv.datasets.XRayResizer(size)(xrv.datasets.XRayCenterCrop()(image))
    with torch.no_grad():
        return net(torch.from_numpy(image)[None]).numpy()[0]


@pytest.mark.peers
def test_deploy_without_a_training_set_gate_calibrate_serve_node_predict(xrv_file, nih_root, pngs, tmp_path):
    """Imported → gate fit on unlabelled local images → calibrate --cohort on a labelled local cohort; each
    output says "uncalibrated score" before and "calibrated risk score" after."""
    import shutil

    run = tmp_path / "deployed"
    assert invoke("weights", "import-xrv", xrv_file[0], "--as-run", run, "--trust-pickle").exit_code == 0
    card = (run / "model_card.md").read_text()
    assert "**Imported, not trained by chestaid**" in card.split("## Intended use")[0]
    assert "NIH ChestX-ray14" in card and "**uncalibrated**" in card.split("## Intended use")[0]
    result = invoke("predict", run, pngs[0], pngs[1], "--out", tmp_path / "before.csv")
    assert result.exit_code == 0 and "sorted by uncalibrated score" in result.output
    assert set(pd.read_csv(tmp_path / "before.csv")["score"]) == {"uncalibrated score"}
    from chestaid.apps.node.node import algorithm_of
    from chestaid.apps.node.results import make_sr
    from node_helpers import phantom

    source = pydicom.dcmread(phantom(tmp_path / "cr.dcm", "1.2.826.0.1.3680043.8.498.1", 1))
    labels = list(NIH_FINDINGS)
    sr = str(make_sr(source, algorithm_of(run), labels, np.full(14, 0.3), np.zeros(14, bool),
                     {n: 0.5 for n in labels}))
    assert "Uncalibrated score, not a risk or probability" in sr and "Calibrated risk" not in sr
    # the gate: refused on too few images to promise its rate, fitted on enough
    few = tmp_path / "few"
    few.mkdir()
    for p in pngs[:10]:
        shutil.copy(p, few / p.name)
    result = invoke("gate", "fit", run, "--images", few, "--percentile", "95")
    assert result.exit_code == 2 and "10 usable images; a 95th-percentile gate needs at least 38" in result.output
    result = invoke("gate", "fit", run, "--images", nih_root, "--percentile", "95")
    assert result.exit_code == 0, result.output
    gate = chestaid.load(run).gate
    assert gate is not None and gate.info["fit_split"].startswith("local images")
    assert gate.info["train_images"] + gate.info["val_images"] == 120
    result = invoke("calibrate", run, "--cohort", nih_root)
    assert result.exit_code == 0, result.output
    assert chestaid.load(run).gate.info["fit_split"].startswith("local images")  # calibrate kept gate fit's gate
    card = (run / "model_card.md").read_text()
    assert "calibrated on 120 local cases" in card.split("## Intended use")[0]
    assert "calibrated risk scores, not clinical" in card
    local = sorted(nih_root.rglob("*.png"))[:2]  # like the images the gate was fitted on (the pngs are not)
    result = invoke("predict", run, *local, "--out", tmp_path / "after.csv")
    assert result.exit_code == 0 and "sorted by calibrated risk score" in result.output
    assert set(pd.read_csv(tmp_path / "after.csv")["score"]) == {"calibrated risk score"}
    decoded = json.loads((run / "calibration.json").read_text())["cohort_cache"]
    assert not Path(decoded).is_relative_to(run)  # local cases are decoded outside the run
    result = invoke("evaluate", run, "--data", decoded)  # the cohort it was calibrated on: refused
    assert result.exit_code == 2 and "calibrated on this cohort" in result.output
    from test_node import settled, start_node, wait_for
    from node_helpers import dcmsend, phantoms

    node = start_node(RunPaths(run), tmp_path / "store")
    try:
        _, report = dcmsend(node.port, phantoms(tmp_path / "in", 2, seed=4))
        assert len(report["ok"]) == 2, report["text"]
        wait_for(lambda: settled(tmp_path / "store", False), what="scored")
        assert {r["state"] for r in node.store.instances()} <= {"scored", "refused"}
    finally:
        node.stop()
    srs = [pydicom.dcmread(p) for p in (tmp_path / "store" / "results").rglob("*.dcm")]
    texts = [json.dumps(o.to_json_dict()) for o in srs if o.Modality == "SR"]
    assert len(texts) == 2 and all(f"run={run.name}" in t for t in texts)
    assert any("Calibrated risk score, not a probability" in t for t in texts) or all(
        "Reason the image was not analysed" in t for t in texts)
    from serving import free_port, serve_command, serving
    from gradio_client import Client, handle_file

    port = free_port()
    with serving(serve_command(run, port), port) as url:
        answer = Client(url, verbose=False).predict(handle_file(str(local[0])), None, "unknown", "unknown",
                                                    api_name="/score")
        page = __import__("urllib.request").request.urlopen(url, timeout=30).read().decode()
    assert answer["run"] == "deployed" and answer["calibrated"] and answer["score"] == "calibrated risk score"
    assert "Imported, not trained by chestaid" in page


@pytest.mark.trains
def test_fine_tuning_an_imported_run_records_its_lineage(xrv_run, nih_cache, tmp_path):
    from chestaid.core.config import load_config
    from chestaid.workflows.train import train

    cfg = load_config(CONFIGS / "demo.yaml", ["data.image_size=64", "data.batch_size=16", "train.epochs=1",
                                              "train.limit_train_batches=2", f"model.weights={xrv_run}"])
    paths = train(cfg, nih_cache, tmp_path / "tuned")
    parent = read_manifest(paths.manifest).weights["parent"]
    assert parent["run"] == "xrv-nih" and parent["imported"] == XRV_NIH_FILE
    assert parent["model_sha256"] == read_manifest(RunPaths(xrv_run).manifest).weights["model_sha256"]
    assert "imported from `" + XRV_NIH_FILE in paths.model_card.read_text()


def test_a_missing_weights_name_without_the_internet_is_one_line(tmp_path, monkeypatch):
    """A torchxrayvision name is downloaded by torchxrayvision; without the internet that is one line."""
    import torchxrayvision.models as models

    def offline(*args, **kwargs):
        raise ConnectionError("no route to github.com")

    monkeypatch.setattr(models, "get_weights", offline)
    with pytest.raises(ChestaidError, match="densenet121-res224-chex: torchxrayvision could not fetch its weights"):
        chestaid.import_model("densenet121-res224-chex", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_calibrating_an_imported_run_without_gate_fit_says_why_it_has_no_gate(xrv_run, nih_root, tmp_path):
    """A cohort of 120 leaves 60 held-out images, fewer than a 99th-percentile threshold needs: no gate is
    promised, and the card points to `gate fit`."""
    import shutil

    run = shutil.copytree(xrv_run, tmp_path / "run")
    result = chestaid.calibrate(run, nih_root)
    assert result["gate"]["fitted"] is False and "gate fit" in result["gate"]["note"]
    assert not RunPaths(run).gate.exists()
    assert "`chestaid gate fit RUN --images DIR` fits one on local images" in (run / "model_card.md").read_text()
