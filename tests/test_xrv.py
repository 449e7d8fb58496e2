"""Chest-pretrained start: a torchxrayvision DenseNet-121 file, saved the way torchxrayvision saves its weights
(a pickled module), converts into our backbone with its [-1024, 1024] input scaling folded into the first
convolution, so that our features on an image prepared our way equal theirs on the image prepared theirs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import torchxrayvision as xrv
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.data.augment import eval_transform
from chestaid.core.errors import ChestaidError
from chestaid.models.chestnet import ChestNet
from chestaid.models.xrv_import import channel_factors, import_xrv


@pytest.fixture(scope="module")
def xrv_model():
    """A randomly initialised torchxrayvision DenseNet whose BatchNorm statistics were estimated on images in
    its own input range, as any trained model's are (with the defaults, features run into the thousands)."""
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches seen
    images = (np.random.default_rng(1).random((6, 224, 224)) * 255).astype(np.uint8)
    with torch.no_grad():
        model.train().features(torch.from_numpy(xrv.datasets.normalize(images, 255))[:, None])
    return model.eval()


def test_features_equal_torchxrayvision(xrv_model, tmp_path):
    torch.save(xrv_model, tmp_path / "xrv.pt")  # torchxrayvision's own format: the whole module, pickled
    result = CliRunner().invoke(app, ["weights", "import-xrv", str(tmp_path / "xrv.pt"), "--out",
                                      str(tmp_path / "backbone.safetensors"), "--trust-pickle"])
    assert result.exit_code == 0, result.output
    ours = ChestNet(num_outputs=3, fpn=True, tabular=True, weights=str(tmp_path / "backbone.safetensors")).eval()
    phantom = np.clip(np.random.default_rng(2).normal(120, 50, (224, 224)), 0, 255).astype(np.uint8)
    with torch.no_grad():
        our_features = ours.embed(eval_transform(torch.from_numpy(phantom)[None, None], 224, crop=1.0))[1]
        their_features = xrv_model.features2(torch.from_numpy(xrv.datasets.normalize(phantom, 255))[None, None])
    assert their_features.abs().mean() > 0.1  # not a trivially small comparison
    assert (our_features - their_features).abs().max().item() <= 1e-4


def test_the_fold_is_exact_at_the_borders_too():
    """In float64 the first convolution on our 3 normalised channels equals theirs on [-1024, 1024], zero
    padding included: the folded input Σ α_c·x_c is exactly 2048·g − 1024."""
    grey = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    weight = torch.randn(64, 1, 7, 7, dtype=torch.float64)
    alpha = torch.from_numpy(channel_factors()).view(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    ours = torch.nn.functional.conv2d((grey - mean) / std, weight * alpha, stride=2, padding=3)
    theirs = torch.nn.functional.conv2d(2048 * grey - 1024, weight, stride=2, padding=3)
    assert (ours - theirs).abs().max().item() < 1e-8


def test_pickles_need_consent_and_other_models_are_refused(xrv_model, tmp_path):
    torch.save(xrv_model, tmp_path / "xrv.pt")
    with pytest.raises(ChestaidError, match="pickled model; unpickling runs code .* --trust-pickle"):
        import_xrv(tmp_path / "xrv.pt", tmp_path / "out.safetensors")
    torch.save(xrv_model.state_dict(), tmp_path / "state.pt")  # tensors only: no consent needed
    import_xrv(tmp_path / "state.pt", tmp_path / "out.safetensors")
    for other in (torchvision.models.resnet18(), torchvision.models.densenet121()):  # (ImageNet: 3 channels)
        torch.save(other.state_dict(), tmp_path / "other.pt")
        with pytest.raises(ChestaidError, match="not a torchxrayvision DenseNet-121"):
            import_xrv(tmp_path / "other.pt", tmp_path / "out.safetensors")
    with pytest.raises(ChestaidError, match="must be a .safetensors file"):
        import_xrv(tmp_path / "state.pt", tmp_path / "out.pt")
