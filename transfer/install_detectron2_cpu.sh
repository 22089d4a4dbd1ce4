#!/usr/bin/env bash
# Builds a CPU-only, pure-Python detectron2 0.5 into the Python environment that is active now.
#
# Usage:
#   . .venv/bin/activate                      # an environment that already has torch/torchvision
#   bash transfer/install_detectron2_cpu.sh   # under a minute; again: only re-checks
#   bash transfer/install_detectron2_cpu.sh --force   # reinstall / replace another detectron2
#
# Environment: PYTHON (default: python) names the interpreter of the target environment;
# D2_ALLOW_NO_VENV=1 allows installing outside a virtualenv/conda environment.
#
# For running transfer/train_net.py on a CPU (tests, pipeline checks), not for real training:
# detectron2 has no wheel on PyPI, so this downloads the sdist of its 0.5 release (PyPI project
# "detectron2-cdo"), drops the C++/CUDA extension from its setup.py (ext_modules=[]), writes a
# stub detectron2/_C.py in its place (torchvision provides ROIAlign and NMS; deformable
# convolutions and rotated boxes are not available), and installs it with --no-build-isolation
# so that it uses the torch already installed. transfer/train_net.py restores the Pillow/numpy
# names detectron2 0.5 still uses. For GPU training build detectron2 from source instead
# (transfer/README.md). Nothing in lightly_amix needs detectron2.
set -euo pipefail

D2_SDIST="detectron2-cdo==0.5"
D2_FILE="detectron2_cdo-0.5.tar.gz"
D2_SHA256="53c9e79e9cc943e80419c588ea44b5479507a8628ed14a4e06bd093e29311b18"
STUB_MARKER="lightly-amix CPU stub"
PYTHON="${PYTHON:-python}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
    echo "install_detectron2_cpu.sh: error: $*" >&2
    exit 1
}

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument '$arg' (usage: bash transfer/install_detectron2_cpu.sh [--force])" ;;
    esac
done

command -v "$PYTHON" >/dev/null 2>&1 \
    || die "'$PYTHON' not found: activate the project's virtualenv first (. .venv/bin/activate) or set PYTHON."

if [[ "${D2_ALLOW_NO_VENV:-0}" != 1 ]] && ! "$PYTHON" -c \
    'import os, sys; sys.exit(sys.prefix == sys.base_prefix and not os.environ.get("CONDA_PREFIX"))'; then
    die "$("$PYTHON" -c 'import sys; print(sys.executable)') is not in a virtualenv: activate one (. .venv/bin/activate) or set D2_ALLOW_NO_VENV=1."
fi

torch_info="$("$PYTHON" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)' 2>/dev/null)" \
    || die "torch and torchvision are not importable with $PYTHON: install the project first (python -m pip install -e '.[dev]')."
echo "== target: $("$PYTHON" -c 'import sys; print(sys.prefix)') (torch/torchvision $torch_info)"

# 0 = our CPU build is there, 1 = no detectron2, 2 = another detectron2 (e.g. compiled from source).
state=0
"$PYTHON" - "$STUB_MARKER" <<'EOF' || state=$?
import importlib.util, sys
spec = importlib.util.find_spec("detectron2")
if spec is None:
    sys.exit(1)
stub = importlib.util.find_spec("detectron2._C")
origin = stub.origin if stub is not None else None
is_ours = bool(origin and origin.endswith(".py") and sys.argv[1] in open(origin).read())
sys.exit(0 if is_ours else 2)
EOF
if [[ $state -eq 0 && $force -eq 0 ]]; then
    echo "== detectron2 (CPU build) is already installed; --force reinstalls it."
elif [[ $state -eq 2 && $force -eq 0 ]]; then
    location="$("$PYTHON" -c 'import importlib.util as u; print(u.find_spec("detectron2").submodule_search_locations[0])')"
    die "another detectron2 is installed at $location (not this script's CPU build); keep it, or pass --force to replace it."
elif [[ $state -ne 0 && $state -ne 1 && $state -ne 2 ]]; then
    die "could not inspect the installed detectron2 (exit $state)."
else
    "$PYTHON" -c 'import setuptools' 2>/dev/null || "$PYTHON" -m pip install --quiet setuptools

    workdir="$(mktemp -d "${TMPDIR:-/tmp}/detectron2_cpu.XXXXXX")"
    trap 'rm -rf "$workdir"' EXIT

    echo "== downloading the $D2_SDIST sdist"
    # Fetched from the package index by hand, not with 'pip download': pip 25+ prepares the
    # sdist's metadata and refuses it, because an optional extra of detectron2-cdo names a direct
    # URL. The file is checked against its published sha256.
    "$PYTHON" - "$workdir" "$D2_FILE" "$D2_SHA256" <<'PYEOF' \
        || die "could not download $D2_FILE from the package index (is PyPI reachable? set PIP_INDEX_URL for a mirror)."
