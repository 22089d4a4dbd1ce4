"""recipes/train_classifier.py end to end on tiny data sets in the real file formats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from lightly_amix.classifier_config import CLASSIFIER_METHODS
from lightly_amix.classify_cli import classify_main
from tests.fakes import write_cifar100, write_fashion_mnist
from tests.run_records import StepsSeen, logged_per_epoch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"
FAST = ["--batch-size", "4", "--limit-batches", "2", "--accelerator", "cpu",
        "--num-workers", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(root, sizes=(16, 8))
    return root


def _run(*argv: str) -> int:
    return classify_main(list(argv), config_dir=CONFIGS)


@pytest.mark.slow
@pytest.mark.parametrize("method", CLASSIFIER_METHODS)
def test_every_method_trains_an_epoch_and_writes_its_row(
    method: str, fashion: Path, tmp_path: Path
) -> None:
    out = tmp_path / method
    code = _run("--dataset", "fashion-mnist", "--data-root", str(fashion), "--method", method,
                "--epochs", "1", "--output-dir", str(out), *FAST)  # fmt: skip
    assert code == 0
    result = json.loads((out / "classify.json").read_text())
    assert result["method"] == method and result["epochs"] == [0]
    # The median of the one epoch is the test top-1 this run logged, a share of 8 test images.
    logged = logged_per_epoch(out, "val/top1")
    assert list(logged) == [0] and result["values"] == [pytest.approx(logged[0][0])]
    assert result["median"] == result["values"][0]
    assert result["median"] * 8 / 100 == pytest.approx(round(result["median"] * 8 / 100))
    rows = (out / "results.md").read_text().splitlines()
    assert rows[-1].startswith(f"| {method} | fashion-mnist | resnet18 | 1 | ")
    assert (out / "backbone.pt").is_file() and (out / "last.ckpt").is_file()


@pytest.mark.slow
def test_the_documented_command_runs(tmp_path: Path) -> None:
    fashion = write_fashion_mnist(tmp_path / "fashion", sizes=(200, 20)).root  # 2 batches of 100
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "train_classifier.py"), "--dataset",
         "fashion-mnist", "--method", "amix", "--epochs", "1", "--limit-batches", "2",
         "--accelerator", "cpu", "--output-dir", "out/sup", "--data-root", str(fashion),
         "--set", "data.num_workers=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| amix | fashion-mnist | resnet18 | 1 |" in result.stdout
    assert (tmp_path / "out" / "sup" / "classify.json").is_file()


@pytest.mark.slow
def test_cifar100_in_the_real_pickle_format(tmp_path: Path) -> None:
    fake = write_cifar100(tmp_path / "cifar", n_train=8, n_test=3)
    out = tmp_path / "out"
    assert _run("--dataset", "cifar100", "--data-root", str(fake.root), "--method", "cutmix",
                "--epochs", "1", "--output-dir", str(out), *FAST) == 0  # fmt: skip
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["num_classes"] == 100
    assert ckpt["lightly_amix_run"]["dataset"] == "cifar100"


class _CtrlCAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, i: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_and_resumed_ends_as_an_uninterrupted_one(
    fashion: Path, tmp_path: Path
) -> None:
    args = ["--dataset", "fashion-mnist", "--data-root", str(fashion), "--method", "amix",
            "--epochs", "3", *FAST, "--num-workers", "2"]  # fmt: skip
    assert _run(*args, "--output-dir", str(tmp_path / "a")) == 0
    stopped = tmp_path / "b"
    try:
        with pytest.raises(SystemExit):  # Ctrl-C at step 2 (of 6): saved after that step
            classify_main([*args, "--output-dir", str(stopped)], config_dir=CONFIGS,
                          callbacks=[_CtrlCAt(2)])  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert torch.load(stopped / "interrupted.ckpt", weights_only=True)["global_step"] == 3
    # Ctrl-C at epoch 1's last step (3): the epoch is validated and saved, then the run stops.
    # Each launch starts where the previous one stopped (a restart from step 0 would end
    # bit-identical too: the run is deterministic).
    seen = StepsSeen()
    code = classify_main([*args, "--output-dir", str(stopped), "--resume", "auto"],
                         config_dir=CONFIGS, callbacks=[_CtrlCAt(3), seen])  # fmt: skip
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert code == 1 and seen.steps == [3]
    assert torch.load(stopped / "last.ckpt", weights_only=True)["global_step"] == 4
    seen = StepsSeen()
    code = classify_main([*args, "--output-dir", str(stopped), "--resume", "auto"],
                         config_dir=CONFIGS, callbacks=[seen])  # fmt: skip
    assert code == 0 and seen.steps == [4, 5]
    a = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)
    b = torch.load(stopped / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    ja = json.loads((tmp_path / "a" / "classify.json").read_text())
    jb = json.loads((stopped / "classify.json").read_text())
    assert ja["values"] == jb["values"] and ja["epochs"] == [0, 1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "data.test_split=validation"], "fashion-mnist has no split 'validation'"),
        (["--set", "mixing.degenerate_margin=0.6"], "Invalid mixing.degenerate_margin 0.6"),
        (["--set", "mixing.block_bn=eval"], "mixing.block_bn"),
        (["--set", "mixing.block_lam=pixel"], "mixing.block_lam"),
        (["--set", "model.pretrained=/nowhere/r18.pth"], "'/nowhere/r18.pth' does not exist"),
        (["--batch-size", "64"], "fewer than one batch (64)"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str], message: str, fashion: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--dataset", "fashion-mnist", "--data-root", str(fashion), "--method", "amix",
            "--epochs", "1", "--output-dir", str(tmp_path / "out"), *FAST, *args]  # fmt: skip
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
