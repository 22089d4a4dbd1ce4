#!/usr/bin/env python
"""k-means speed (faiss vs scikit-learn) and the ODC memory's share of an AMix-C step.

1. Random unit vectors of the STL-10 size (105,000 x 128), K = 200, 20 Lloyd iterations, in one
   process: ``lightly_amix.clustering.kmeans`` (faiss on every row: no subsampling), faiss
   with its default subsampling (``max_points_per_centroid=256``, i.e. 51,200 of the 105,000
   rows), and scikit-learn's ``KMeans`` (Lloyd, random init, ``n_init=1``, ``tol=0`` so that
   all 20 iterations run). Median seconds of ``--repeats`` runs, and ratios.
2. ODC overhead: an AMix-C model whose clustering memory holds 105,000 features (initialised
   from the k-means above) trains ``--steps`` steps; the time spent in ``ODCMemory.update``
   (memory update, relabelling, and the centroid refresh every ``odc.refresh_interval``
   steps) is compared with the whole step, both averaged over the same steps.

Examples:
    python benchmarks/kmeans.py                 # 2 threads, CPU
    python benchmarks/kmeans.py --skip-sklearn --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import RandomViews, StepTimer  # noqa: E402

from lightly_amix.clustering import kmeans  # noqa: E402
from lightly_amix.config import load_config  # noqa: E402
from lightly_amix.data.datamodule import PretrainDataModule  # noqa: E402
from lightly_amix.models.amix import AMix  # noqa: E402
from lightly_amix.models.factory import build_model  # noqa: E402


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls (the first call also warms thread pools and caches),
    and the last call's result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def inertia(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance of the rows to the mean of their cluster.

    Recomputed from the labels alone, so that spherical k-means (unit-norm centroids) and
    Euclidean k-means are scored alike.
    """
    k = int(labels.max()) + 1
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=k)[:, None]
    means = sums / np.maximum(counts, 1)
    return float(((x - means[labels]) ** 2).sum(axis=1).mean())


def kmeans_rows(
    x: np.ndarray, k: int, iters: int, skip_sklearn: bool, repeats: int = 1
) -> list[tuple[str, float, float]]:
    rows = []
    seconds, (centroids, labels) = timed(
        lambda: kmeans(torch.from_numpy(x), k, iters=iters), repeats
    )
    rows.append(("faiss, every row, spherical, k-means++ (lightly_amix kmeans)", seconds,
                 inertia(x, labels.numpy())))  # fmt: skip

    def faiss_kmeans(**params: Any) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=0, **params)
            km.train(x)
            return km.index.search(x, 1)[1][:, 0]

        return run

    variants = [
        ("faiss, every row, spherical, random init",
         {"max_points_per_centroid": len(x), "spherical": True}),
        ("faiss, every row, plain (faiss.Kmeans)", {"max_points_per_centroid": len(x)}),
        (f"faiss, default subsampling ({min(len(x), 256 * k)} rows)", {}),  # 256 per centroid
    ]  # fmt: skip
    for name, params in variants:
        seconds, lab = timed(faiss_kmeans(**params), repeats)
        rows.append((name, seconds, inertia(x, lab)))
    if not skip_sklearn:
        from sklearn.cluster import KMeans

        est = KMeans(k, init="random", n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd",
                     random_state=0)  # fmt: skip
        seconds, _ = timed(lambda: est.fit(x), repeats)
        rows.append((f"scikit-learn KMeans (lloyd, random init, {est.n_iter_} iterations)",
                     seconds, inertia(x, est.labels_)))  # fmt: skip
    return rows


class ODCTimer:
    """Wraps ``ODCMemory.update`` and records its wall time per call (ms)."""

    def __init__(self, model: AMix) -> None:
        assert model.odc is not None
        self.times: list[float] = []
        original = model.odc.update

        def update(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = original(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append((time.perf_counter() - start) * 1000)
            return out

        model.odc.update = update


def odc_share(x: np.ndarray, args: argparse.Namespace) -> tuple[float, float, int]:
    n = x.shape[0]
    cfg = load_config(overrides=[
        "method=amix-c", "mixing.block_loss=ce_pl+bce", f"trainer.batch_size={args.batch_size}",
        "model.queue_size=4096",
        f"odc.num_clusters={args.clusters}",
    ])  # fmt: skip
    model = build_model(cfg, n)
    assert isinstance(model, AMix) and model.odc is not None
    model.odc.initialize(F.normalize(torch.from_numpy(x), dim=1))  # skips the feature pass
    odc = ODCTimer(model)
    timer = StepTimer(args.warmup)
    data = PretrainDataModule(RandomViews(n, args.image_size), args.batch_size, 0, seed=0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps + args.warmup, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    odc_ms = statistics.fmean(odc.times[-len(timer.times) :])
    return odc_ms, statistics.fmean(timer.times), model.odc.refresh_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--rows", type=int, default=105_000)
    add("--dim", type=int, default=128)
    add("--clusters", type=int, default=200)
    add("--iters", type=int, default=20)
    add("--threads", type=int, default=2)
    add("--skip-sklearn", action="store_true")
    add("--repeats", type=int, default=3, help="k-means runs per row (median seconds)")
    add("--steps", type=int, default=20, help="timed AMix-C steps (a multiple of 10)")
    add("--warmup", type=int, default=2)
    add("--batch-size", type=int, default=32)
    add("--image-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}.")
    rows = kmeans_rows(x, args.clusters, args.iters, args.skip_sklearn, args.repeats)
    print(f"k-means: {args.rows} x {args.dim} random unit vectors, K = {args.clusters}, "
          f"{args.iters} iterations, {args.threads} threads; median of {args.repeats} "
          "runs")  # fmt: skip
    print("| k-means | seconds | time / first row | mean squared distance to cluster mean |")
    print("|---|---:|---:|---:|")
    for name, seconds, quality in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / rows[0][1]:.2f} | {quality:.4f} |")

    odc_ms, step_ms, interval = odc_share(x, args)
    print(f"\nODC overhead: AMix-C, ResNet-18, batch {args.batch_size}, {args.image_size} px, "
          f"memory of {args.rows} features, K = {args.clusters}, refresh every {interval} "
          f"steps; mean of {args.steps} steps")  # fmt: skip
    print("| ODC ms / step | AMix-C ms / step | share |")
    print("|---:|---:|---:|")
    print(f"| {odc_ms:.1f} | {step_ms:.0f} | {100 * odc_ms / step_ms:.2f} % |")


if __name__ == "__main__":
    main()
