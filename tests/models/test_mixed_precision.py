"""Every pre-training method trains under bf16 mixed precision (the benchmarks' setting)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lightly_amix.config import METHODS, load_config
from lightly_amix.models.factory import build_model
from tests.models.test_amix import BATCH, N_IMAGES, fit

TINY = [
    "model.queue_size=18", "model.proj_hidden_dim=32", "model.proj_output_dim=8",
    f"trainer.batch_size={BATCH}", "odc.num_clusters=3", "odc.min_cluster_size=4",
    "odc.refresh_interval=2", "mochi.num_hard=8", "mochi.num_mix=8", "mochi.num_query_mix=4",
]  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_a_step_in_bf16_mixed(method: str) -> None:
    """Autocast turns matmuls and convolutions into bf16; every tensor a method combines with
    them (masks, transported images, logits, queues) must still agree in dtype, and the loss
    must stay finite. One step: a dtype clash shows at the first."""
    if method == "puzzlemix" and importlib.util.find_spec("gco") is None:
        pytest.skip("PuzzleMix needs gco-wrapper")
    block_loss = "ce_pl+bce" if method == "amix-c" else "infonce+bce"
    cfg = load_config(overrides=[f"method={method}", f"mixing.block_loss={block_loss}", *TINY])
    torch.manual_seed(0)
    model = build_model(cfg, N_IMAGES)
    trainer = fit(model, steps=1, precision="bf16-mixed")
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
