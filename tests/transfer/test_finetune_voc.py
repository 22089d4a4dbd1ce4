"""The detectron2-free VOC fine-tuning script on a tiny VOC07+12 written in the real format."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from tests.transfer.test_voc import write_voc
from transfer.backbone_weights import load_backbone_weights
from transfer.detection_model import build_model, train_min_sizes
from transfer.engine import InfiniteSampler, build_optimizer, lr_factor
from transfer.finetune_voc import main
from transfer.voc_format import VOC_CLASSES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "transfer" / "finetune_voc.py"
# Tiny and fast: 64-96 px images, 32 RoIs per image, one precise-BN batch, no loader processes.
FAST = ["--batch-size", "2", "--min-size", "64", "--max-size", "96", "--accelerator", "cpu",
        "--num-workers", "0", "--roi-batch-size", "32", "--precise-bn-iters", "1"]  # fmt: skip
AP_LINE = re.compile(r"^AP50 (\d+\.\d\d)  AP (\d+\.\d\d)  AP75 (\d+\.\d\d)$")


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def resnet_state_without_fc(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc(tmp_path_factory.mktemp("data") / "voc")


@pytest.fixture(scope="module")
def tiny_run(
    voc_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The documented smoke command, run once as a subprocess: 2 iterations, random init,
    also evaluated after iteration 1."""
    cwd = tmp_path_factory.mktemp("run")
    result = run_script("--data-root", str(voc_root), "--max-iter", "2", *FAST,
                        "--eval-every", "1", "--output-dir", "out", cwd=cwd)  # fmt: skip
    return result, cwd / "out"


