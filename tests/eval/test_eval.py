from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightly_amix.cli import pretrain_main
from lightly_amix.eval import MoCoLinearClassifier, knn_accuracy, load_encoder
from lightly_amix.eval.cli import _cap_num_workers, knn_main
from lightly_amix.models.backbones import ResNetBackbone

REPO = Path(__file__).resolve().parents[2]


def test_knn_is_perfect_on_separable_features() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4, 16) * 10
    train_y = torch.arange(4).repeat_interleave(30)
    test_y = torch.arange(4).repeat_interleave(10)
    train = centres[train_y] + 0.1 * torch.randn(120, 16, generator=g)
    test = centres[test_y] + 0.1 * torch.randn(40, 16, generator=g)
    acc = knn_accuracy(train, train_y, test, test_y, num_classes=4, k=200, t=0.1)
    assert acc == {"top1": 100.0, "top5": 100.0}
    shuffled = knn_accuracy(train, train_y[torch.randperm(120, generator=g)], test, test_y, 4, k=5)
    assert shuffled["top1"] < 60.0  # labels that do not follow the features are not learnt
    with pytest.raises(ValueError, match="labelled split"):
        knn_accuracy(train, -torch.ones(120, dtype=torch.long), test, test_y, 4)


def test_linear_probe_moves_only_the_head_and_steps_the_lr() -> None:
    torch.manual_seed(0)
    encoder = ResNetBackbone("resnet18", cifar_stem=True)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    data = TensorDataset(torch.randn(16, 3, 16, 16), torch.randint(0, 3, (16,)))
    probe = MoCoLinearClassifier(encoder, 4, 0.1, encoder.out_dim, 3, epochs=10)
    head = probe.classification_head.weight.clone()
    trainer = pl.Trainer(max_epochs=10, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_train_batches=1)  # fmt: skip
    trainer.fit(probe, DataLoader(data, batch_size=4))
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights and BN statistics frozen
    assert not torch.equal(probe.classification_head.weight, head)
    # lr 0.1 * 4 / 256, ×0.1 at epochs 3 and 6 of 10.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 4 / 256 * 0.01)
    assert trainer.lr_scheduler_configs[0].scheduler.milestones == {3: 1, 6: 1}


