#!/usr/bin/env python
"""The mask lab: does the Mix Block learn spatial, λ-following masks in supervised training?

A supervised setting cheap enough for a 2-core CPU in which fixed mixups measurably help, to
decide the Mix Block's defaults by measurement. Every run trains the same narrow ResNet-18
(``model.width=16``: the depth and map sizes of ResNet-18, stage-3 maps 7x7 on 28 px, about
1/16 of the compute) on a class-balanced subset of Fashion-MNIST (1,000 images by default,
drawn with the seed) for many epochs (80), SGD lr 0.1 with a per-step cosine, wd 5e-4,
batch 100, RandomCrop with 4 px reflect padding + flip, fp32, and tests it after every
epoch on a fixed class-balanced test subset (2,000). The score is the median test top-1 of the
last 5 epochs. The learned mixups' momentum network starts at 0.98 (an EMA horizon of 50
steps, 6 % of an 800-step run).

Each row is a method and a list of config overrides (``--list`` prints them): the methods
(vanilla, MixUp, CutMix, FMix, AutoMix, AMix) and the ablation ``a1`` … ``a10``, which goes
from today's Mix Block+ defaults one change at a time towards the authors' code (OpenMixup's
SAMix and AutoMix CIFAR configs). For every learned-mixup run it prints, per epoch, the four
statistics of the Mix Block's own masks over the epoch's samples: mean per-sample spatial std,
Pearson correlation of the mask mean with λ', mean |mask mean − λ'|, and the share of
whole-image masks (mean < 0.02 or > 0.98); the final checkpoint's masks are drawn in
``grid.png``. The goal for a Mix Block: std ≥ 0.15, correlation ≥ 0.7, gap ≤ 0.1, whole ≤ 10 %.

Runs are cached and resumable (see ``benchmarks/fashion_mnist_supervised.py``): a finished run
is read back, an interrupted one continues. Run seeds side by side in two processes with
``--threads 1`` each.

Examples:
    python benchmarks/mask_lab.py --rows vanilla mixup cutmix --seeds 0 1 2 --threads 1
    python benchmarks/mask_lab.py --rows amix a1 a2 --seeds 0 --threads 1
    python benchmarks/mask_lab.py --list
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from lightly_amix.data import FASHION_MNIST_DEFAULT_ROOT
from lightly_amix.mixing.mix_block import MixBlockConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
# A sibling script, imported as a module (its folder is on sys.path above).
from fashion_mnist_supervised import grid, ready, run, save_and_print  # noqa: E402

# The lab's setting, on top of recipes/configs/classify/fashion_mnist.yaml.
SETTING = (
    "model.width=16", "optim.lr=0.1", "optim.weight_decay=0.0005", "mixing.momentum=0.98",
    "last_epochs=5", "trainer.log_every_n_steps=5",
)  # fmt: skip
STATS = ("std", "lam_corr", "lam_gap", "whole")
GOAL = {"std": (">=", 0.15), "lam_corr": (">=", 0.7), "lam_gap": ("<=", 0.1),
        "whole": ("<=", 0.1)}  # fmt: skip


def block_overrides(cfg: MixBlockConfig) -> tuple[str, ...]:
    """``mix_block.KEY=VALUE`` for every field of ``cfg`` (so a run's block is exactly it)."""
    out = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
        out.append(f"mix_block.{f.name}={text}")
    return tuple(out)


PAPER = tuple(f"mix_block.{key}={value}" for key, value in (
    ("variance_norm", "false"), ("variance_weight", 1.0)))  # fmt: skip


def _ablation() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Cumulative rows from Mix Block+ as the paper's text towards the authors' code."""
    steps = [
        ("a1", "+ γ fixed at 1", ("mix_block.gamma=fixed",)),
        ("a2", "+ logits upsampled, then sigmoid", ("mix_block.upsample_logits=true",)),
        ("a3", "+ value head without biases, ELU, dropout 0",
         ("mix_block.content_bias=false", "mix_block.activation=elu", "mix_block.dropout=0.0")),
        ("a4", "+ mask loss on the batch, 2 × variance",
         ("mix_block.mask_loss_reduction=batch", "mix_block.variance_weight=2.0")),
        ("a5", "+ λ rescaled (k = 0.25), Pᵀ, λ adjusting in 1/4 of batches",
         ("mix_block.lam_rescale=0.25", "mix_block.transpose_attention=true",
          "mix_block.adjust_probability=0.25")),
        ("a6", "+ one λ' per batch", ("mixing.block_lam=batch",)),
        ("a7", "+ α = 2", ("mixing.alpha=2.0",)),
        ("a8", "+ two heads", ("mixing.heads=two",)),
        ("a9", "+ lr cosine to 0.5 × peak", ("optim.final_lr_ratio=0.5",)),
        ("a10", "+ momentum held for 10 %, then cosine to 0.999999",
         ("mixing.momentum_hold=0.1", "mixing.momentum_end=0.999999")),
    ]  # fmt: skip
    rows: dict[str, tuple[str, str, tuple[str, ...]]] = {
        "a0": ("amix", "Mix Block+ as the paper's text (0.1.0's defaults)", PAPER)
    }
    previous: tuple[str, ...] = PAPER
    for key, label, change in steps:
        previous = (*previous, *change)
        rows[key] = ("amix", label, previous)
    return rows


def _automix_rows() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """AutoMix's block from the authors' code, with λ given to it (the paper's AutoMix row)."""
    code = block_overrides(MixBlockConfig.automix())
    given = (*code, "mix_block.lam_encoding=concat", "mix_block.mask_loss_reduction=sample")
    # The authors' CIFAR AutoMix run as a whole: the block as their code (λ not given to it,
    # mask loss on the batch mean) and their training (α = 2, one λ per batch, two heads, the
    # block's lr to half its peak, momentum held for 10 %).
    training = ("mixing.alpha=2.0", "mixing.block_lam=batch", "mixing.heads=two",
                "optim.final_lr_ratio=0.5", "mixing.momentum_hold=0.1",
                "mixing.momentum_end=0.999999")  # fmt: skip
    normalised = (*given, "mix_block.mask_loss=mean_var", "mix_block.variance_norm=true")

    def weighted(weight: float) -> tuple[str, ...]:
        return (*normalised, f"mix_block.variance_weight={weight}")

    return {
        "b0": ("amix", "AutoMix as the authors' code (block and training)", (*code, *training)),
        "b1": ("amix", "AutoMix's block (code) + λ as a channel, mask loss per sample", given),
        "b2": ("amix", "b1 + the variance term divided by μ(1 − μ), × 2", weighted(2.0)),
        "b3": ("amix", "b1 + the variance term divided by μ(1 − μ), × 5", weighted(5.0)),
        "b4": ("amix", "b1 + the variance term divided by μ(1 − μ), × 3", weighted(3.0)),
        "b5": ("amix", "b1 + the variance term divided by μ(1 − μ), × 4", weighted(4.0)),
        "b6": ("amix", "b5 with no margin on the area loss",
               (*weighted(4.0), "mix_block.mask_margin=0.0")),
        # mask_loss_weight scales both terms: × 3 with the variance weight / 3 makes the
        # area term 3 × stronger and leaves the variance term's strength (0.1 × 4) as in b6.
        "b7": ("amix", "b6 with the area term × 3 (the variance term's strength unchanged)",
               (*normalised, "mix_block.mask_margin=0.0", "mix_block.mask_loss_weight=0.3",
                "mix_block.variance_weight=1.3333333")),
    }  # fmt: skip


# Fixes of our own, each one change from Mix Block+ as the paper's text (row a0).
OWN_ROWS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "c1": ("amix", "a0 with 10 × the Mix Block's learning rate",
           (*PAPER, "mixing.block_lr_scale=10")),
    "c2": ("amix", "a0 with the variance term × 5", (*PAPER, "mix_block.variance_weight=5.0")),
    "c3": ("amix", "a0 with only the block's output layer small at init",
           (*PAPER, "mix_block.small_init=output")),
    "c5": ("amix", "a0 with the variance divided by μ(1 − μ), × 2 (the new default)",
           ("mix_block.variance_norm=true", "mix_block.variance_weight=2.0")),
}  # fmt: skip


ROWS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "vanilla": ("vanilla", "vanilla (no mixup)", ()),
    "mixup": ("mixup", "MixUp", ()),
    "cutmix": ("cutmix", "CutMix", ()),
    "fmix": ("fmix", "FMix", ()),
    "automix": ("automix", "AutoMix (block as the authors' code)", ()),
    "amix": ("amix", "AMix (Mix Block+, the defaults)", ()),
    **_ablation(),
    **_automix_rows(),
    **OWN_ROWS,
}
LEARNED_METHODS = ("automix", "amix")


