"""transfer/train_net.py without a usable detectron2: one ``error:`` line, exit 1 or 2; wiring.

A missing detectron2 and one that fails to import are shown with hand-made ``detectron2`` packages
on ``PYTHONPATH`` (in subprocesses, so that no alias leaks into this process), which also check
that the compatibility names exist when detectron2's modules are imported. The real detectron2 is
exercised by ``test_detectron2.py``.
"""

from __future__ import annotations

import importlib.util
import os
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
    assert line.startswith("error: ") and "detectron2" in line and "not on PyPI" in line
    assert "python -m pip install 'git+https://github.com/facebookresearch/detectron2.git'" in line
    assert "PyTorch" in line and "CUDA" in line
    assert "bash transfer/install_detectron2_cpu.sh" in line


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed here")
def test_the_module_imports_without_detectron2() -> None:
    from transfer import train_net

    assert train_net.ROI_HEADS_NAME == "Res5ROIHeadsExtraNorm"
    assert train_net.DEFAULT_CONFIG.is_file()
    assert "detectron2" not in sys.modules


UNTOUCHED_PROBE = """
import numpy as np, warnings
from PIL import Image
def names():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aliases = [hasattr(np, n) for n in ("int", "float", "str", "object")]
    return [hasattr(Image, "LINEAR"), *aliases]
before = names()
from transfer import train_net
try:
    train_net.require_detectron2()
except SystemExit as exc:
    print("exit", exc.code)
print(before == names())
"""


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed here")
def test_without_detectron2_no_pillow_or_numpy_name_is_added() -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNTOUCHED_PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["exit", "1", "True"], result.stderr


def write_fake_detectron2(root: Path, files: dict[str, str]) -> Path:
    """A ``detectron2`` package under ``root`` with the submodules train_net imports (empty).

    ``files`` maps paths inside the package (``"data/transforms.py"``) to their source.
    """
    package = root / "detectron2"
    sources = {
        "__init__.py": '__version__ = "0.5"\n',
        **{f"{name}/__init__.py": "" for name in (
            "config", "layers", "modeling", "checkpoint", "data", "evaluation", "engine"
        )},
        **files,
    }  # fmt: skip
    for name, source in sources.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source)
    return root


def run_with_fake(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


# What a detectron2 0.5 needs at import time: Pillow's LINEAR, numpy's aliases, a detectron2._C.
COMPATIBLE = {
    "_C.py": "",  # an old/stub extension without get_compiler_version
    "data/transforms.py": (
        "import numpy as np\nfrom PIL import Image\n"
        "def resize(interp=Image.LINEAR):\n    return interp\n"
        "HISTOGRAM_DTYPE, IDS_DTYPE = np.int, np.str\n"
    ),
    "data/__init__.py": "from . import transforms\n",
    "layers/__init__.py": "from detectron2 import _C\n",
}


@pytest.mark.parametrize(
    ("files", "cause"),
    [
        pytest.param(
            {**COMPATIBLE, "data/transforms.py": "from PIL import Image\nX = Image.NOT_THERE\n"},
            "AttributeError: module 'PIL.Image' has no attribute 'NOT_THERE' "
            "(at detectron2/data/transforms.py:2)",
            id="removed-name",
        ),
        pytest.param(
            {**COMPATIBLE, "engine/__init__.py": "import fvcore_not_installed_here\n"},
            "ModuleNotFoundError: No module named 'fvcore_not_installed_here' "
            "(at detectron2/engine/__init__.py:1)",
            id="missing-dependency",
        ),
        pytest.param(
            {k: v for k, v in COMPATIBLE.items() if k != "_C.py"},
            "ImportError: cannot import name '_C' from 'detectron2'",
            id="no-extension",
        ),
    ],
)
def test_an_installed_detectron2_that_fails_to_import_gives_one_error_line_and_exit_2(
    tmp_path: Path, files: dict[str, str], cause: str
) -> None:
    root = write_fake_detectron2(tmp_path, files)

    result = run_with_fake(root, str(SCRIPT), "--help")

    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    line = lines[0]
    assert line.startswith("error: detectron2 0.5 is installed (") and str(root) in line
    assert "but cannot be imported: " + cause in line
    assert "bash transfer/install_detectron2_cpu.sh --force" in line
    assert "git+https://github.com/facebookresearch/detectron2.git" in line


def test_compat_names_are_added_before_detectron2_is_imported(tmp_path: Path) -> None:
    root = write_fake_detectron2(tmp_path, COMPATIBLE)
    code = (
        "from transfer import train_net\n"
        "print(train_net.load_detectron2())\n"
        "import detectron2._C, detectron2.data.transforms as t, numpy as np\n"
        "print(detectron2._C.get_compiler_version())\n"
        "print(t.resize() == t.resize.__defaults__[0], np.float is float, np.object is object)\n"
        "print(train_net.load_detectron2(), train_net.apply_detectron2_compat())\n"
    )

    result = run_with_fake(root, "-c", code)

    assert result.returncode == 0, result.stderr
    version, compiler, checks, again = result.stdout.strip().splitlines()
    assert version == "0.5" and "unknown" in compiler and "get_compiler_version" in compiler
    assert checks == "True True True" and again == "0.5 []"


def test_a_spawned_worker_gets_the_compat_names_before_detectron2_is_unpickled(
    tmp_path: Path,
) -> None:
    root = write_fake_detectron2(tmp_path, COMPATIBLE)
    code = (
        "import runpy\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__mp_main__')\n"
        "import detectron2.data.transforms\n"
        "print('imported')\n"
    )
    result = run_with_fake(root, "-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "imported", result.stderr


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
