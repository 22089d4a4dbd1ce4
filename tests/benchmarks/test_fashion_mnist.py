from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightly_amix.checkpoints import load_checkpoint
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
    assert 0.0 <= record["knn20"] <= 100.0 and record["seconds_per_epoch"] > 0
    assert "| mocov2 |" in second.stdout
