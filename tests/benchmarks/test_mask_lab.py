"""benchmarks/mask_lab.py on a tiny Fashion-MNIST in the real idx format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import write_fashion_mnist

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mask_lab.py"


def test_help_explains_the_setting_and_the_rows() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0
    for text in ("--rows", "--seeds", "(default: 80)", "(default: 1000)", "a10", "mask lab"):
        assert text in result.stdout, text
    listed = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0
    assert "mix_block.gamma=fixed" in listed.stdout and "mixing.heads=two" in listed.stdout


@pytest.mark.slow
def test_a_few_steps_print_the_four_mask_statistics_per_epoch_and_draw_the_grid(
    tmp_path: Path,
) -> None:
    fake = write_fashion_mnist(tmp_path / "fm", sizes=(40, 20))
    out = tmp_path / "lab"
    base = [sys.executable, str(SCRIPT), "--data-root", str(fake.folder), "--output-dir",
            str(out), "--epochs", "2", "--subset", "20", "--test-subset", "10", "--batch-size",
            "5"]  # fmt: skip
    argv = [*base, "--rows", "vanilla", "a8", "--seeds", "0"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in rows] == ["vanilla", "a8"]
    a8 = rows[1]
    assert [e["epoch"] for e in a8["per_epoch"]] == [0, 1]
    for epoch in a8["per_epoch"]:
        assert set(epoch) == {"epoch", "top1", "std", "lam_corr", "lam_gap", "whole"}
    assert a8["mask_std"] == a8["per_epoch"][-1]["std"]
    assert "| 2 |" in result.stdout and "corr(mean, λ')" in result.stdout
    assert (out / "a8_seed0" / "grid.png").is_file()
    config = (out / "a8_seed0" / "config.yaml").read_text()
    for expected in (
        "heads: two",
        "alpha: 2.0",
        "width: 16",
        "gamma: fixed",
        "block_lam: batch",
    ):
        assert expected in config, expected
    table = (out / "results.md").read_text()
    assert "| vanilla (no mixup) | 0 |" in table and "(1.00×)" in table
    # A second call reads the cached runs and trains nothing.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Writing to" not in again.stdout
    # --report tabulates only the finished runs among the rows and seeds asked for.
    report = subprocess.run([*base, "--report", "--rows", "a8", "mixup", "--seeds", "0",
                             "1"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert [r["row"] for r in json.loads((out / "results.json").read_text())] == ["a8"]
    assert not (out / "mixup_seed0").exists() and "Writing to" not in report.stdout
    none = subprocess.run([*base, "--report", "--rows", "mixup"], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert none.returncode == 2 and "no finished run" in none.stderr
    bad = subprocess.run([sys.executable, str(SCRIPT), "--data-root", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "no Fashion-MNIST" in bad.stderr
