"""The pre-training recipe end to end on a fake STL-10 written in the real binary format."""

from __future__ import annotations

import csv
import errno
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torchvision
import yaml

from lightly_amix.cli import pretrain_main
from tests.run_records import StepsSeen

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "pretrain_stl10.py"
# Small and fast: 32 px crops, batch 4, a 16-entry queue, no loader processes.
FAST = ["--batch-size", "4", "--queue-size", "16", "--accelerator", "cpu", "--num-workers", "0",
        "--limit-batches", "2", "--set", "data.image_size=32"]  # fmt: skip


def run_recipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RECIPE), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_documented_smoke_command_writes_checkpoint_and_backbone(
    fake_stl10: Path, tmp_path: Path
) -> None:
    result = run_recipe(
        "--data-root", str(fake_stl10), "--method", "mocov2", "--epochs", "1",
        "--batch-size", "8", "--limit-batches", "2", "--queue-size", "64",
        "--accelerator", "cpu", "--output-dir", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "last.ckpt").is_file() and (out / "config.yaml").is_file()
    assert f"Writing to {out.resolve()}" in result.stdout
    assert "Data set: stl10 'train+unlabeled'" in result.stdout and "32 images" in result.stdout
    assert "queue_size: 64" in result.stdout  # the effective config is printed
    assert "larger than the data set" in result.stderr  # 64 > 32 images: a warning

    state = torch.load(out / "backbone.pt", weights_only=True)
    resnet = torchvision.models.resnet18()
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected

    ckpt = torch.load(out / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["epoch"] == 0  # saved at the end of epoch 0
    assert torch.equal(ckpt["state_dict"]["backbone.resnet.conv1.weight"], state["conv1.weight"])
    bank = ckpt["lightly_amix_memory_banks"]["memory_bank"]
    assert int(bank["bank_ptr"]) == 16  # two batches of 8 enqueued
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(row.get("train/loss_epoch") for row in rows)
    assert (out / "tb").is_dir()


def test_help_explains_the_flags(tmp_path: Path) -> None:
    result = run_recipe("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--data-root", "--download", "--method", "--config", "--set", "--backbone",
                 "--epochs", "--batch-size", "--limit-batches", "--queue-size", "--output-dir",
                 "--resume", "--accelerator", "--devices", "--strategy", "--precision", "--seed",
                 "--num-workers", "--augment-on", "backbone.pt"):  # fmt: skip
        assert flag in result.stdout, flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-root", "{tmp}/nowhere"], "--download"),
        (["--set", "model.colour=red"], "Valid keys in model: backbone, bn_splits, cifar_stem"),
        (["--resume", "{tmp}/missing.ckpt"], "missing.ckpt: it does not exist"),
        (["--devices", "two"], "Invalid devices 'two'"),
        (["--batch-size", "64", "--queue-size", "64"], "fewer than one batch"),
        (["--queue-size", "3"], "model.queue_size 3 is smaller than one batch of keys"),
        (["--precision", "fp8"], "Invalid trainer.precision 'fp8'. Expected one of: 32-true"),
        (["--accelerator", "tpu"], "these trainer settings do not work here (--accelerator tpu"),
        (["--output-dir", "{tmp}/afile"], "is a file, not a folder"),
        (["--output-dir", "/proc/lightly_amix_x"], "cannot be created"),
        (["--config", "{tmp}/bad.yaml"], "bad.yaml' is not valid YAML at line 3, column 8"),
        (["--output-dir", "{tmp}/used"], "already holds last.ckpt from an earlier run"),
    ],
)
def test_bad_input_exits_with_a_clear_message(
    args: list[str],
    message: str,
    fake_stl10: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "last.ckpt").write_bytes(b"")
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "bad.yaml").write_text("model:\n  queue_size: [16\ntrainer: {}\n")
    argv = ["--data-root", str(fake_stl10), "--output-dir", str(tmp_path / "out"), *FAST]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = pretrain_main(argv, dataset="stl10", config_dir=REPO / "recipes" / "configs")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1  # one line
    assert not (tmp_path / "out").exists()  # nothing written, not even config.yaml


