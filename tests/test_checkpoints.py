from __future__ import annotations

import pytest
import torch
from torch import nn

from lightly_amix.checkpoints import backbone_from_checkpoint, backbone_from_checkpoint_with_report
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.state_dicts import load_state_dict_strict


def test_split_batchnorm_checkpoint_gives_a_plain_backbone() -> None:
    torch.manual_seed(0)
    split = ResNetBackbone("resnet18", bn_splits=4).train()
    shift = torch.arange(4.0).repeat(2).view(8, 1, 1, 1)  # sample i is in part i % 4
    split(torch.randn(8, 3, 32, 32) + shift)  # four parts, four sets of statistics
    model_cfg = {"backbone": "resnet18", "cifar_stem": False, "bn_splits": 4}
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in split.state_dict().items()},
        "hyper_parameters": {"model": model_cfg},
    }

    backbone = backbone_from_checkpoint(ckpt, "backbone.")

    assert backbone.bn_splits == 0
    assert backbone.resnet.bn1.running_mean.shape == (64,)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(backbone.eval()(x), split.eval()(x), atol=1e-5)


def test_checkpoint_without_bn_splits_key_loads_as_before() -> None:
    plain = ResNetBackbone("resnet18")
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in plain.state_dict().items()},
        "hyper_parameters": {"model": {"backbone": "resnet18", "cifar_stem": False}},
    }
    backbone = backbone_from_checkpoint(ckpt)
    assert torch.equal(backbone.resnet.conv1.weight, plain.resnet.conv1.weight)


# --- strict loading -------------------------------------------------------------------------


def _net() -> nn.Module:
    """Ten small linear layers and a BatchNorm: 25 tensors, its counter included."""
    return nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)], nn.BatchNorm1d(2))


def test_strict_load_lists_missing_unexpected_and_wrong_shape_keys() -> None:
    state = _net().state_dict()
    del state["0.weight"], state["0.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        load_state_dict_strict(_net(), state, "run/backbone.pt", expected="a run's backbone.pt")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("run/backbone.pt does not match the model: ")
    assert "2 of its 25 tensors are missing (0.weight, 0.bias)" in message
    assert "1 unexpected key (extra.weight)" in message
    assert (
        "Expected a run's backbone.pt; or pass --allow-partial to load the 23 matching" in message
    )

    state = _net().state_dict()
    state["3.weight"] = torch.zeros(3, 2)
    expected = (
        r"1 tensor of the wrong shape \(3\.weight: \(3, 2\) in the file, \(2, 2\) in the "
        r"model\).*not even with --allow-partial"
    )
    with pytest.raises(ValueError, match=expected):
        load_state_dict_strict(_net(), state, "b.pt", allow_partial=True)


def test_long_key_lists_are_cut_after_eight() -> None:
    state = {k: v for k, v in _net().state_dict().items() if not k.endswith(".bias")}
    with pytest.raises(ValueError) as info:
        load_state_dict_strict(_net(), state, "b.pt")
    listed = ", ".join(f"{i}.bias" for i in range(8))
    assert f"11 of its 25 tensors are missing ({listed}, ... and 3 more)" in str(info.value)


def test_allow_partial_loads_the_matching_tensors_and_reports_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = _net(), _net()
    state = source.state_dict()
    del state["0.weight"]
    state["head.weight"] = torch.zeros(1)
    initial = target[0].weight.detach().clone()

    missing, unexpected = load_state_dict_strict(target, state, "b.pt", allow_partial=True)

    assert (missing, unexpected) == (["0.weight"], ["head.weight"])
    assert torch.equal(target[0].weight, initial)  # kept its initial value
    assert torch.equal(target[0].bias, source[0].bias)
    assert torch.equal(target[9].weight, source[9].weight)
    err = capsys.readouterr().err.strip()
    assert err == (
        "warning: b.pt was loaded partially (--allow-partial): 1 missing tensor keeps the "
        "model's initial values (0.weight); 1 unexpected key was ignored (head.weight)."
    )


def test_ignored_prefixes_and_absent_batchnorm_counters() -> None:
    source = _net()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.zeros(5)  # ignored, whatever its shape
    del state["9.weight"], state["9.bias"]
    target = _net()
    assert load_state_dict_strict(target, state, "b.pt", ignore=("9.", "fc.")) == ([], [])
    assert torch.equal(target[10].running_var, source[10].running_var)
    state["10.num_batches_tracked"] = torch.tensor(3)  # some counters: then all are required
    state["3.num_batches_tracked"] = torch.tensor(3)
    with pytest.raises(ValueError, match="1 unexpected key"):
        load_state_dict_strict(_net(), state, "b.pt", ignore=("9.", "fc."))


def test_partial_checkpoint_backbone_is_refused_unless_allowed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = ResNetBackbone("resnet18", cifar_stem=True)
    state = {
        f"backbone.{k}": v
        for k, v in plain.state_dict().items()
        if not k.startswith(("resnet.layer2.", "resnet.layer3."))
    }
    ckpt = {
        "state_dict": state,
        "hyper_parameters": {"model": {"backbone": "resnet18", "cifar_stem": True}},
    }
    with pytest.raises(ValueError) as info:
        backbone_from_checkpoint(ckpt, source="'run/last.ckpt'")
    assert str(info.value).startswith(
        "'run/last.ckpt' ('backbone.*') does not match a resnet18 (CIFAR stem): 60 of its 120 "
        "tensors are missing (resnet.layer2.0.conv1.weight, "
    )
    backbone, missing, unexpected = backbone_from_checkpoint_with_report(ckpt, allow_partial=True)
    assert len(missing) == 60 and unexpected == []
    assert torch.equal(backbone.resnet.layer4[1].conv2.weight, plain.resnet.layer4[1].conv2.weight)
    assert "60 missing tensors keep the model's initial values" in capsys.readouterr().err
