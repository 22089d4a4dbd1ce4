"""The FLOP count of a training step equals the network work each method needs, no more.

Each part is counted on its own with ``FlopCounterMode`` (a query forward + backward, a key
forward, ...); a whole Lightning training step of each method must cost exactly their sum,
so a redundant forward, a recomputed feature map or a second Mix Block call would show up.
The loss matrices (query x queue) are the only other products; they are tiny here.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightly_amix.data.datamodule import PretrainDataModule
from lightly_amix.models.amix import AMix, eval_mode
from lightly_amix.models.base import MomentumContrastMethod

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "step_cost.py"
BATCH, SIZE, N_IMAGES, QUEUE = 6, 32, 60, 12


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("step_cost", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_cost"] = module
    spec.loader.exec_module(module)
    return module


step_cost = load_script()


def count(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def parts(model: MomentumContrastMethod) -> dict[str, int]:
    """FLOPs of each piece of network work, counted one at a time on a batch of this shape."""
    x = torch.randn(BATCH, 3, SIZE, SIZE)

    def query() -> None:  # online encoder, forward and backward to the weights
        model.projection_head(model.backbone(x)).sum().backward()

    def frozen_branch() -> None:  # momentum encoder in eval mode, backward to the input only
        xi = x.clone().requires_grad_(True)
        with eval_mode(model.backbone_momentum, model.projection_head_momentum):
            model.projection_head_momentum(model.backbone_momentum(xi)).sum().backward()

    out = {
        "query": count(query),
        "key": count(lambda: model.projection_head_momentum(model.backbone_momentum(x))),
        "stage3": count(lambda: model.backbone_momentum.forward_stage3(x)),
        "frozen_branch": count(frozen_branch),
    }
    if isinstance(model, AMix):
        z = model.backbone_momentum.forward_stage3(x)
        lam = torch.rand(BATCH)

        def block() -> torch.Tensor:
            return model.mix_block(z, z.flip(0), lam, out_size=(SIZE, SIZE))

        out["block"] = count(block)
        out["block_grad"] = count(lambda: block().sum().backward())
    model.zero_grad(set_to_none=True)
    return out


def measured(model: MomentumContrastMethod) -> int:
    args = argparse.Namespace(device="cpu", precision="32-true")
    data = PretrainDataModule(step_cost.RandomViews(N_IMAGES, SIZE), BATCH, 0, seed=0)
    return int(step_cost.step_flops(model, data, step_cost.make_trainer(args, 1, [])))


# Expected work per step, in the parts above.
EXPECTED: dict[str, Callable[[dict[str, int]], int]] = {
    "mocov2": lambda p: p["query"] + p["key"],
    # A second (mixed) query forward + backward.
    "mixup": lambda p: 2 * p["query"] + p["key"],
    "cutmix": lambda p: 2 * p["query"] + p["key"],
    # The reference code's pipeline also encodes the query views with the momentum encoder.
    "mixup:mixing.pipeline=reference": lambda p: 2 * p["query"] + 2 * p["key"],
    # + the Mix Block's stage-3 input from the momentum encoder, its no-grad mask for the
    # backbone, its mask with gradient and the frozen momentum branch it is trained through.
    "amix-i": lambda p: (
        2 * p["query"] + p["key"] + p["stage3"] + p["block"] + p["block_grad"] + p["frozen_branch"]
    ),
    # The online query forward's stage-3 maps instead: no extra stage-3 forward.
    "amix-i:mixing.block_features=online": lambda p: (
        2 * p["query"] + p["key"] + p["block"] + p["block_grad"] + p["frozen_branch"]
    ),
    "amix-c": lambda p: (
        2 * p["query"] + p["key"] + p["stage3"] + p["block"] + p["block_grad"] + p["frozen_branch"]
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("spec", list(EXPECTED))
def test_a_step_costs_exactly_the_work_of_its_parts(spec: str) -> None:
    torch.manual_seed(0)
    model = step_cost.build_method(spec, "resnet18", QUEUE, BATCH, N_IMAGES)
    work = parts(model)
    expected = EXPECTED[spec](work)

    flops = measured(model)

    # The loss products (a few (6 x 128) @ (128 x 12) matrices, the cluster head) are the only
    # work outside the parts: far below one Mix Block forward (about 0.2 % of an AMix step).
    assert flops == pytest.approx(expected, rel=1e-4), (flops, expected)
    if spec.startswith("amix"):
        assert work["block"] > 1e-3 * expected  # so the tolerance would catch a second call


def test_the_units_of_the_floor() -> None:
    """MoCo v2 is about 4 forward units (query ≈ 3, key 1); the frozen branch is 2."""
    torch.manual_seed(0)
    mocov2 = step_cost.build_method("mocov2", "resnet18", QUEUE, BATCH, N_IMAGES)
    p = parts(mocov2)
    # The frozen branch's backward to the input costs one more forward; the query's backward
    # skips the first convolution's input gradient, so it is a little under two forwards.
    assert p["frozen_branch"] == pytest.approx(2 * p["key"], rel=1e-3)
    assert 2.5 * p["key"] < p["query"] < 3 * p["key"]
    assert measured(mocov2) == pytest.approx(p["query"] + p["key"], rel=1e-4)


def test_an_unknown_method_override_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mixing"):
        step_cost.build_method("amix-i:mixing.no_such_key=1", "resnet18", QUEUE, BATCH, N_IMAGES)
