"""ChestNet: shapes, FPN levels, switches, frozen blocks, weights files."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import densenet121

from chestaid.core.errors import ChestaidError
from chestaid.models.backbone import load_densenet
from chestaid.models.chestnet import ChestNet


@pytest.fixture(scope="module")
def net() -> ChestNet:
    torch.manual_seed(0)
    return ChestNet(num_outputs=14).eval()


@pytest.mark.parametrize("size", [64, 128, 224])
def test_output_and_fpn_level_shapes(net, size):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert net(x, torch.rand(2, 3)).shape == (2, 14)
        levels = net.levels(x)
    assert list(levels) == ["p3", "p4", "p5"]
    assert [tuple(v.shape) for v in levels.values()] == [(2, 256, size // s, size // s) for s in (8, 16, 32)]


def test_backbone_levels_are_the_spec_ones(net):
    with torch.no_grad():
        feats = net.backbone(torch.randn(1, 3, 64, 64))
    assert [(k, v.shape[1], 64 // v.shape[-1]) for k, v in feats.items()] == [
        ("c3", 512, 8), ("c4", 1024, 16), ("c5", 1024, 32)]


def test_tabular_switch_changes_the_head_and_matters(net):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = net(x, torch.zeros(2, 3)), net(x, torch.ones(2, 3))
    assert not torch.allclose(a, b)  # the patient vector reaches the logits
    with pytest.raises(ValueError, match="tabular"):
        net(x)
    plain = ChestNet(num_outputs=1, fpn=False, tabular=False, hidden=()).eval()
    assert plain.tabular is None and not hasattr(plain, "fpn")
    assert plain.head[-1].in_features == 1024  # DenseNet-121 with its classifier replaced by one logit
    with torch.no_grad():
        assert plain(x).shape == (2, 1)


def test_frozen_blocks_do_not_train():
    model = ChestNet(num_outputs=1, fpn=False, tabular=False, freeze=3, hidden=())
    features = model.backbone.features
    for name in ("conv0", "norm0", "denseblock1", "transition1", "denseblock2", "transition2"):
        assert all(not p.requires_grad for p in getattr(features, name).parameters()), name
    assert all(p.requires_grad for p in features.denseblock3.parameters())
    model.train()
    frozen_bn, live_bn = features.norm0, features.denseblock3.denselayer1.norm1
    frozen_before, live_before = frozen_bn.running_mean.clone(), live_bn.running_mean.clone()
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert torch.equal(frozen_before, frozen_bn.running_mean)  # frozen BatchNorm keeps its statistics
    assert not torch.equal(live_before, live_bn.running_mean)


def test_local_weights_file(tmp_path):
    torch.manual_seed(1)
    reference = densenet121(weights=None)
    torch.save(reference.state_dict(), tmp_path / "densenet.pth")
    model = ChestNet(num_outputs=3, weights=str(tmp_path / "densenet.pth"))
    assert torch.equal(model.backbone.features.conv0.weight, reference.features.conv0.weight)
    with pytest.raises(ChestaidError, match="not found"):
        ChestNet(weights=str(tmp_path / "missing.pth"))
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ChestaidError, match="no DenseNet"):
        ChestNet(weights=str(tmp_path / "other.pth"))
    from torchvision.models import resnet18  # another backbone's file: its own key names, no features.*

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
    model = ChestNet(num_outputs=3, weights=str(tmp_path / "resnet.pth"), backbone="resnet18")
    assert torch.equal(model.backbone.layer4.get_submodule("1").conv2.weight,
                       torch.load(tmp_path / "resnet.pth")["layer4.1.conv2.weight"])
    with pytest.raises(ChestaidError, match="holds no ResNet-18 weights"):
        ChestNet(weights=str(tmp_path / "densenet.pth"), backbone="resnet18")


def test_imagenet_weights_load_or_fail_with_one_clear_message():
    try:
        model = load_densenet("imagenet")
    except ChestaidError as e:  # no network here: a one-line message saying what to do
        assert "ImageNet weights" in str(e) and "model.weights" in str(e) and "\n" not in str(e)
    else:
        assert model.features.conv0.weight.abs().sum() > 0


def test_fpn_head_with_c5_and_avgmax_pooling():
    """with_c5 keeps the plain model's pooled c5 beside the projected pyramid; avgmax pools each level by its mean
    and its maximum, so one bright pixel moves the features (a mean over 64 positions hardly does)."""
    torch.manual_seed(0)
    seed = ChestNet(num_outputs=2, hidden=()).eval()
    kept = ChestNet(num_outputs=2, hidden=(), fpn_head="with_c5", pool="avgmax").eval()
    assert seed.head[-1].in_features == 256 + 8 and kept.head[-1].in_features == 256 + 2048 + 8
    assert kept.project[0].in_features == 3 * 256 * 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features, gate = kept.embed(x)
        c5 = torch.relu(kept.backbone(x)["c5"])
    assert torch.allclose(features[:, 256:256 + 1024], c5.mean((2, 3)), atol=1e-5)
    assert torch.allclose(features[:, 256 + 1024:], c5.amax((2, 3)), atol=1e-5)
    assert torch.allclose(gate, c5.mean((2, 3)), atol=1e-5)  # the input gate measures the same features
    with pytest.raises(ValueError, match="fpn_head"):
        ChestNet(fpn_head="other")


def test_cosine_schedule_warms_up_and_ends_at_zero():
    from chestaid.training.module import lr_factor

    factors = [lr_factor(step, warmup=10, total=110) for step in range(111)]
    assert factors[0] == pytest.approx(0.01) and factors[10] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:11]))  # rising during warm-up
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # then falling
    assert factors[60] == pytest.approx(0.5) and factors[110] == pytest.approx(0.0, abs=1e-12)
