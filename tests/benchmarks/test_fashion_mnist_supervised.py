"""benchmarks/fashion_mnist_supervised.py on a tiny Fashion-MNIST in the real idx format."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import write_fashion_mnist
from tests.run_records import logged_per_epoch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fashion_mnist_supervised.py"
PROBE = SCRIPT.with_name("mix_block_probe.py")


@pytest.mark.slow
def test_the_table_holds_every_method_with_mask_statistics_and_grids(tmp_path: Path) -> None:
    fake = write_fashion_mnist(tmp_path / "fm", sizes=(40, 20))
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-root", str(fake.folder), "--output-dir", str(out),
         "--methods", "vanilla", "amix", "--seeds", "0", "--epochs", "2", "--subset", "20",
         "--test-subset", "10", "--batch-size", "5", "--precision", "32-true",
         "--accelerator", "cpu", "--workers", "0"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["vanilla", "amix"]
    amix = rows[1]
    # The numbers are the run's own: its logged test top-1 and Mix Block mask std per epoch.
    top1 = logged_per_epoch(out / "amix_seed0", "val/top1")
    assert amix["epochs"] == [0, 1] and list(top1) == [0, 1]
    assert amix["values"] == pytest.approx([top1[0][0], top1[1][0]])
    assert amix["median"] == pytest.approx(statistics.median(amix["values"]))
    mask_std = logged_per_epoch(out / "amix_seed0", "train/mask_std")  # every 5th step
    first, last = min(mask_std), max(mask_std)
    assert amix["mask_std_first"] == pytest.approx(statistics.fmean(mask_std[first]))
    assert amix["mask_std_last"] == pytest.approx(statistics.fmean(mask_std[last]))
    assert "mask_std_first" not in rows[0]  # vanilla has no Mix Block
    assert (out / "amix_seed0" / "grid.png").is_file()
    table = (out / "results.md").read_text()
    assert "| vanilla | 0 |" in table and "(1.00×)" in table
    assert f"{amix['mask_std_first']:.3f} → {amix['mask_std_last']:.3f}" in table
    # A second call finds the results and trains nothing.
    again = subprocess.run([sys.executable, str(SCRIPT), "--data-root", str(fake.folder),
                            "--output-dir", str(out), "--methods", "vanilla", "amix", "--seeds",
                            "0", "--epochs", "2", "--subset", "20", "--test-subset", "10"],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0 and "Writing to" not in again.stdout
    # The Mix Block probe trains a new block against the vanilla run's frozen classifier.
    probe = subprocess.run([sys.executable, str(PROBE), "--checkpoint",
                            str(out / "vanilla_seed0" / "last.ckpt"), "--data-root",
                            str(fake.folder), "--block", "automix", "--steps", "4",
                            "--batch-size", "8", "--log-every", "2", "--json", str(out / "p.json"),
                            "--set", "mask_loss_weight=0.5", "--grid", str(out / "p.png")],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads((out / "p.json").read_text())
    assert report["config"]["content"] == "linear" and report["config"]["mask_loss_weight"] == 0.5
    assert [row["step"] for row in report["rows"]] == [2, 4] and (out / "p.png").is_file()
    printed = probe.stdout.splitlines()
    for row in report["rows"]:  # the JSON holds the rows the probe printed as it trained
        assert " ".join(f"{v:>9}" for v in row.values()) in printed, row
        assert row["ce_block"] > 0 and row["ce_mixup"] > 0 and row["ce_cutmix"] > 0
    bad = subprocess.run([sys.executable, str(PROBE), "--checkpoint", str(out / "p.json"),
                          "--set", "nonsense=1"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert bad.returncode != 0 and "nonsense=1" in bad.stderr