def test_backbone_architecture_is_inferred(tmp_path: Path) -> None:
    for name, cifar in (("resnet50", False), ("resnet18", True), ("resnet34", False)):
        backbone = ResNetBackbone(name, cifar_stem=cifar)
        torch.save(backbone.export_state_dict(), tmp_path / "backbone.pt")
        encoder, info = load_encoder(tmp_path / "backbone.pt")
        assert (encoder.name, encoder.cifar_stem, info.backbone) == (name, cifar, name)
        assert torch.equal(encoder.resnet.conv1.weight, backbone.resnet.conv1.weight)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="Not a torchvision ResNet"):
        load_encoder(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing.ckpt")


@pytest.fixture
def pretrained(fake_stl10: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    code = pretrain_main(
        ["--data-root", str(fake_stl10), "--output-dir", str(out), "--epochs", "1",
         "--batch-size", "4", "--limit-batches", "2", "--queue-size", "16", "--accelerator",
         "cpu", "--num-workers", "0", "--method", "amix-i", "--set", "data.image_size=32"],
        dataset="stl10", config_dir=REPO / "recipes" / "configs",
    )  # fmt: skip
    assert code == 0
    return out


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "recipes" / script), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_recipes_print_a_row_and_compare(pretrained: Path, fake_stl10: Path) -> None:
    ckpt, weights = pretrained / "last.ckpt", pretrained / "backbone.pt"
    common = ["--data-root", str(fake_stl10), "--accelerator", "cpu", "--num-workers", "0"]
    knn = _run("knn_eval.py", "--checkpoint", str(ckpt), *common)
    assert knn.returncode == 0, knn.stderr[-2000:]
    assert "| amix-i | stl10 | resnet18 | 1 | knn |" in knn.stdout
    linear = _run("linear_eval.py", "--checkpoint", str(weights), *common, "--epochs", "2")
    assert linear.returncode == 0, linear.stderr[-2000:]
    assert "| amix-i | stl10 | resnet18 | 1 | linear |" in linear.stdout
    result = json.loads((pretrained / "eval" / "linear.json").read_text())
    assert 0 <= result["top1"] <= 100 and result["cached_features"] is True
    table = _run("knn_eval.py", "--compare", str(pretrained / "eval"))
    assert table.returncode == 0 and table.stdout.count("| amix-i |") == 2
    missing = _run("knn_eval.py", "--checkpoint", "nope.ckpt", *common)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.slow
def test_knn_monitor_logs_during_pretraining(fake_stl10: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = pretrain_main(
        ["--data-root", str(fake_stl10), "--output-dir", str(out), "--epochs", "2",
         "--batch-size", "4", "--limit-batches", "1", "--queue-size", "16", "--accelerator",
         "cpu", "--num-workers", "0", "--set", "data.image_size=32",
         "--set", "trainer.knn_every_n_epochs=1"],
        dataset="stl10", config_dir=REPO / "recipes" / "configs",
    )  # fmt: skip
    assert code == 0
    rows = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    top1 = [r.split(",")[header.index("knn/top1")] for r in rows[1:]]
    values = [float(v) for v in top1 if v]
    assert len(values) == 2 and all(0.0 <= v <= 100.0 for v in values)  # one per epoch


def test_partial_backbone_is_refused_unless_allow_partial(
    fake_stl10: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ResNetBackbone("resnet18", cifar_stem=True).export_state_dict()
    assert len(state) == 120
    weights = tmp_path / "backbone.pt"
    torch.save(
        {k: v for k, v in state.items() if not k.startswith(("layer2.", "layer3."))}, weights
    )
    out = tmp_path / "eval"
    args = ["--checkpoint", str(weights), "--data-root", str(fake_stl10), "--image-size", "32",
            "--k", "5", "--accelerator", "cpu", "--num-workers", "0",
            "--output-dir", str(out)]  # fmt: skip

    assert knn_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: '{weights}' does not match a resnet18")
    assert "60 of its 120 tensors are missing (layer2.0.conv1.weight, " in err
    assert "... and 52 more" in err and "pass --allow-partial" in err
    assert not out.exists()  # no result row

    assert knn_main([*args, "--allow-partial"]) == 0
    captured = capsys.readouterr()
    assert "warning: " in captured.err and "60 missing tensors keep" in captured.err
    assert "| knn (partial weights) |" in captured.out
    result = json.loads((out / "knn.json").read_text())
    assert result["partial"] is True and result["backbone"] == "resnet18"


def test_partial_last_ckpt_is_refused_by_load_encoder(tmp_path: Path) -> None:
    backbone = ResNetBackbone("resnet18", cifar_stem=True)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()
             if not k.startswith("resnet.layer4.")}  # fmt: skip
    model = {"backbone": "resnet18", "cifar_stem": True}
    torch.save({"state_dict": state, "hyper_parameters": {"model": model}}, tmp_path / "last.ckpt")
    expected = (
        r"\('backbone\.\*'\) does not match a resnet18 .*30 of its 120 tensors are missing "
        r"\(resnet\.layer4\.0\.conv1\.weight"
    )
    with pytest.raises(ValueError, match=expected):
        load_encoder(tmp_path / "last.ckpt")
    _, info = load_encoder(tmp_path / "last.ckpt", allow_partial=True)
    assert info.partial is True


def test_num_workers_is_capped_at_the_cpus(capsys: pytest.CaptureFixture[str]) -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cpus
    args = argparse.Namespace(num_workers=cpus + 7)
    _cap_num_workers(args)
    assert args.num_workers == cpus
    assert (
        capsys.readouterr().out == f"--num-workers {cpus + 7} > {cpus} CPUs here: using {cpus}.\n"
    )
    _cap_num_workers(args)
    assert capsys.readouterr().out == ""
