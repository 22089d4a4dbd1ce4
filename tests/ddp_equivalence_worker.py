"""One process of the "2 ranks = 1 process on the global batch" test (gloo, CPU).

Launched by ``tests/test_distributed_equivalence.py``:
``python ddp_equivalence_worker.py RANK WORLD_SIZE PORT OUTPUT_DIR PIPELINE``. With
``WORLD_SIZE`` 2 the process is one rank of a Lightning DDP run (started externally, as by
``torchrun``); with 1 it is the single-process reference, which gets both ranks' samples in
each batch (rank 0's first). Both train AMix-I for :data:`STEPS` steps on fixed tensors and
write ``OUTPUT_DIR/world<WORLD_SIZE>_rank<RANK>.pt``: every step's loss terms, the parameters
of all (online and momentum) modules and the queue with its pointer and fill.

What would make the runs differ for reasons other than the code under test is taken out:

- BatchNorm normalises with fixed statistics (:func:`freeze_batch_norm`: those of all images,
  computed the same way in every process), so a sample's features do not depend on which
  other samples share its device. DDP with plain BatchNorm normalises per rank, and
  SyncBatchNorm needs a GPU.
- λ comes from a fixed table over the *global* batch (:class:`GlobalLambda`). The package draws
  λ per sample on each rank from that rank's stream, which is correct (λ is i.i.d. per sample)
  but cannot reproduce a 1-process draw of the whole batch.
- The Mix Block's dropout is off, for the same reason (its masks are drawn per rank).

What stays as in a training run: Lightning's DDP (gradient averaging, buffer broadcast), the
optimiser with the world-size learning-rate rule, :class:`~lightly_amix.seeding.StepSeed`
(seed per rank and step, so rank 1's stream differs from rank 0's, and rank 0's equals the
single process's), the shuffled key encoder, the queue, and the partner draws.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightly_amix.config import MixingConfig, ModelConfig, OptimConfig
from lightly_amix.mixing import MixBlockConfig
from lightly_amix.models import AMix
from lightly_amix.seeding import StepSeed

PER_RANK, RANKS, STEPS, SIZE = 4, 2, 2, 16  # images per rank and step, ranks, steps, pixels
GLOBAL = PER_RANK * RANKS


def global_images() -> tuple[Tensor, Tensor]:
    """Query and key views of every global sample, (STEPS * GLOBAL, 3, SIZE, SIZE) each.

    The key view is the query view plus noise, so that positives are not trivially equal.
    """
    g = torch.Generator().manual_seed(0)
    images = torch.randn(STEPS * GLOBAL, 3, SIZE, SIZE, generator=g)
    keys = images + 0.3 * torch.randn(images.shape, generator=g)
    return images, keys


class Views(Dataset):
    """``((x_q, x_k), -1)`` for the given global sample indices, in order."""

    def __init__(self, indices: list[int]) -> None:
        self.x_q, self.x_k = global_images()
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[tuple[Tensor, Tensor], int]:
        j = self.indices[i]
        return (self.x_q[j], self.x_k[j]), -1


def own_samples(rank: int, world_size: int) -> list[int]:
    """The global sample indices one process trains on, step by step.

    Step ``s`` uses samples ``s * GLOBAL`` to ``(s + 1) * GLOBAL - 1``, rank ``r`` the ``r``-th
    block of them (global batch = rank 0's samples, then rank 1's, the order in which
    ``all_gather`` concatenates).
    """
    per_process = GLOBAL // world_size
    return [
        step * GLOBAL + rank * per_process + i
        for step in range(STEPS)
        for i in range(per_process)
    ]  # fmt: skip


class GlobalLambda:
    """Replaces ``AMix.sample_lambda``: λ of the process's samples from one table per draw.

    Draw ``c`` (two per step: the backbone's λ, then the Mix Block's λ') takes
    ``GLOBAL`` values in [0.1, 0.9] from a generator seeded with ``c``; each process returns
    the slice of its own samples, so both runs give every global sample the same λ.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size, self.calls = rank, world_size, 0

    def __call__(self, n: int) -> Tensor:
        g = torch.Generator().manual_seed(self.calls)
        self.calls += 1
        lam = 0.1 + 0.8 * torch.rand(n * self.world_size, generator=g)  # (GLOBAL,)
        return lam[self.rank * n : (self.rank + 1) * n]


def _running_statistics_only(module: nn.Module, args: Any) -> None:
    module.training = False  # set again before every forward: model.train() cannot undo it


def freeze_batch_norm(model: AMix) -> None:
    """Sets every BatchNorm to the statistics of all images, then keeps them fixed.

    The encoders' running statistics become the exact mean and variance over every global
    sample (one train-mode pass with a cumulative average); from then on every BatchNorm
    normalises with them and never updates them. Their initial values (0 and 1) would leave
    the untrained encoders' embeddings of all images nearly parallel, so that taking a wrong
    sample's key or features would hardly show.
    """
    x_q, x_k = global_images()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model.backbone(x_q)
        model.backbone_momentum(x_k)
    for layer in norms:
        layer.momentum = 0.1
        layer.register_forward_pre_hook(_running_statistics_only)


def build_model(pipeline: str, per_process: int, rank: int, world_size: int) -> AMix:
    """AMix-I with a small head and queue; identical weights and queue in every process."""
    torch.manual_seed(0)
    model = AMix(
        ModelConfig(
            cifar_stem=True, proj_hidden_dim=32, proj_output_dim=8, queue_size=3 * GLOBAL,
            momentum=0.9,
        ),
        OptimConfig(base_lr=0.3),
        per_process,
        MixingConfig(block_loss="infonce+bce", pipeline=pipeline),
        # Mix Block+ without dropout, and with a mask-logit layer large enough for the first
        # masks to depend on the features (the default near-zero init gives masks of ≈ 0.5
        # whatever the partners' stage-3 maps, so wrong maps would hardly show in two steps).
        MixBlockConfig(dropout=0.0, init_std=0.5, small_init="output"),
    )  # fmt: skip
    freeze_batch_norm(model)
    model.sample_lambda = GlobalLambda(rank, world_size)  # type: ignore[method-assign]
    return model


def record_losses(model: AMix) -> list[dict[str, Tensor]]:
    """Wraps ``model.compute_losses`` so that every step's terms are kept (detached)."""
    records: list[dict[str, Tensor]] = []
    compute = model.compute_losses

    def recording(batch: Any) -> Any:
        loss, logged, extra = compute(batch)
        records.append(
            {"loss": loss.detach().clone()} | {k: v.detach().clone() for k, v in logged.items()}
        )
        return loss, logged, extra

    model.compute_losses = recording  # type: ignore[method-assign]
    return records


def main(rank: int, world_size: int, port: int, out: Path, pipeline: str) -> None:
    torch.set_num_threads(1)
    if world_size > 1:
        # As torchrun would: Lightning then joins this process group instead of launching.
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK="0",
            LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        )  # fmt: skip
    per_process = GLOBAL // world_size
    model = build_model(pipeline, per_process, rank, world_size)
    records = record_losses(model)
    loader = DataLoader(Views(own_samples(rank, world_size)), batch_size=per_process)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=world_size,
        strategy="ddp" if world_size > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[StepSeed(seed=0)],
        default_root_dir=out,
    )
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer.fit(model, train_dataloaders=loader)
    state: dict[str, Any] = {
        "losses": records,
        "bank": model.memory_bank.bank.clone(),
        "bank_ptr": model.memory_bank.bank_ptr.clone(),
        "queue_fill": model.queue_fill.clone(),
        "lr": trainer.optimizers[0].param_groups[0]["initial_lr"],
        "moved": [k for k, v in model.named_parameters() if not torch.equal(v, before[k])],
    }
    if rank == 0:  # DDP keeps rank 1's parameters equal to rank 0's (tests/test_distributed.py)
        state["parameters"] = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save(state, out / f"world{world_size}_rank{rank}.pt")


if __name__ == "__main__":
    rank_arg, world_arg, port_arg, out_arg, pipeline_arg = sys.argv[1:6]
    main(int(rank_arg), int(world_arg), int(port_arg), Path(out_arg), pipeline_arg)