@pytest.mark.slow
def test_tiny_run_prints_progress_and_the_ap_line(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = tiny_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Note: no --weights given: the ResNet-50 starts from random initialisation" in out
    assert "Train: VOC2007 trainval + VOC2012 trainval: 4 images; test: VOC2007 test: 2" in out
    for it in ("iter 1/2", "iter 2/2"):
        line = next(line for line in out.splitlines() if line.startswith(it))
        for key in ("loss ", "loss_classifier", "loss_box_reg", "loss_objectness",
                    "loss_rpn_box_reg", "lr 0.0000", "s/it"):  # fmt: skip
            assert key in line, (key, line)
    assert AP_LINE.match(out.strip().splitlines()[-1]), out[-500:]
    assert re.search(r"^iter 1: AP50 \d+\.\d\d  AP \d+\.\d\d  AP75 \d+\.\d\d$", out, re.M)


@pytest.mark.slow
def test_tiny_run_writes_metrics_and_model(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = tiny_run
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    printed = AP_LINE.match(result.stdout.strip().splitlines()[-1])
    assert printed is not None
    assert [f"{metrics[k]:.2f}" for k in ("AP50", "AP", "AP75")] == list(printed.groups())
    assert metrics["iteration"] == 2 and metrics["test_set"] == "2007:test"
    assert metrics["metric"] == "VOC07 11-point"
    assert set(metrics["per_class"]) == set(VOC_CLASSES)
    # VOC2007 test of the tiny set: a dog, a person, a car and a difficult car.
    assert {k: v for k, v in metrics["num_ground_truth"].items() if v} == {
        "car": 1, "dog": 1, "person": 1,
    }  # fmt: skip
    assert metrics["per_class"]["cat"] is None and metrics["per_class"]["dog"] is not None
    assert [h["iteration"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][-1] == {k: metrics[k] for k in ("iteration", "AP50", "AP", "AP75")}

    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 2
    build_model(min_size=64, max_size=96).load_state_dict(ckpt["model"])  # strict


def test_weights_from_a_resnet50_state_dict_load(
    voc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = resnet_state_without_fc(torchvision.models.resnet50())
    torch.save(state, tmp_path / "backbone.pt")
    out = tmp_path / "out"
    args = ["--data-root", str(voc_root), "--weights", str(tmp_path / "backbone.pt"),
            "--max-iter", "0", *FAST, "--precise-bn-iters", "0"]  # fmt: skip
    code = main([*args, "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"Weights: 318 tensors from {tmp_path / 'backbone.pt'}" in captured.out
    assert AP_LINE.match(captured.out.strip().splitlines()[-1])
    model = torch.load(out / "model_final.pth", weights_only=True)["model"]
    # No training (--max-iter 0): the trunk holds conv1..layer3, the box head's res5 holds layer4.
    assert torch.equal(model["backbone.conv1.weight"], state["conv1.weight"])
    assert torch.equal(
        model["backbone.layer3.5.bn3.running_var"], state["layer3.5.bn3.running_var"]
    )
    assert torch.equal(
        model["roi_heads.box_head.res5.2.conv3.weight"], state["layer4.2.conv3.weight"]
    )
    assert "roi_heads.box_head.norm.weight" in model  # the extra norm after res5


@pytest.mark.slow
def test_resnet18_weights_exit_2_with_a_clear_message(voc_root: Path, tmp_path: Path) -> None:
    torch.save(resnet_state_without_fc(torchvision.models.resnet18()), tmp_path / "r18.pt")
    result = run_script("--data-root", str(voc_root), "--weights", str(tmp_path / "r18.pt"),
                        "--max-iter", "2", *FAST, "--output-dir", "out", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "holds a ResNet-18 (basic blocks" in result.stderr
    assert "needs a ResNet-50" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def _weights_error(voc_root: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["--data-root", str(voc_root), "--weights", str(path), "--max-iter", "0", *FAST,
                 "--output-dir", str(path.parent / "out")])  # fmt: skip
    assert code == 2
    return capsys.readouterr().err


def test_bad_weights_files(
    voc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = resnet_state_without_fc(torchvision.models.resnet50())
    cases: dict[str, tuple[object, str]] = {
        "cifar.pt": ({**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, "CIFAR stem"),
        "last.ckpt": (
            {"state_dict": {"backbone.resnet.conv1.weight": state["conv1.weight"]}, "epoch": 3},
            "training checkpoint",
        ),  # fmt: skip
        "prefixed.pt": ({f"backbone.resnet.{k}": v for k, v in state.items()}, "prefixed keys"),
        "list.pt": ([1, 2, 3], "not a dict of tensors"),
        "missing.pt": (
            {k: v for k, v in state.items() if k != "layer4.2.bn3.running_var"},
            "1 of its 318 tensors is missing (layer4.2.bn3.running_var)",
        ),  # fmt: skip
        "extra.pt": ({**state, "head.weight": torch.zeros(2)}, "1 unexpected key (head.weight)"),
        "shape.pt": (
            {**state, "layer4.0.conv1.weight": torch.zeros(512, 1024, 3, 3)},
            "1 tensor of the wrong shape (layer4.0.conv1.weight: (512, 1024, 3, 3) in the file, "
            "(512, 1024, 1, 1) in the model)",
        ),  # fmt: skip
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        err = _weights_error(voc_root, tmp_path / name, capsys)
        assert message in err, (name, err)
        assert err.startswith(f"error: --weights: {tmp_path / name}"), err
    assert "no such file" in _weights_error(voc_root, tmp_path / "nowhere.pt", capsys)
    (tmp_path / "text.pt").write_text("not a pickle")
    assert "could not be read with torch.load(weights_only=True)" in _weights_error(
        voc_root, tmp_path / "text.pt", capsys
    )
    # fc present (torchvision ImageNet-style file) is fine.
    resnet = torchvision.models.resnet50()
    torch.save(resnet.state_dict(), tmp_path / "with_fc.pt")
    assert load_backbone_weights(torchvision.models.resnet50(), tmp_path / "with_fc.pt") == 318


def test_partial_weights_are_refused_unless_allow_partial(
    voc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resnet = torchvision.models.resnet50()
    state = resnet_state_without_fc(resnet)
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith(("layer2.", "layer3."))}, path)

    err = _weights_error(voc_root, path, capsys)
    assert err.count("\n") == 1
    assert err.startswith(f"error: --weights: {path} does not match a ResNet-50: 192 of its 318 "
                          "tensors are missing (layer2.0.conv1.weight, ")  # fmt: skip
    assert "... and 184 more). Expected backbone.pt as the pre-training recipes write it" in err
    assert "or pass --allow-partial to load the 126 matching tensors anyway" in err
    assert not (tmp_path / "out").exists()

    target = torchvision.models.resnet50()
    assert load_backbone_weights(target, path, allow_partial=True) == 126
    assert torch.equal(target.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)
    assert "warning: --weights: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--allow-partial" in capsys.readouterr().out


def test_data_and_output_errors_exit_2(
    voc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def error(*args: str) -> str:
        code = main(["--max-iter", "0", *FAST, *args])
        assert code == 2
        return capsys.readouterr().err

    err = error("--data-root", str(tmp_path), "--output-dir", str(tmp_path / "a"))
    assert "VOC folder not found" in err and "without a VOCdevkit/ level" in err
    err = error("--data-root", str(voc_root), "--test-set", "2007:val",
                "--output-dir", str(tmp_path / "b"))  # fmt: skip
    assert "Split file not found" in err and "Split files there: test, trainval" in err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.json").write_text("{}")
    err = error("--data-root", str(voc_root), "--output-dir", str(tmp_path / "c"))
    assert "already holds metrics.json" in err and "choose another --output-dir" in err
    if not torch.cuda.is_available():
        err = error("--data-root", str(voc_root), "--accelerator", "gpu",
                    "--output-dir", str(tmp_path / "d"))  # fmt: skip
        assert "CUDA is not available" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-sets", "2007-trainval"], "is not YEAR:SPLIT"),
        (["--test-set", "test"], "is not YEAR:SPLIT"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--batch-size", "2", "--accum-steps", "4"], "must be a multiple of --accum-steps (4)"),
        (["--min-size", "800", "--max-size", "96"], "is larger than --max-size"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--max-iter", "-5"], "--max-iter must be >= 0"),
    ],
)
def test_bad_arguments(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--data-root", str(tmp_path), *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_flags(tmp_path: Path) -> None:
    result = run_script("--help", cwd=tmp_path)
    assert result.returncode == 0
    flags = ("--data-root", "--weights", "--max-iter", "--batch-size", "--lr", "--accelerator",
             "--num-workers", "--output-dir", "--min-size", "--max-size", "--train-sets",
             "--test-set", "--eval-every", "--seed", "--accum-steps", "backbone.pt")  # fmt: skip
    for flag in flags:
        assert flag in result.stdout, flag


def test_model_is_the_c4_layout() -> None:
    resnet = torchvision.models.resnet50()
    model = build_model(resnet, min_size=64, max_size=96)
    assert model.backbone.out_channels == 1024 and model.backbone.layer3 is resnet.layer3
    assert not hasattr(model.backbone, "layer4")
    assert model.roi_heads.box_head.res5 is resnet.layer4
    assert isinstance(model.roi_heads.box_head.norm, nn.BatchNorm2d)
    assert model.roi_heads.box_roi_pool.output_size == (14, 14)
    assert model.roi_heads.box_roi_pool.sampling_ratio == 0
    assert model.roi_heads.box_predictor.cls_score.out_features == 21
    assert model.roi_heads.box_predictor.cls_score.in_features == 2048
    anchors = model.rpn.anchor_generator
    assert anchors.sizes == ((32, 64, 128, 256, 512),)
    assert anchors.aspect_ratios == ((0.5, 1.0, 2.0),)
    assert model.rpn.head.cls_logits.out_channels == 15
    assert model.transform.image_mean == [0.485, 0.456, 0.406]
    assert model.transform.image_std == [0.229, 0.224, 0.225]
    assert model.transform.min_size == train_min_sizes(64) and model.transform.max_size == 96
    assert model.rpn._pre_nms_top_n == {"training": 12000, "testing": 6000}
    assert model.rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 512
    assert model.roi_heads.detections_per_img == 100 and model.roi_heads.score_thresh == 0.05


def test_schedule_optimizer_and_sampler() -> None:
    assert train_min_sizes(800) == tuple(range(480, 801, 32))
    assert train_min_sizes(64)[-1] == 64
    # Warm-up 100 iterations from 0.001, then x0.1 at 18k and 22k of 24k.
    assert lr_factor(0, 24000) == pytest.approx(0.001)
    assert lr_factor(99, 24000) == pytest.approx(0.001 * 0.01 + 0.99)
    assert [lr_factor(i, 24000) for i in (100, 17999, 18000, 21999, 22000, 23999)] == (
        pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    )
    assert lr_factor(750, 1000) == pytest.approx(0.1)  # steps scale with --max-iter
    model = build_model(min_size=64, max_size=96)
    no_decay, decay = 0, 0
    for group in build_optimizer(model, lr=0.02).param_groups:
        assert group["momentum"] == 0.9
        count = sum(p.numel() for p in group["params"])
        if group["weight_decay"] == 0.0:
            no_decay += count
        else:
            assert group["weight_decay"] == 1e-4
            decay += count
    norms = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                for p in m.parameters())  # fmt: skip
    assert no_decay == norms and decay == sum(p.numel() for p in model.parameters()) - norms
    it = iter(InfiniteSampler(4, seed=1))
    drawn = [next(it) for _ in range(12)]
    assert all(sorted(drawn[i : i + 4]) == [0, 1, 2, 3] for i in (0, 4, 8))
