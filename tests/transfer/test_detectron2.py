"""transfer/train_net.py with a real detectron2 (the CPU build of install_detectron2_cpu.sh).

Skipped when detectron2 is not installed. With it: the project's configs build the R50-C4 model
with the ``Res5ROIHeadsExtraNorm`` heads, a ResNet-50 converted by ``convert_to_detectron2.py``
loads into every backbone and res5 tensor exactly (only the extra norm starts fresh), and the
script itself trains one iteration, runs precise BN and the VOC evaluator on a tiny VOC tree at
about 100 px, then re-evaluates the saved model with ``--eval-only``. Run them with::

    bash transfer/install_detectron2_cpu.sh
    python -m pytest -q -m detectron2 tests/transfer/test_detectron2.py
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.detectron2

if importlib.util.find_spec("detectron2") is None:
    pytest.skip(
        "detectron2 is not installed: run transfer/install_detectron2_cpu.sh",
        allow_module_level=True,
    )

from transfer import train_net  # noqa: E402

train_net.load_detectron2()  # an installed detectron2 that does not import fails here, loudly

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "transfer" / "train_net.py"
CONFIGS = REPO / "transfer" / "configs"
BASE = CONFIGS / "Base-RCNN-C4-BN.yaml"
PROTOCOL = CONFIGS / "pascal_voc_R_50_C4_24k_amix.yaml"
QUICK = CONFIGS / "pascal_voc_R_50_C4_quick.yaml"
N_RESNET50_TENSORS = 265
EXTRA_NORM = {f"roi_heads.res5.norm.{p}" for p in ("weight", "bias", "running_mean", "running_var")}

# Small enough for 2 CPU cores: ~100 px images and few proposals/ROIs. The model is unchanged.
SMALL_RUN = [
    "MODEL.DEVICE", "cpu",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "128", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "128", "MODEL.RPN.POST_NMS_TOPK_TEST", "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


# ------------------------------------------------------------------------------- a tiny VOC


@dataclass(frozen=True)
class VOCObject:
    name: str
    box: tuple[int, int, int, int]  # 1-based inclusive xmin, ymin, xmax, ymax, as in the XML
    difficult: int = 0


# Two ids in every split file (one id breaks detectron2's np.loadtxt), 20-class names only.
TINY_VOC: dict[tuple[str, str], dict[str, tuple[int, int, list[VOCObject]]]] = {
    ("2007", "trainval"): {
        "000005": (128, 96, [VOCObject("chair", (10, 12, 60, 90)),
                             VOCObject("chair", (70, 5, 120, 40), difficult=1)]),
        "000007": (112, 96, [VOCObject("car", (1, 1, 112, 60))]),
    },
    ("2007", "test"): {
        "000001": (128, 96, [VOCObject("dog", (20, 10, 100, 90)),
                             VOCObject("person", (5, 5, 30, 96))]),
        "000004": (96, 120, [VOCObject("car", (8, 20, 90, 110))]),
    },
    ("2012", "trainval"): {
        "2008_000002": (128, 100, [VOCObject("tvmonitor", (30, 15, 110, 90))]),
        "2008_000003": (100, 128, [VOCObject("person", (10, 20, 80, 120)),
                                   VOCObject("train", (2, 3, 98, 50))]),
    },
}  # fmt: skip


def voc_annotation(year: str, image_id: str, width: int, height: int, objects: Any) -> str:
    """One ``Annotations/<id>.xml`` laid out as in the VOC archives."""
    body = "".join(
        "\t<object>\n"
        f"\t\t<name>{o.name}</name>\n"
        "\t\t<pose>Unspecified</pose>\n"
        "\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>{o.difficult}</difficult>\n"
        "\t\t<bndbox>\n"
        f"\t\t\t<xmin>{o.box[0]}</xmin>\n\t\t\t<ymin>{o.box[1]}</ymin>\n"
        f"\t\t\t<xmax>{o.box[2]}</xmax>\n\t\t\t<ymax>{o.box[3]}</ymax>\n"
        "\t\t</bndbox>\n"
        "\t</object>\n"
        for o in objects
    )
    return (
        f"<annotation>\n\t<folder>VOC{year}</folder>\n\t<filename>{image_id}.jpg</filename>\n"
        f"\t<source>\n\t\t<database>The VOC{year} Database</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        "\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
        f"{body}</annotation>\n"
    )


def write_tiny_voc(root: Path) -> Path:
    """``<root>/VOC2007`` and ``VOC2012`` (no VOCdevkit level), as ``$DETECTRON2_DATASETS``."""
    rng = np.random.default_rng(0)
    for (year, split), images in TINY_VOC.items():
        voc = root / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
        for image_id, (width, height, objects) in images.items():
            pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            for k, obj in enumerate(objects):  # a bright patch per object
                x1, y1, x2, y2 = obj.box
                pixels[y1 - 1 : y2, x1 - 1 : x2] = (200, 60 * k, 255 - 60 * k)
            Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                voc_annotation(year, image_id, width, height, objects)
            )
    return root


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A random ResNet-50 ``backbone.pt`` converted by convert_to_detectron2.py, and its arrays."""
    from tests.transfer.test_convert import resnet50_backbone_state
    from transfer.convert_to_detectron2 import main as convert_main

    tmp = tmp_path_factory.mktemp("converted")
    torch.save(resnet50_backbone_state(seed=3), tmp / "backbone.pt")
    pkl = tmp / "r50.pkl"
    assert convert_main([str(tmp / "backbone.pt"), str(pkl)]) == 0
    with open(pkl, "rb") as f:
        weights = pickle.load(f)["model"]
    assert len(weights) == N_RESNET50_TENSORS
    return pkl, weights