def _fit(root: Path, out: Path, epochs: int, *extra: str, callbacks: tuple = ()) -> None:
    argv = ["--data-root", str(root), "--output-dir", str(out), "--epochs", str(epochs), *FAST,
            *extra]  # fmt: skip
    code = pretrain_main(
        argv, dataset="stl10", config_dir=REPO / "recipes" / "configs", callbacks=callbacks
    )
    assert code == 0


class _StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


AMIX_C = ["--method", "amix-c", "--set", "odc.num_clusters=4", "--set", "odc.min_cluster_size=4"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [[], AMIX_C],
    ids=["mocov2", "amix-c"],  # mid-epoch kills, workers and device views: tests/test_faults.py
)
def test_resume_gives_the_same_weights_queue_and_optimizer(
    method: list[str], fake_stl10: Path, tmp_path: Path
) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _fit(fake_stl10, straight, 2, *method)
    _fit(fake_stl10, resumed, 2, *method, callbacks=(_StopAfterFirstEpoch(),))  # interrupted
    assert _load(resumed / "last.ckpt")["global_step"] == 2
    seen = StepsSeen()
    _fit(fake_stl10, resumed, 2, *method, "--resume", "auto", callbacks=(seen,))
    # The resumed launch trained only the second epoch: a restart from step 0 (the checkpoint
    # ignored) would end bit-identical too, the run being deterministic.
    assert seen.steps == [2, 3]

    a, b = _load(straight / "last.ckpt"), _load(resumed / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    bank_a = a["lightly_amix_memory_banks"]["memory_bank"]
    bank_b = b["lightly_amix_memory_banks"]["memory_bank"]
    assert torch.equal(bank_a["bank"], bank_b["bank"])
    assert torch.equal(bank_a["bank_ptr"], bank_b["bank_ptr"])
    mom_a = a["optimizer_states"][0]["state"]
    mom_b = b["optimizer_states"][0]["state"]
    assert all(torch.equal(mom_a[i]["momentum_buffer"], mom_b[i]["momentum_buffer"]) for i in mom_a)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]
    if method == AMIX_C:  # the Mix Block and the clustering memory are part of the state
        assert any(key.startswith("mix_block.") for key in a["state_dict"])
        assert any(key.startswith("clustering.memory.") for key in a["state_dict"])
    # Different seeds give different weights: the equality above is not trivially true.
    other = tmp_path / "other"
    _fit(fake_stl10, other, 2, *method, "--seed", "1")
    c = _load(other / "last.ckpt")
    assert not torch.equal(c["state_dict"]["backbone.resnet.conv1.weight"],
                           a["state_dict"]["backbone.resnet.conv1.weight"])  # fmt: skip


class _InterruptAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resume_auto_picks(fake_stl10: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit):  # Lightning exits with 1 after a graceful shutdown
        _fit(fake_stl10, out, 2, callbacks=(_InterruptAt(3),))
    interrupted = _load(out / "interrupted.ckpt")
    assert interrupted["global_step"] == 3
    assert _load(out / "last.ckpt")["global_step"] == 2
    seen = StepsSeen()
    _fit(fake_stl10, out, 2, "--resume", "auto", callbacks=(seen,))
    assert seen.steps == [3]  # continued from interrupted.ckpt, not from last.ckpt or step 0
    assert _load(out / "last.ckpt")["global_step"] == 4
    assert (out / "backbone.pt").is_file()


