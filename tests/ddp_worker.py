"""Runs the STL-10 recipe under DDP and saves every rank's state (launched by a test).

Lightning's DDP launcher starts this same script once more per extra rank, so each rank writes
``<output-dir>/rank<r>.pt`` with its queue, queue pointer and online backbone weights.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

import lightly_amix.models.amix as amix_module
from lightly_amix.cli import pretrain_main


class DumpRankState(pl.Callback):
    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.batches: list[torch.Tensor] = []
        self.partners: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.batches.append(batch[0][0][:, 0, 0, 0].detach().clone())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        odc = getattr(pl_module, "odc", None)
        extra = {}
        if odc is not None:
            extra = {
                "odc_labels": odc.labels.clone(),
                "odc_features": odc.features.clone(),
                "queue_labels": pl_module.clustering.queue_labels.clone(),
            }
        torch.save(
            {
                **extra,
                "partners": self.partners,
                "bank": pl_module.memory_bank.bank.clone(),
                "bank_ptr": pl_module.memory_bank.bank_ptr.clone(),
                "queue_fill": pl_module.queue_fill.clone(),
                "backbone": pl_module.export_backbone_state_dict(),
                "batches": self.batches,
                "world_size": trainer.world_size,
            },
            self.output_dir / f"rank{trainer.global_rank}.pt",
        )


def record_partners(callback: DumpRankState) -> None:
    """Wraps the AMix partner draw so each rank records the partners of its samples."""
    original = amix_module.global_partners

    def recording(n_local: int, device: torch.device) -> torch.Tensor:
        perm = original(n_local, device)
        callback.partners.append(perm.clone())
        return perm

    amix_module.global_partners = recording  # type: ignore[assignment]


if __name__ == "__main__":
    argv = sys.argv[1:]
    out = Path(argv[argv.index("--output-dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    dump = DumpRankState(out)
    record_partners(dump)
    sys.exit(pretrain_main(argv, dataset="stl10", callbacks=[dump]))