def per_epoch(out: Path) -> list[dict[str, float]]:
    """Per epoch: ``top1`` and the four mask statistics, from the run's CSV logs."""
    keys = {"val/top1": "top1", **{f"mask/{s}": s for s in STATS}}
    epochs: dict[int, dict[str, float]] = {}
    for path in sorted(out.glob("logs/version_*/metrics.csv")):
        with open(path) as file:
            for row in csv.DictReader(file):
                for key, name in keys.items():
                    if row.get(key):
                        epochs.setdefault(int(row["epoch"]), {})[name] = float(row[key])
    return [{"epoch": e, **values} for e, values in sorted(epochs.items())]


def run_row(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Trains (or reads) one row and seed; prints its per-epoch table; returns its result."""
    method, label, overrides = ROWS[name]
    out = Path(args.output_dir) / f"{name}_seed{seed}"
    result = run(method, seed, out, args, extra=overrides, learned_extras=False)
    result.update(row=name, label=label, per_epoch=per_epoch(out))
    if method in LEARNED_METHODS:
        last = result["per_epoch"][-1] if result["per_epoch"] else {}
        result.update({f"mask_{s}": last.get(s, math.nan) for s in STATS})
        grid(out, args)
        print(f"\n{label}, seed {seed}: per epoch")
        print(epoch_table(result["per_epoch"]))
    return result


def epoch_table(rows: list[dict[str, float]]) -> str:
    lines = ["| epoch | top-1 | mask std | corr(mean, λ') | \\|mean − λ'\\| | whole |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        cells = [f"{r.get(k, math.nan):.3f}" for k in STATS]
        lines.append(f"| {int(r['epoch']) + 1} | {r.get('top1', math.nan):.2f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """Mean over seeds (each seed in brackets), Δ to vanilla, time × vanilla, mask statistics."""

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    order = list(dict.fromkeys(r["row"] for r in results))
    by_row = {name: [r for r in results if r["row"] == name] for name in order}
    vanilla = by_row.get("vanilla")
    base_acc = mean(vanilla, "median") if vanilla else None
    base_time = mean(vanilla, "seconds_per_epoch") if vanilla else None
    lines = [
        "| row | seeds | median top-1, last 5 | Δ vanilla | spread | s / epoch (× vanilla) "
        "| mask std | corr(mean, λ') | \\|mean − λ'\\| | whole |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in by_row.items():
        acc = mean(rows, "median")
        each = " / ".join(f"{r['median']:.2f}" for r in rows)
        delta = f"{acc - base_acc:+.2f}" if base_acc is not None else "–"
        spread = max(r["median"] for r in rows) - min(r["median"] for r in rows)
        seconds = mean(rows, "seconds_per_epoch")
        ratio = f" ({seconds / base_time:.2f}×)" if base_time else ""
        masks = ["–"] * 4
        if all("mask_std" in r for r in rows):
            masks = [f"{mean(rows, f'mask_{s}'):.3f}" for s in STATS]
        seeds = ", ".join(str(r["seed"]) for r in rows)
        lines.append(f"| {ROWS[name][1]} | {seeds} | {acc:.2f} ({each}) | {delta} | "
                     f"{spread:.2f} | {seconds:.1f}{ratio} | "
                     + " | ".join(masks) + " |")  # fmt: skip
    return "\n".join(lines)


def list_rows() -> str:
    return "\n".join(f"{name:8s} {method:8s} {label}\n{'':17s}{' '.join(over) or '(no override)'}"
                     for name, (method, label, over) in ROWS.items())  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Rows: " + ", ".join(ROWS) + " (their overrides: --list).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--rows",
        nargs="+",
        default=["vanilla", "mixup", "cutmix"],
        choices=list(ROWS),
        metavar="ROW",
        help="rows to run, in this order (default: %(default)s)",
    )
    add("--seeds", nargs="+", type=int, default=[0, 1, 2], help="(default: %(default)s)")
    add("--list", action="store_true", help="print every row's method and overrides, then exit")
    add(
        "--report",
        action="store_true",
        help="train nothing: tabulate the finished runs among --rows x --seeds",
    )
    add(
        "--data-root",
        default=FASHION_MNIST_DEFAULT_ROOT,
        help="folder of the four idx .gz files (default: %(default)s)",
    )
    add("--epochs", type=int, default=80, help="(default: %(default)s)")
    add(
        "--subset",
        type=int,
        default=1000,
        help="class-balanced training images, drawn with the seed (default: %(default)s)",
    )
    add(
        "--test-subset",
        type=int,
        default=2000,
        help="class-balanced test images, the same for every run (default: %(default)s)",
    )
    add("--batch-size", type=int, default=100, help="(default: %(default)s)")
    add("--precision", default="32-true", help="Lightning precision (default: %(default)s)")
    add("--accelerator", default="cpu", help="(default: %(default)s)")
    add("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    add("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, after the lab's setting (repeatable)",
    )
    add(
        "--output-dir",
        default="benchmarks/out/mask_lab",
        help="one folder per row and seed, results.json/.md (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.list:
        print(list_rows())
        return 0
    if not ready(args):
        return 2
    args.overrides = [*SETTING, *args.overrides]
    root = Path(args.output_dir)
    jobs = [(name, seed) for name in args.rows for seed in args.seeds]
    if args.report:
        jobs = [(n, s) for n, s in jobs if (root / f"{n}_seed{s}" / "classify.json").is_file()]
        if not jobs:
            print(f"error: no finished run of those rows and seeds in {root}.", file=sys.stderr)
            return 2
    results = [run_row(name, seed, args) for name, seed in jobs]
    print()
    save_and_print(root, results, summary(results), "Mask lab", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
