"""recipes/visualize_mixup.py on scikit-image's photos, a fake STL-10 and a checkpoint."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image

from lightly_amix.cli import pretrain_main
from lightly_amix.mixing.mix_block import MixBlock
from lightly_amix.models.backbones import ResNetBackbone

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "visualize_mixup.py"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RECIPE), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_default_run_draws_the_sample_photos(tmp_path: Path) -> None:
    result = run("--image-size", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Wrote mixup_grid.png" in result.stdout
    grid = Image.open(tmp_path / "mixup_grid.png")
    # 3 pairs x 3 λ rows; A, B, 5 mixups, Mix Block mask and mix = 9 columns of 64 px.
    assert grid.size == (60 + 9 * 66, 14 + 9 * 66)


@pytest.mark.slow
def test_dataset_and_checkpoint(fake_stl10: Path, tmp_path: Path) -> None:
    code = pretrain_main(
        ["--data-root", str(fake_stl10), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
         "--batch-size", "4", "--limit-batches", "1", "--queue-size", "16", "--accelerator", "cpu",
         "--num-workers", "0", "--set", "data.image_size=32"],
        dataset="stl10", config_dir=REPO / "recipes" / "configs",
    )  # fmt: skip
    assert code == 0
    result = run(
        "--data-root", str(fake_stl10), "--dataset", "stl10", "--split", "test", "--pairs", "2",
        "--lams", "0.4", "--checkpoint", str(tmp_path / "run" / "last.ckpt"), "-o", "g/x.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no Mix Block" in result.stdout
    assert Image.open(tmp_path / "g" / "x.png").size == (60 + 9 * 98, 14 + 2 * 98)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "missing.ckpt"], "does not exist"),
        (["--data-root", "nowhere", "--dataset", "stl10"], "--download"),
        (["--pairs", "4"], "Only 6 photos"),
    ],
)
def test_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr


def _load_recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("visualize_mixup", RECIPE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_partial_checkpoint_is_refused_unless_allow_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand-made last.ckpt whose Mix Block lacks its γ and encoder lacks layer2 (in-process)."""
    backbone = ResNetBackbone("resnet18", cifar_stem=True)
    block = MixBlock(backbone.stage3_dim)
    state = {f"backbone_momentum.{k}": v for k, v in backbone.state_dict().items()
             if not k.startswith("resnet.layer2.")}  # fmt: skip
    state.update({f"mix_block.{k}": v for k, v in block.state_dict().items() if k != "gamma"})
    model = {"backbone": "resnet18", "cifar_stem": True}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"model": model}}, ckpt)
    main = _load_recipe().main
    args = ["--checkpoint", str(ckpt), "--image-size", "32", "--pairs", "1", "--lams", "0.5",
            "-o", str(tmp_path / "grid.png")]  # fmt: skip

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: '{ckpt}' ('backbone_momentum.*') does not match a resnet18")
    assert "30 of its 120 tensors are missing (resnet.layer2.0.conv1.weight" in err
    assert "--allow-partial" in err and not (tmp_path / "grid.png").exists()

    assert main([*args, "--allow-partial"]) == 0
    err = capsys.readouterr().err
    assert "30 missing tensors keep the model's initial values" in err
    assert f"warning: '{ckpt}' ('mix_block.*') was loaded partially" in err
    assert "1 missing tensor keeps the model's initial values (gamma)" in err
    assert (tmp_path / "grid.png").is_file()
