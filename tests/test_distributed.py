"""DDP with 2 CPU processes (gloo): the queue, the batch shuffle and the sampler across ranks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "stl10.yaml"
BATCH, STEPS = 4, 2


def run_ddp(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), "--data-root", str(root), "--output-dir", str(out),
         "--epochs", "1", "--batch-size", str(BATCH), "--limit-batches", str(STEPS),
         "--queue-size", "32", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
         "--num-workers", "0", "--set", "data.image_size=32",
         *extra],
        capture_output=True, text=True, timeout=600, cwd=out.parent,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_two_process_ddp_keeps_ranks_in_sync(
    augment_on: str, fake_stl10: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_ddp(
        fake_stl10, out, "--config", str(CONFIG), "--set", f"data.augment_on={augment_on}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(out / "rank0.pt", weights_only=False)
    rank1 = torch.load(out / "rank1.pt", weights_only=False)
    assert rank0["world_size"] == rank1["world_size"] == 2
    # Keys from both ranks are gathered before the enqueue: the queues are identical and hold
    # world_size * batch keys per step.
    assert torch.equal(rank0["bank"], rank1["bank"])
    assert int(rank0["bank_ptr"]) == int(rank1["bank_ptr"]) == 2 * BATCH * STEPS
    assert int(rank0["queue_fill"]) == 2 * BATCH * STEPS
    # DDP keeps the weights equal (BatchNorm running statistics stay per rank, as without
    # SyncBN); the ranks saw different images.
    weights = [k for k in rank0["backbone"] if k.endswith(("weight", "bias"))]
    assert len(weights) == 60  # ResNet-18 without fc: 20 convs, 20 BNs (weight + bias)
    for key in weights:
        assert torch.equal(rank0["backbone"][key], rank1["backbone"][key]), key
    assert len(rank0["batches"]) == STEPS
    for b0, b1 in zip(rank0["batches"], rank1["batches"], strict=True):
        assert b0.dtype == torch.float32  # views, also when drawn on the device
        assert not torch.equal(b0, b1)
    assert (out / "last.ckpt").is_file() and (out / "backbone.pt").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_amix_c_shares_permutation_queue_and_pseudo_labels(
    fake_stl10: Path, tmp_path: Path
) -> None:
    out = tmp_path / "amix"
    amix_c = CONFIG.parent / "methods" / "amix-c.yaml"
    odc = ["--set", "odc.num_clusters=4", "--set", "odc.min_cluster_size=4"]
    result = run_ddp(fake_stl10, out, "--config", str(CONFIG), "--config", str(amix_c), *odc)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(out / "rank0.pt", weights_only=False)
    rank1 = torch.load(out / "rank1.pt", weights_only=False)
    assert torch.equal(rank0["bank"], rank1["bank"])
    assert torch.equal(rank0["odc_labels"], rank1["odc_labels"])
    assert torch.equal(rank0["odc_features"], rank1["odc_features"])
    assert torch.equal(rank0["queue_labels"], rank1["queue_labels"])
    assert int((rank0["queue_labels"] >= 0).sum()) == 2 * BATCH * STEPS
    # Two draws per step (backbone, Mix Block); the ranks' slices form one permutation of
    # the global batch each time.
    assert len(rank0["partners"]) == len(rank1["partners"]) == 2 * STEPS
    for p0, p1 in zip(rank0["partners"], rank1["partners"], strict=True):
        assert sorted(torch.cat([p0, p1]).tolist()) == list(range(2 * BATCH))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_fixed_mixup_mixes_with_partners_from_both_ranks(
    fake_stl10: Path, tmp_path: Path
) -> None:
    out = tmp_path / "manifold"
    result = run_ddp(fake_stl10, out, "--method", "manifoldmix")
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(out / "rank0.pt", weights_only=False)
    rank1 = torch.load(out / "rank1.pt", weights_only=False)
    assert torch.equal(rank0["bank"], rank1["bank"])
    for key in [k for k in rank0["backbone"] if k.endswith(("weight", "bias"))]:
        assert torch.equal(rank0["backbone"][key], rank1["backbone"][key]), key


@pytest.mark.slow
@pytest.mark.distributed
# AMix-BYOL gathers its partners and targets through the same LearnedMixupMethod.block_inputs
# and gather as AMix-SimCLR, so one of the two runs here (a 2-process run costs ~45 s).
@pytest.mark.parametrize("method", ["imix", "unmix", "puzzlemix", "amix-simclr"])
def test_two_process_comparison_methods_mix_across_ranks(
    method: str, fake_stl10: Path, tmp_path: Path
) -> None:
    """i-Mix's virtual labels span both ranks' keys; Un-Mix's mirror partner is on the other;
    PuzzleMix (C) gathers partners' images and saliency and its ODC memory stays replicated;
    AMix-SimCLR's in-batch negatives span both ranks."""
    out = tmp_path / method
    result = run_ddp(fake_stl10, out, "--method", method)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(out / "rank0.pt", weights_only=False)
    rank1 = torch.load(out / "rank1.pt", weights_only=False)
    assert torch.equal(rank0["bank"], rank1["bank"])
    for key in [k for k in rank0["backbone"] if k.endswith(("weight", "bias"))]:
        assert torch.equal(rank0["backbone"][key], rank1["backbone"][key]), key
