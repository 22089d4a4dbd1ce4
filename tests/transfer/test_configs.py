"""transfer/configs: the detectron2 YAML files of MoCo's R50-C4 VOC protocol (paper Table 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "transfer" / "configs"
BASE = CONFIGS / "Base-RCNN-C4-BN.yaml"
PROTOCOL = CONFIGS / "pascal_voc_R_50_C4_24k_amix.yaml"
QUICK = CONFIGS / "pascal_voc_R_50_C4_quick.yaml"


def merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """detectron2's ``_BASE_`` semantics: nested dicts merged, the child's values win."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_with_base(path: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(path.read_text())
    base_name = cfg.pop("_BASE_", None)
    if base_name is None:
        return cfg
    base_path = path.parent / base_name  # detectron2 resolves it next to the including file
    assert base_path.is_file(), f"{path.name}: _BASE_ {base_name} does not exist"
    return merge(load_with_base(base_path), cfg)


@pytest.mark.parametrize("path", [BASE, PROTOCOL, QUICK], ids=lambda p: p.name)
def test_configs_parse_with_safe_load(path: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    assert isinstance(cfg, dict) and cfg


def test_bases_resolve_to_existing_files() -> None:
    assert "_BASE_" not in yaml.safe_load(BASE.read_text())
    assert yaml.safe_load(PROTOCOL.read_text())["_BASE_"] == BASE.name
    assert yaml.safe_load(QUICK.read_text())["_BASE_"] == PROTOCOL.name
    for path in (PROTOCOL, QUICK):
        load_with_base(path)


def test_protocol_config_carries_the_r50_c4_voc_values() -> None:
    cfg = load_with_base(PROTOCOL)
    model = cfg["MODEL"]
    assert model["META_ARCHITECTURE"] == "GeneralizedRCNN"
    assert model["MASK_ON"] is False
    assert model["WEIGHTS"] == ""  # given on the command line
    assert model["BACKBONE"]["FREEZE_AT"] == 0
    assert model["RESNETS"] == {
        "OUT_FEATURES": ["res4"],
        "NORM": "SyncBN",
        "DEPTH": 50,
        "STRIDE_IN_1X1": False,
    }
    assert model["RPN"] == {
        "IN_FEATURES": ["res4"],
        "PRE_NMS_TOPK_TEST": 6000,
        "POST_NMS_TOPK_TEST": 1000,
    }
    assert model["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
    assert model["ROI_HEADS"]["NUM_CLASSES"] == 20
    assert model["ROI_HEADS"]["IN_FEATURES"] == ["res4"]
    assert model["PIXEL_MEAN"] == [123.675, 116.280, 103.530]
    assert model["PIXEL_STD"] == [58.395, 57.120, 57.375]

    assert cfg["INPUT"] == {
        "FORMAT": "RGB",
        "MIN_SIZE_TRAIN": list(range(480, 801, 32)),
        "MIN_SIZE_TEST": 800,
    }
    assert cfg["DATASETS"] == {
        "TRAIN": ["voc_2007_trainval", "voc_2012_trainval"],
        "TEST": ["voc_2007_test"],
    }
    assert cfg["SOLVER"] == {
        "IMS_PER_BATCH": 16,
        "BASE_LR": 0.02,
        "STEPS": [18000, 22000],
        "MAX_ITER": 24000,
        "WARMUP_ITERS": 100,
    }
    assert cfg["TEST"]["PRECISE_BN"]["ENABLED"] is True
    assert cfg["VERSION"] == 2


def test_quick_config_only_shortens_the_schedule() -> None:
    protocol, quick = load_with_base(PROTOCOL), load_with_base(QUICK)
    solver, full = quick["SOLVER"], protocol["SOLVER"]
    assert solver["MAX_ITER"] == 1000 and solver["WARMUP_ITERS"] == 100
    for step, full_step in zip(solver["STEPS"], full["STEPS"], strict=True):
        assert step == round(full_step / full["MAX_ITER"] * solver["MAX_ITER"])
    assert solver["IMS_PER_BATCH"] == full["IMS_PER_BATCH"] and solver["BASE_LR"] == full["BASE_LR"]
    for section in ("MODEL", "INPUT", "DATASETS", "VERSION"):
        assert quick[section] == protocol[section], section
    assert quick["TEST"]["PRECISE_BN"]["ENABLED"] is True
