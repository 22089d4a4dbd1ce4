"""One rank of the 2-process ODC memory test (gloo, CPU); launched by tests/clustering/test_odc.py.

Usage: ``python odc_ddp_worker.py RANK WORLD_SIZE PORT OUTPUT_DIR``. Writes
``OUTPUT_DIR/rank<RANK>.pt`` with the state after :meth:`ODCMemory.initialize`, the state after
the updates, and this rank's batches with the labels that ``update`` returned.
"""

from __future__ import annotations

import sys
from pathlib import Path

import faiss
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lightly_amix.clustering import ODCMemory

N, D, K, MIN, BATCH, STEPS = 400, 16, 8, 20, 24, 12


def main(rank: int, world_size: int, port: int, out: Path) -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    kwargs: dict[str, int] = {
        "num_samples": N,
        "feature_dim": D,
        "num_classes": K,
        "min_cluster_size": MIN,
        "refresh_interval": 5,
        "seed": 0,
    }
    memory = ODCMemory(**kwargs)
    g = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(N, D, generator=g), dim=1)
    # Ranks may extract slightly different features (per-rank BatchNorm statistics); the
    # memory must still end up identical everywhere.
    features = features + 1e-3 * rank * torch.randn(N, D, generator=torch.Generator())
    memory.initialize(features)
    init = {k: v.clone() for k, v in memory.state_dict().items()}

    batches = []
    for step in range(STEPS):
        # The same generator on every rank: each rank takes its own slice of one permutation.
        gs = torch.Generator().manual_seed(100 + step)
        perm = torch.randperm(N, generator=gs)[: world_size * BATCH]
        if step % 4 == 1:
            perm[BATCH] = perm[0]  # an index in both ranks' batches (sampler padding)
        feats = torch.randn(world_size * BATCH, D, generator=gs)
        idx = perm[rank * BATCH : (rank + 1) * BATCH].clone()
        new = feats[rank * BATCH : (rank + 1) * BATCH].clone()
        labels = memory.update(idx, new)
        batches.append((idx, new, labels))

    final = {k: v.clone() for k, v in memory.state_dict().items()}
    # Unequal batch sizes: every rank raises (none is left waiting in the gather).
    try:
        memory.update(torch.arange(3 + rank), torch.randn(3 + rank, D))
        error = ""
    except ValueError as exc:
        error = str(exc)

    torch.save(
        {
            "kwargs": kwargs,
            "init": init,
            "final": final,
            "batches": batches,
            "unequal_batch_error": error,
            "step_after_error": int(memory.step),
        },
        out / f"rank{rank}.pt",
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
