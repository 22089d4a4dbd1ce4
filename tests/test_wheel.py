"""The wheel: built from this tree, installed into a fresh environment, imported and trained.

The fresh environment borrows this one's third-party packages (torch, lightly, ...) through a
``.pth`` path, so nothing is downloaded; lightly-amix itself comes only from the wheel (this
tree's editable install is not visible there, and the commands run outside the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SMOKE = """
import sys, torch, lightly_amix
from lightly_amix import AMix, MixBlock, LearnedMixup
from lightly_amix.config import ModelConfig, OptimConfig, MixingConfig
assert lightly_amix.__file__.startswith(sys.argv[1]), lightly_amix.__file__  # from the wheel
torch.manual_seed(0)
model = AMix(ModelConfig(queue_size=16, proj_hidden_dim=32, proj_output_dim=8), OptimConfig(),
             batch_size=4, mixing=MixingConfig())
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
for step in range(2):
    x_q, x_k = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    loss, terms, _ = model.compute_losses(([x_q, x_k], torch.zeros(4), torch.arange(4)))
    opt.zero_grad(); loss.backward(); opt.step()
    assert torch.isfinite(loss), loss
print("wheel ok", lightly_amix.__version__, float(loss))
"""


@pytest.mark.slow
def test_the_wheel_installs_imports_and_trains_two_steps(tmp_path: Path) -> None:
    # Built from a copy of the checkout's files, so that setuptools' build/ stays out of the tree.
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         str(source), "-w", str(wheels)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("lightly_amix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightly_amix/py.typed" in names and "lightly_amix/models/amix.py" in names
    assert not any(name.startswith("tests/") for name in names)

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site,
         str(wheel)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [str(python), "-c", SMOKE, site], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wheel ok" in result.stdout
