"""The wheel and the sdist: built from this tree, installed into a fresh environment, imported
and trained.

The fresh environment borrows this one's third-party packages (torch, lightly, ...) through a
``.pth`` path, so nothing is downloaded; lightly-amix itself comes only from the wheel or the
sdist (this tree's editable install is not visible there, and the commands run outside the
checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SMOKE = """
import sys, torch, lightly_amix
from lightly_amix import AMix, MixBlock, LearnedMixup
from lightly_amix.config import ModelConfig, OptimConfig, MixingConfig
assert lightly_amix.__file__.startswith(sys.argv[1]), lightly_amix.__file__  # from the package
torch.manual_seed(0)
model = AMix(ModelConfig(queue_size=16, proj_hidden_dim=32, proj_output_dim=8), OptimConfig(),
             batch_size=4, mixing=MixingConfig())
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
for step in range(2):
    x_q, x_k = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    loss, terms, _ = model.compute_losses(([x_q, x_k], torch.zeros(4), torch.arange(4)))
    opt.zero_grad(); loss.backward(); opt.step()
    assert torch.isfinite(loss), loss
print("package ok", lightly_amix.__version__, float(loss))
"""


def build(kind: str, tmp_path: Path) -> Path:
    """Builds the ``wheel`` or the ``sdist`` from a copy of the checkout's files.

    A copy, so that setuptools' ``build/`` and ``*.egg-info`` stay out of the tree.
    """
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    dist.mkdir()
    # The PEP 517 hooks of the build backend itself (what `python -m build` calls).
    hook = "build_wheel" if kind == "wheel" else "build_sdist"
    code = f"from setuptools import build_meta; build_meta.{hook}({str(dist)!r})"
    subprocess.run([sys.executable, "-c", code], cwd=source, check=True, capture_output=True,
                   text=True, timeout=600)  # fmt: skip
    (artifact,) = dist.glob("lightly_amix-*.whl" if kind == "wheel" else "lightly_amix-*.tar.gz")
    if kind == "wheel":
        names = zipfile.ZipFile(artifact).namelist()
        assert "lightly_amix/py.typed" in names and "lightly_amix/models/amix.py" in names
        assert not any(name.startswith("tests/") for name in names)
    else:
        with tarfile.open(artifact) as tar:
            names = [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]
        assert "pyproject.toml" in names and "lightly_amix/py.typed" in names
        assert "lightly_amix/models/amix.py" in names and "README.md" in names
    return artifact


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_package_installs_imports_and_trains_two_steps(kind: str, tmp_path: Path) -> None:
    artifact = build(kind, tmp_path)
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
    # An sdist is built into a wheel by pip first (with this environment's setuptools).
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", site, str(artifact)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [str(python), "-c", SMOKE, site], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "package ok" in result.stdout
