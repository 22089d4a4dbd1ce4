from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightly_amix.checkpoints import load_checkpoint
from lightly_amix.data import build_dataset, eval_transform
from lightly_amix.eval.features import extract_features, load_encoder
from lightly_amix.eval.knn import knn_accuracy
from tests.fakes import write_fashion_mnist

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fashion_mnist.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_an_interrupted_run_is_resumed_and_scored(tmp_path: Path) -> None:
    fake = write_fashion_mnist(tmp_path / "fm", sizes=(200, 40))
    out = tmp_path / "bench"
    common = ["--data-root", str(fake.folder), "--output-dir", str(out), "--methods", "mocov2",
              "--train-size", "40", "--test-size", "20", "--batch-size", "8",
              "--queue-size", "16", "--probe-epochs", "1", "--workers", "0",
              "--accelerator", "cpu"]  # fmt: skip
    first = run(*common, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    # As after an interruption: a checkpoint of 1 epoch, and no result yet.
    (out / "mocov2_seed0.json").unlink()

    second = run(*common, "--epochs", "2")

    assert second.returncode == 0, second.stderr[-2000:]
    run_dir = out / "runs" / "mocov2_seed0"
    resumed = f"Resuming the interrupted mocov2 run (seed 0) from {run_dir / 'last.ckpt'}"
    assert f"{resumed} after 1.0 epochs" in second.stdout
    assert load_checkpoint(run_dir / "last.ckpt")["global_step"] == 2 * 40 // 8
    record = json.loads((out / "mocov2_seed0.json").read_text())
    assert record["argv"][-2:] == ["--epochs", "2"]
    assert record["seconds_per_epoch"] > 0
    # The score is the kNN accuracy of the saved backbone on the benchmark's test subset.
    encoder, _ = load_encoder(run_dir / "backbone.pt")
    transform = eval_transform(28)
    train_f, train_y, test_f, test_y = (
        t
        for split in ("train", "test")
        for t in extract_features(
            encoder, build_dataset("fashion-mnist", out / "data", split, transform=transform)
        )
    )
    knn20 = knn_accuracy(train_f, train_y, test_f, test_y, 10, k=20, t=0.1)["top1"]
    assert record["knn20"] == pytest.approx(knn20, abs=1e-6)
    row = next(line for line in second.stdout.splitlines() if line.startswith("| mocov2 |"))
    assert f" {record['knn20']:.1f} |" in row
