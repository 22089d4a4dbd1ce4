#!/usr/bin/env python
"""Supervised mixup classification on Fashion-MNIST: one budget for every method (paper §4.1).

Every method trains the same ResNet-18 (CIFAR stem) with the same recipe
(``recipes/configs/classify/fashion_mnist.yaml``: RandomCrop with 4 px reflect padding + flip,
SGD lr 0.1, wd 1e-4, batch 100, cosine, α = 1) for the same epochs on the same class-balanced
training subset (drawn with the seed), and is tested after every epoch on the same
class-balanced test subset. The score is the paper's: the median test top-1 of the last 10
epochs. For the learned mixups the table adds the Mix Block's mask statistics: the mean
per-sample spatial standard deviation of its masks in the first and in the last epoch (near 0:
a near-uniform blend), and each run leaves ``grid.png``, mixed test images drawn by the final
checkpoint's Mix Block.

Runs are resumable and cached: a run with a ``classify.json`` is skipped, one with checkpoints
continues from the most advanced (``--resume auto``) when the same command is run again.

Examples:
    python benchmarks/fashion_mnist_supervised.py --methods vanilla cutmix amix --seeds 0 1
    python benchmarks/fashion_mnist_supervised.py --epochs 3 --subset 1000 --methods amix
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lightly_amix.classify_cli import classify_main
from lightly_amix.data import FASHION_MNIST_DEFAULT_ROOT
from lightly_amix.training import checkpoint_files

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
LEARNED = ("automix", "amix")


def run(
    method: str,
    seed: int,
    out: Path,
    args: argparse.Namespace,
    extra: Sequence[str] = (),
    learned_extras: bool = True,
) -> dict[str, Any]:
    """Trains (or resumes, or reads) one method and seed; returns its result with timing.

    ``extra`` holds this run's own config overrides (after ``args.overrides``);
    ``learned_extras`` adds the first/last mask std and ``grid.png`` for the learned mixups.
    """
    result_path, timing_path = out / "classify.json", out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"seconds": 0.0}
    if not result_path.is_file():
        argv = [
            "--dataset", "fashion-mnist", "--data-root", str(args.data_root), "--method", method,
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--seed", str(seed), "--precision", args.precision, "--accelerator", args.accelerator,
            "--num-workers", str(args.workers), "--output-dir", str(out),
            "--set", f"data.subset={args.subset}", "--set", f"data.test_subset={args.test_subset}",
            "--set", "trainer.log_every_n_steps=5",
            *[item for value in (*args.overrides, *extra) for item in ("--set", value)],
        ]  # fmt: skip
        if checkpoint_files(out):
            argv += ["--resume", "auto"]
        start = time.perf_counter()
        code = classify_main(argv, config_dir=CONFIGS)
        timing["seconds"] += time.perf_counter() - start
        out.mkdir(parents=True, exist_ok=True)
        timing_path.write_text(json.dumps(timing))
        if code != 0:
            raise SystemExit(f"{method} (seed {seed}) stopped (exit {code}); rerun to continue.")
    result = json.loads(result_path.read_text())
    result["seconds_per_epoch"] = timing["seconds"] / args.epochs
    if method in LEARNED and learned_extras:
        result.update(mask_statistics(out))
        grid(out, args)
    return result


def mask_statistics(out: Path) -> dict[str, float]:
    """Mean ``train/mask_std`` of the first and of the last epoch, from the CSV logs."""
    by_epoch: dict[int, list[float]] = {}
    for path in sorted(out.glob("logs/version_*/metrics.csv")):
        with open(path) as file:
            for row in csv.DictReader(file):
                if row.get("train/mask_std"):
                    by_epoch.setdefault(int(row["epoch"]), []).append(float(row["train/mask_std"]))
    if not by_epoch:
        return {}
    first, last = min(by_epoch), max(by_epoch)
    return {
        "mask_std_first": statistics.fmean(by_epoch[first]),
        "mask_std_last": statistics.fmean(by_epoch[last]),
    }


def grid(out: Path, args: argparse.Namespace) -> None:
    """``grid.png``: test images mixed by the final checkpoint's Mix Block (and the fixed ones)."""
    if (out / "grid.png").is_file():
        return
    sys.path.insert(0, str(REPO / "recipes"))
    import visualize_mixup  # the recipe, reused as a function

    visualize_mixup.main(["--checkpoint", str(out / "last.ckpt"), "--dataset", "fashion-mnist",
                          "--data-root", str(args.data_root), "--split", "test", "--pairs", "4",
                          "--output", str(out / "grid.png")])  # fmt: skip


