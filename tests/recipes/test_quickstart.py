"""The quickstart recipe on a fake Fashion-MNIST written in the real idx format."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.fakes import write_fashion_mnist

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quickstart", RECIPE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_draws(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_fashion_mnist(tmp_path / "fmnist", sizes=(16, 8))
    out = tmp_path / "out"
    argv = ["--data-root", str(tmp_path / "fmnist"), "--steps", "2", "--batch-size", "4",
            "--output-dir", str(out), "--num-workers", "0"]  # fmt: skip
    assert _load().main(argv) == 0
    printed = capsys.readouterr().out
    assert "Two-view augmentation: device" in printed
    assert "kNN accuracy (k=200, t=0.1) on the test split: top-1" in printed
    assert "(16 labelled bank images)" in printed
    assert (out / "grids" / "mixup_epoch000.png").stat().st_size > 0
    assert (out / "backbone.pt").is_file()
    # A second run does not overwrite the first.
    assert _load().main(argv) == 2
    assert "holds an earlier quickstart" in capsys.readouterr().err


def test_quickstart_without_data_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    module = _load()
    monkeypatch.setattr(module, "FASHION_MNIST_DEFAULT_ROOT", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    assert module.main([]) == 2
    err = capsys.readouterr().err
    assert "no data set found" in err and "apt-get install dataset-fashion-mnist" in err
    assert "--download" in err