def load_cfg(config: Path, *opts: str) -> Any:
    cfg = train_net.load_config(
        type("Args", (), {"config_file": str(config), "opts": ["MODEL.DEVICE", "cpu", *opts]})()
    )
    cfg.freeze()
    return cfg


def build_model(cfg: Any) -> Any:
    """detectron2's GeneralizedRCNN for ``cfg``, built as train_net's trainer builds it."""
    train_net.register_res5_roi_heads_extra_norm()
    return train_net.build_trainer_class().build_model(cfg)


def model_name(converted_name: str) -> str:
    """Where detectron2 puts a converted tensor: res5 in the C4 box head, the rest in backbone."""
    prefix = "roi_heads." if converted_name.startswith("res5.") else "backbone."
    return prefix + converted_name


# ------------------------------------------------------------------------------- tests


def test_compat_names_and_the_c_stub_are_in_place() -> None:
    import detectron2._C
    from PIL import Image as PILImage

    assert PILImage.LINEAR == PILImage.Resampling.BILINEAR  # type: ignore[attr-defined]
    assert getattr(np, "float") is float and getattr(np, "str") is str  # noqa: B009
    assert isinstance(detectron2._C.get_compiler_version(), str)
    assert train_net.apply_detectron2_compat() == []  # already applied, nothing more to add


@pytest.mark.parametrize("config", [BASE, PROTOCOL, QUICK], ids=lambda p: p.name)
def test_project_configs_merge_into_detectron2s_defaults(config: Path) -> None:
    cfg = load_cfg(config)
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert list(cfg.MODEL.RESNETS.OUT_FEATURES) == ["res4"]
    if config != BASE:
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20 and cfg.INPUT.FORMAT == "RGB"
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
        assert "voc_2007_test" in cfg.DATASETS.TEST


def test_the_model_has_the_extra_norm_head_and_nothing_frozen() -> None:
    cfg = load_cfg(PROTOCOL)
    model = build_model(cfg)

    heads = model.roi_heads
    assert type(heads).__name__ == "Res5ROIHeadsExtraNorm"
    assert [name for name, _ in heads.res5.named_children()] == ["0", "1", "2", "norm"]
    assert isinstance(heads.res5.norm, torch.nn.SyncBatchNorm)
    assert heads.res5.norm.num_features == 2048
    assert type(model.backbone.stem.conv1.norm) is torch.nn.SyncBatchNorm
    assert all(p.requires_grad for p in model.parameters())  # FREEZE_AT 0: the stem trains too


def test_converted_checkpoint_fills_every_backbone_and_res5_tensor_exactly(
    converted: tuple[Path, dict[str, np.ndarray]],
) -> None:
    from detectron2.checkpoint import DetectionCheckpointer

    pkl, weights = converted
    model = build_model(load_cfg(PROTOCOL))
    DetectionCheckpointer(model).load(str(pkl))
    state = model.state_dict()

    for name, array in weights.items():
        target = model_name(name)
        assert target in state, f"{name} -> {target} is not a model tensor"
        assert torch.equal(state[target], torch.from_numpy(array)), target

    loaded = {model_name(name) for name in weights}
    not_loaded = {
        key
        for key in state
        if key.startswith(("backbone.", "roi_heads.res5."))
        and key not in loaded
        and not key.endswith("num_batches_tracked")
    }
    assert not_loaded == EXTRA_NORM  # only the extra norm starts fresh, at the identity
    norm = model.roi_heads.res5.norm
    assert torch.equal(norm.weight, torch.ones(2048)) and torch.equal(norm.bias, torch.zeros(2048))
    assert torch.equal(norm.running_mean, torch.zeros(2048))
    assert torch.equal(norm.running_var, torch.ones(2048))