def table(results: list[dict[str, Any]], last: int) -> str:
    """The Markdown summary: mean over seeds (each seed's value in brackets)."""
    vanilla = [r["seconds_per_epoch"] for r in results if r["method"] == "vanilla"]
    base = statistics.fmean(vanilla) if vanilla else None
    lines = [
        f"| method | seeds | median top-1, last {last} epochs | final top-1 | s / epoch "
        "| mask std, first → last epoch |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method in dict.fromkeys(r["method"] for r in results):
        rows = [r for r in results if r["method"] == method]

        def cell(key: str, rows: list[dict[str, Any]] = rows) -> str:
            values = [r[key] for r in rows]
            each = " / ".join(f"{v:.2f}" for v in values)
            return each if len(values) == 1 else f"{statistics.fmean(values):.2f} ({each})"

        seconds = statistics.fmean(r["seconds_per_epoch"] for r in rows)
        ratio = f" ({seconds / base:.2f}×)" if base else ""
        masks = "–"
        if all("mask_std_first" in r for r in rows):
            masks = " / ".join(
                f"{r['mask_std_first']:.3f} → {r['mask_std_last']:.3f}" for r in rows
            )
        seeds = ", ".join(str(r["seed"]) for r in rows)
        lines.append(f"| {method} | {seeds} | {cell('median')} | {cell('final')} | "
                     f"{seconds:.0f}{ratio} | {masks} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--data-root", default=FASHION_MNIST_DEFAULT_ROOT, help="the four idx .gz files")
    add("--methods", nargs="+", default=["vanilla", "mixup", "cutmix", "fmix", "automix", "amix"])
    add("--seeds", nargs="+", type=int, default=[0, 1])
    add("--epochs", type=int, default=15)
    add("--subset", type=int, default=3000, help="class-balanced training images")
    add("--test-subset", type=int, default=3000, help="class-balanced test images")
    add("--batch-size", type=int, default=100)
    add("--precision", default="bf16-mixed")
    add("--accelerator", default="auto")
    add("--workers", type=int, default=2)
    add("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="config override for every run")  # fmt: skip
    add("--output-dir", default="benchmarks/out/fashion_mnist_supervised")
    args = parser.parse_args()
    if not ready(args):
        return 2
    root = Path(args.output_dir)
    results = [
        run(method, seed, root / f"{method}_seed{seed}", args)
        for seed in args.seeds
        for method in args.methods
    ]
    results.sort(key=lambda r: (args.methods.index(r["method"]), r["seed"]))
    summary = table(results, last=results[0]["epochs"][-1] - results[0]["epochs"][0] + 1)
    save_and_print(root, results, summary, "Supervised mixups", args)
    return 0


def ready(args: argparse.Namespace) -> bool:
    """Sets ``--threads``; False (with one line on stderr) when there is no Fashion-MNIST."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (Path(args.data_root) / "train-images-idx3-ubyte.gz").is_file():
        print(f"error: no Fashion-MNIST in {args.data_root}; pass --data-root (or on Debian: "
              "apt-get install dataset-fashion-mnist).", file=sys.stderr)  # fmt: skip
        return False
    return True


def save_and_print(
    root: Path, results: list[dict[str, Any]], summary: str, title: str, args: argparse.Namespace
) -> None:
    """``results.json`` and ``results.md`` in ``root``; the table on stdout under its setting."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(results, indent=2))
    (root / "results.md").write_text(summary + "\n")
    print(f"{title}: Fashion-MNIST, {args.subset} training / {args.test_subset} test images, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.precision}:")  # fmt: skip
    print(summary)


if __name__ == "__main__":
    sys.exit(main())