@pytest.mark.slow
def test_resume_with_another_length_warns(fake_stl10: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _fit(fake_stl10, out, 1)
    with pytest.warns(UserWarning, match="run of 1 epochs, this run has 2"):
        _fit(fake_stl10, out, 2, "--resume", "auto")


def test_the_config_file_decides_the_method_unless_method_is_given() -> None:
    from lightly_amix.cli import _flags, build_parser
    from lightly_amix.config import load_config

    base = REPO / "recipes" / "configs" / "stl10.yaml"
    path = REPO / "recipes" / "configs" / "methods" / "amix-c.yaml"
    args = build_parser("stl10").parse_args(["--config", str(base), "--config", str(path)])
    assert load_config(args.config, flags=_flags(args)).method == "amix-c"
    args = build_parser("stl10").parse_args(["--config", str(path), "--method", "cutmix"])
    assert load_config(args.config, flags=_flags(args)).method == "cutmix"


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [
        "amix-i",
        "amix-c",
        "mixup",
        "cutmix",
        "fmix",
        "resizemix",
        "saliencymix",
        "manifoldmix",
        "mochi",
        "imix",
        "unmix",
        "puzzlemix",
        "simclr",
        "amix-simclr",
        "byol",
        "amix-byol",
    ],  # fmt: skip
)
def test_every_method_runs_from_its_shipped_config(
    method: str, fake_stl10: Path, tmp_path: Path
) -> None:
    out = tmp_path / method
    _fit(fake_stl10, out, 1, "--method", method)
    ckpt = _load(out / "last.ckpt")
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["model"]["queue_size"] == 16
    assert (out / "backbone.pt").is_file()
    assert (yaml.safe_load((out / "config.yaml").read_text()))["method"] == method
    if method.startswith("amix"):  # the configs save a grid of mixed samples every 20 epochs
        assert (out / "grids" / "mixup_epoch000.png").is_file()


class _RecordBatches(pl.Callback):
    """Keeps what the training step receives (after the device-side augmentation)."""

    def __init__(self) -> None:
        self.batches: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.batches.append(batch)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mocov2", "amix-i", "cutmix"])
@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_both_augmentation_modes_train(
    method: str, augment_on: str, fake_stl10: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    record = _RecordBatches()
    _fit(fake_stl10, out, 1, "--method", method, "--augment-on", augment_on, callbacks=(record,))
    assert f"Two-view augmentation: {augment_on}" in capsys.readouterr().out
    assert _load(out / "last.ckpt")["global_step"] == 2
    for views, labels, indices in record.batches:
        assert len(views) == 2 and labels.shape == indices.shape == (4,)
        for view in views:  # normalised float views, whichever side drew them
            assert view.shape == (4, 3, 32, 32) and view.dtype == torch.float32
            assert float(view.min()) < 0.0
    first_q, first_k = record.batches[0][0]
    assert not torch.allclose(first_q, first_k)
    if method == "amix-i":
        assert (out / "grids" / "mixup_epoch000.png").is_file()


def test_a_bad_augment_on_value_is_refused(
    fake_stl10: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--data-root", str(fake_stl10), "--output-dir", str(tmp_path / "out"), *FAST,
            "--set", "data.augment_on=gpu"]  # fmt: skip
    assert pretrain_main(argv, dataset="stl10", config_dir=REPO / "recipes" / "configs") == 2
    err = capsys.readouterr().err
    assert "Invalid data.augment_on 'gpu'. Expected one of: auto, loader, device." in err


@pytest.mark.slow
def test_device_augmentation_under_bf16_mixed_precision(fake_stl10: Path, tmp_path: Path) -> None:
    """AMP: the views are drawn in fp32 before autocast, AMix-I trains in bf16-mixed."""
    out = tmp_path / "out"
    record = _RecordBatches()
    _fit(fake_stl10, out, 1, "--method", "amix-i", "--precision", "bf16-mixed",
         "--set", "data.augment_on=device", callbacks=(record,))  # fmt: skip
    ckpt = _load(out / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert record.batches[0][0][0].dtype == torch.float32


def test_an_output_dir_that_cannot_be_written_is_refused(
    fake_stl10: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    original = Path.write_bytes

    def read_only(self: Path, data: bytes) -> int:  # as on a read-only mount
        if self.name.startswith(".write-test."):
            raise OSError(errno.EROFS, "Read-only file system")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    (tmp_path / "mounted").mkdir()
    argv = ["--data-root", str(fake_stl10), "--output-dir", str(tmp_path / "mounted"), *FAST]
    assert pretrain_main(argv, dataset="stl10", config_dir=REPO / "recipes" / "configs") == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --output-dir {tmp_path / 'mounted'} is not writable (Read-only file system); "
        "choose another folder, or fix its permissions / remount it read-write.\n"
    )