def run_script(*argv: str, cwd: Path, voc: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DETECTRON2_DATASETS": str(voc), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def copypaste_results(log: Path) -> dict[str, float]:
    """The last ``copypaste: AP,AP50,AP75`` block of a detectron2 log."""
    lines = log.read_text().splitlines()
    header = max(i for i, line in enumerate(lines) if line.endswith("copypaste: AP,AP50,AP75"))
    values = re.search(r"copypaste: ([-\d.nae,]+)$", lines[header + 1])
    assert values is not None, lines[header + 1]
    return dict(zip(["AP", "AP50", "AP75"], map(float, values[1].split(",")), strict=True))


def test_train_net_trains_evaluates_on_voc_and_reloads_with_eval_only(
    converted: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    pkl, _ = converted
    voc = write_tiny_voc(tmp_path / "datasets")
    train_out, eval_out = tmp_path / "train", tmp_path / "eval"

    trained = run_script(
        "--config-file", str(QUICK),
        "MODEL.WEIGHTS", str(pkl), "OUTPUT_DIR", str(train_out), *SMALL_RUN,
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001", "SOLVER.MAX_ITER", "1",
        "SOLVER.WARMUP_ITERS", "0", "TEST.PRECISE_BN.NUM_ITER", "1",
        cwd=tmp_path, voc=voc,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-4000:]
    log = (train_out / "log.txt").read_text()
    assert "Res5ROIHeadsExtraNorm" in log and "Environment info" in log
    # The .pkl's tensors were matched; the only ones missing are the new heads and the extra norm.
    missing = log[log.index("not found in the checkpoint") :].split("The checkpoint state_dict")[0]
    assert "roi_heads.res5.norm" in missing and "backbone." not in missing
    assert "roi_heads.res5.0" not in missing and "roi_heads.res5.2" not in missing
    assert "Running precise-BN" in log
    metrics = [json.loads(line) for line in (train_out / "metrics.json").read_text().splitlines()]
    assert math.isfinite(metrics[0]["total_loss"])
    assert (train_out / "model_final.pth").is_file()
    after_training = copypaste_results(train_out / "log.txt")
    # One iteration from random weights scores 0 AP: compare weights, not scores. The saved
    # model is the trained one: the SGD step moved the converted convolutions, and training
    # plus precise BN gave the extra norm statistics of its own.
    saved = torch.load(train_out / "model_final.pth", map_location="cpu", weights_only=False)
    saved = saved["model"]
    _, weights = converted
    convs = [name for name in weights if name.endswith(".weight") and ".norm." not in name]
    assert convs and all(model_name(name) in saved for name in convs)
    moved = [n for n in convs if not np.array_equal(np.asarray(saved[model_name(n)]), weights[n])]
    assert moved, "training did not change the converted convolutions"
    assert EXTRA_NORM <= set(saved)
    assert not torch.equal(
        torch.as_tensor(saved["roi_heads.res5.norm.running_mean"]), torch.zeros(2048)
    )

    evaluated = run_script(
        "--eval-only", "--config-file", str(QUICK),
        "MODEL.WEIGHTS", str(train_out / "model_final.pth"), "OUTPUT_DIR", str(eval_out),
        *SMALL_RUN, cwd=tmp_path, voc=voc,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    eval_log = (eval_out / "log.txt").read_text()
    assert "not found in the checkpoint" not in eval_log  # the extra norm was saved and reloaded
    assert copypaste_results(eval_out / "log.txt") == pytest.approx(after_training, abs=1e-3)
    # What --eval-only loads is the trained model, every tensor as saved (the extra norm too).
    from detectron2.checkpoint import DetectionCheckpointer

    model = build_model(load_cfg(QUICK))
    DetectionCheckpointer(model).load(str(train_out / "model_final.pth"))
    state = model.state_dict()
    assert set(saved) <= set(state)
    for name, value in saved.items():
        assert torch.equal(state[name].cpu(), torch.as_tensor(value)), name


def test_a_worker_process_of_launch_can_import_detectron2(tmp_path: Path) -> None:
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__mp_main__')\n"
        "import detectron2.engine.launch\n"  # what unpickling launch()'s worker function does
        "from PIL import Image\n"
        "print(Image.LINEAR == Image.Resampling.BILINEAR)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "True"
