"""transfer/train_net.py without detectron2: one install line, exit code 1; its wiring on stubs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from torch import nn

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "transfer" / "train_net.py"
HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed here")
@pytest.mark.parametrize("argv", [["--help"], [], ["--num-gpus", "8", "--eval-only"]])
def test_without_detectron2_the_script_prints_one_install_line_and_exits_1(
    argv: list[str],
) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "detectron2" in line and "not on PyPI" in line
    assert "python -m pip install 'git+https://github.com/facebookresearch/detectron2.git'" in line
    assert "PyTorch" in line and "CUDA" in line


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed here")
def test_the_module_imports_without_detectron2() -> None:
    from transfer import train_net

    assert train_net.ROI_HEADS_NAME == "Res5ROIHeadsExtraNorm"
    assert train_net.DEFAULT_CONFIG.is_file()
    assert "detectron2" not in sys.modules


class _StubRegistry:
    """fvcore's Registry as far as train_net uses it: get() raises KeyError, names are unique."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}

    def register(self, obj: Any) -> None:
        assert obj.__name__ not in self.objects, "registered twice"
        self.objects[obj.__name__] = obj

    def get(self, name: str) -> Any:
        if name not in self.objects:
            raise KeyError(name)
        return self.objects[name]


@pytest.fixture
def stub_detectron2(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Minimal stand-ins for the detectron2 names train_net uses (NOT detectron2 itself)."""
    norms: list[tuple[str, int]] = []

    class Res5ROIHeads:
        @classmethod
        def _build_res5_block(cls, cfg: Any) -> tuple[nn.Sequential, int]:
            return nn.Sequential(nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 1)), 16

    def get_norm(norm: str, channels: int) -> nn.Module:
        norms.append((norm, channels))
        return nn.BatchNorm2d(channels)

    class DefaultTrainer:
        pass

    class PascalVOCDetectionEvaluator:
        def __init__(self, dataset_name: str) -> None:
            self.dataset_name = dataset_name

    registry = _StubRegistry()
    modules: dict[str, dict[str, Any]] = {
        "detectron2": {},
        "detectron2.layers": {"get_norm": get_norm},
        "detectron2.modeling": {},
        "detectron2.modeling.roi_heads": {
            "ROI_HEADS_REGISTRY": registry,
            "Res5ROIHeads": Res5ROIHeads,
        },
        "detectron2.engine": {"DefaultTrainer": DefaultTrainer},
        "detectron2.evaluation": {"PascalVOCDetectionEvaluator": PascalVOCDetectionEvaluator},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return SimpleNamespace(registry=registry, norms=norms, base=Res5ROIHeads)


def test_extra_norm_roi_heads_are_registered_once_and_append_a_norm(
    stub_detectron2: SimpleNamespace,
) -> None:
    from transfer.train_net import build_trainer_class, register_res5_roi_heads_extra_norm

    heads_cls = register_res5_roi_heads_extra_norm()
    assert register_res5_roi_heads_extra_norm() is heads_cls  # idempotent within a process
    assert stub_detectron2.registry.get("Res5ROIHeadsExtraNorm") is heads_cls
    assert issubclass(heads_cls, stub_detectron2.base)

    cfg = SimpleNamespace(MODEL=SimpleNamespace(RESNETS=SimpleNamespace(NORM="SyncBN")))
    res5, out_channels = heads_cls._build_res5_block(cfg)
    assert out_channels == 16 and stub_detectron2.norms == [("SyncBN", 16)]
    assert [name for name, _ in res5.named_children()] == ["0", "1", "norm"]
    assert isinstance(res5.norm, nn.BatchNorm2d)

    evaluator = build_trainer_class().build_evaluator(cfg, "voc_2007_test")
    assert evaluator.dataset_name == "voc_2007_test"