import hashlib, os, re, ssl, subprocess, sys, urllib.parse, urllib.request

workdir, filename, sha256 = sys.argv[1:4]
index = os.environ.get("PIP_INDEX_URL")
if not index:
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True, text=True,
    )
    index = config.stdout.strip() if config.returncode == 0 else ""
index = (index or "https://pypi.org/simple").rstrip("/")
cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
context = ssl.create_default_context(cafile=cafile if cafile and os.path.exists(cafile) else None)
page_url = f"{index}/detectron2-cdo/"
with urllib.request.urlopen(page_url, timeout=120, context=context) as response:
    page = response.read().decode()
links = [m for m in re.findall(r'href="([^"]+)"', page) if filename in m]
if not links:
    sys.exit(f"{page_url} lists no {filename}")
url = urllib.parse.urljoin(page_url, links[0].split("#")[0])
with urllib.request.urlopen(url, timeout=300, context=context) as response:
    data = response.read()
digest = hashlib.sha256(data).hexdigest()
if digest != sha256:
    sys.exit(f"{url}: sha256 {digest}, expected {sha256}")
with open(os.path.join(workdir, filename), "wb") as out:
    out.write(data)
print(f"   {url.split('/')[-1]}: {len(data) / 1e6:.1f} MB, sha256 verified")
PYEOF
    sdist=("$workdir/$D2_FILE")
    [[ -f "${sdist[0]}" ]] || die "$D2_FILE was not written to $workdir."
    tar -xzf "${sdist[0]}" -C "$workdir"
    src="$workdir/detectron2_cdo-0.5"

    echo "== patching setup.py (no C++/CUDA extension, no black) and writing the detectron2/_C.py stub"
    grep -q 'ext_modules=get_extensions(),' "$src/setup.py" \
        || die "$src/setup.py has no 'ext_modules=get_extensions(),' line: not the expected sdist."
    sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
    # Requirements of features train_net does not use, which would change this environment:
    # black==21.4b2 (LazyConfig.to_py) pins pathspec<1 and so breaks mypy; future and pydot serve
    # the caffe2 export.
    for requirement in '"black==21.4b2",' '"future",' '"pydot",'; do
        grep -qF "$requirement" "$src/setup.py" \
            || die "$src/setup.py does not list $requirement: not the expected sdist."
    done
    sed -i -e '/"black==21.4b2",/d' -e '/"future",/d' -e '/"pydot",/d' "$src/setup.py"
    cat >"$src/detectron2/_C.py" <<EOF
"""Stand-in for detectron2's compiled extension ($STUB_MARKER, transfer/install_detectron2_cpu.sh).

Only what a CPU Faster R-CNN needs is here; torchvision provides ROIAlign and NMS. The compiled
operators (deformable convolution, rotated boxes, the C++ COCO evaluation) are not available.
"""

from typing import Any


def get_compiler_version() -> str:
    return "none (CPU build without the C++ extension)"


def get_cuda_version() -> str:
    return "none (CPU build without the C++ extension)"


def has_cuda() -> bool:
    return False


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"detectron2._C.{name} is not available: this detectron2 was built without its C++/CUDA "
        "extension (transfer/install_detectron2_cpu.sh); build detectron2 from source for it"
    )
EOF

    if [[ $state -ne 1 ]]; then  # --force: remove what provides detectron2 now
        "$PYTHON" - <<'PYEOF' | while read -r dist; do "$PYTHON" -m pip uninstall --quiet -y "$dist"; done
import importlib.metadata as m
names = set()
for dist in m.distributions():
    name = dist.metadata["Name"] or ""
    top = (dist.read_text("top_level.txt") or "").split()
    if "detectron2" in top or name.lower().replace("_", "-") in ("detectron2", "detectron2-cdo"):
        names.add(name)
print("\n".join(sorted(names)))
PYEOF
    fi

    echo "== installing into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install --quiet --no-build-isolation "$src" \
        || die "pip install of the patched $D2_SDIST failed (see pip's output above)."
fi

echo "== checking: transfer/train_net.py --help"
"$PYTHON" "$REPO/transfer/train_net.py" --help >/dev/null \
    || die "transfer/train_net.py cannot use the installed detectron2 (see the error above); --force rebuilds it."
echo "detectron2 $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("detectron2-cdo"))') (CPU) is ready. Verify with:"
echo "  python -m pytest -q -m detectron2 tests/transfer/test_detectron2.py"
echo "  python transfer/train_net.py --help"
