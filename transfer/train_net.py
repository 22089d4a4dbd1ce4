"""detectron2 launcher for the R50-C4 Pascal VOC detection transfer (paper Table 6).

This is MoCo's public detection protocol, which the paper follows: a Faster R-CNN with a ResNet-50
C4 backbone initialised from the converted pre-trained weights (``convert_to_detectron2.py``),
synchronised BN everywhere (nothing frozen), fine-tuned on VOC07+12 trainval and tested on VOC07
test (``configs/pascal_voc_R_50_C4_24k_amix.yaml``, MoCo's protocol). The launcher adds two
pieces to a stock detectron2:

* ``Res5ROIHeadsExtraNorm``: detectron2's ``Res5ROIHeads`` whose res5 head (the C4 box head, fed
  from ``roi_heads.res5`` with the converted ``res5.*`` weights) gets one more norm layer
  (``cfg.MODEL.RESNETS.NORM``, i.e. SyncBN) on its 2048-channel output, registered in
  ``ROI_HEADS_REGISTRY`` under that name so that the configs can select it;
* a trainer whose evaluator is ``PascalVOCDetectionEvaluator`` (VOC07 11-point AP50, plus AP
  averaged over IoU 0.50:0.95 and AP75).

detectron2 is imported only inside functions. Without it the script prints one line on how to
install it and exits with code 1 (also for ``--help``); with a detectron2 that is installed but
fails to import, one ``error:`` line with the cause and the install hint, exit code 2.
:func:`load_detectron2` first restores the few names that detectron2 0.5 (the CPU build of
``transfer/install_detectron2_cpu.sh``) still uses and today's Pillow and numpy removed
(``PIL.Image.LINEAR``, ``np.int``/``np.float``/``np.str``/``np.object``/``np.bool``) and
completes the stub ``detectron2._C`` (``get_compiler_version``/``get_cuda_version``, called by
``collect_env``); it touches nothing when detectron2 is not installed. With that CPU build,
``tests/transfer/test_detectron2.py`` builds the model from ``configs/``, checks that every
converted backbone and res5 tensor loads exactly, trains, runs precise BN and the VOC evaluator on
a tiny VOC tree and re-evaluates with ``--eval-only``. Multi-GPU training (``--num-gpus`` > 1,
SyncBN across processes) needs a CUDA build of detectron2 and is not run by the tests.

Examples:
    Fine-tune on 8 GPUs (datasets under ``$DETECTRON2_DATASETS``, see transfer/README.md)::

        python transfer/train_net.py --num-gpus 8 \\
            --config-file transfer/configs/pascal_voc_R_50_C4_24k_amix.yaml \\
            MODEL.WEIGHTS amix_r50.pkl OUTPUT_DIR out/voc_amix

    Evaluate a fine-tuned model::

        python transfer/train_net.py --num-gpus 8 --eval-only \\
            --config-file transfer/configs/pascal_voc_R_50_C4_24k_amix.yaml \\
            MODEL.WEIGHTS out/voc_amix/model_final.pth OUTPUT_DIR out/voc_amix
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTALL_SCRIPT = "transfer/install_detectron2_cpu.sh"
SOURCE_INSTALL = "python -m pip install 'git+https://github.com/facebookresearch/detectron2.git'"
INSTALL_HINT = (
    "transfer/train_net.py needs detectron2, which is not on PyPI: for GPU training install it "
    f"from source with {SOURCE_INSTALL} (it compiles against the PyTorch already installed, so it "
    "needs a C++ compiler and the CUDA toolkit of the version torch was built with, see "
    f"torch.version.cuda); on a CPU (tests, pipeline checks) bash {INSTALL_SCRIPT} builds a "
    "pure-Python detectron2 0.5 into the active environment"
)
REINSTALL_HINT = (
    f"reinstall it for this environment: bash {INSTALL_SCRIPT} --force (CPU build, for tests) or "
    f"{SOURCE_INSTALL} (GPU training; see transfer/README.md)"
)
EXIT_NO_DETECTRON2 = 1
EXIT_BAD_SETUP = 2
EXIT_INCOMPATIBLE = 2
ROI_HEADS_NAME = "Res5ROIHeadsExtraNorm"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "pascal_voc_R_50_C4_24k_amix.yaml"
_VOC_NAME = re.compile(r"voc_(?P<year>\d{4})_(?P<split>\w+)")


# Names detectron2 0.5 uses that numpy 1.24 removed (np.bool came back in numpy 2).
_NUMPY_ALIASES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "object": object,
    "bool": bool,
}
_C_EXTENSION_DEFAULTS: dict[str, str] = {
    "get_compiler_version": "unknown (detectron2._C has no get_compiler_version)",
    "get_cuda_version": "unknown (detectron2._C has no get_cuda_version)",
}
# What train_net uses; importing these up front turns a broken installation into one error.
_DETECTRON2_MODULES = (
    "detectron2.config",
    "detectron2.layers",
    "detectron2.modeling",
    "detectron2.checkpoint",
    "detectron2.data",
    "detectron2.evaluation",
    "detectron2.engine",
)


class Detectron2Unavailable(RuntimeError):
    """detectron2 cannot be used; the message is one line, ``exit_code`` the script's exit code.

    Attributes:
        exit_code: :data:`EXIT_NO_DETECTRON2` (not installed) or :data:`EXIT_INCOMPATIBLE`
            (installed, but importing it failed).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def detectron2_installed() -> bool:
    """Whether a ``detectron2`` package can be found (without importing it)."""
    if "detectron2" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("detectron2") is not None
    except (ImportError, ValueError):
        return False


def apply_detectron2_compat() -> list[str]:
    """Restores the Pillow and numpy names detectron2 0.5 uses that newer releases removed.

    ``PIL.Image.LINEAR`` (Pillow 10 removed it; detectron2's ``ExtentTransform`` uses it as a
    default argument, so at import time) becomes ``Image.Resampling.BILINEAR``, and ``np.int``,
    ``np.float``, ``np.str``, ``np.object`` (numpy 1.24) and ``np.bool`` (numpy 1.24-1.26) the
    builtins they used to alias. Only missing names are added; call it only when detectron2 is
    going to be imported (:func:`load_detectron2` does).

    Returns:
        The names added, e.g. ``["PIL.Image.LINEAR", "numpy.int", ...]``; empty when called again.
    """
    import numpy as np
    from PIL import Image

    with warnings.catch_warnings():  # Pillow 9.1-9.5 and numpy 1.20-1.23 warn on these names
        warnings.simplefilter("ignore")
        has_linear = hasattr(Image, "LINEAR")
        missing = [name for name in _NUMPY_ALIASES if not hasattr(np, name)]
    added = []
    if not has_linear:
        Image.LINEAR = Image.Resampling.BILINEAR  # type: ignore[attr-defined]
        added.append("PIL.Image.LINEAR")
    for name in missing:
        setattr(np, name, _NUMPY_ALIASES[name])
        added.append(f"numpy.{name}")
    return added


def _complete_c_extension() -> list[str]:
    """Adds the version getters ``collect_env`` calls to a ``detectron2._C`` that lacks them."""
    try:
        c_extension = importlib.import_module("detectron2._C")
    except ImportError:  # reported by the imports of load_detectron2, with their context
        return []
    added = []
    for name, text in _C_EXTENSION_DEFAULTS.items():
        if not hasattr(c_extension, name):
            setattr(c_extension, name, lambda text=text: text)
            added.append(f"detectron2._C.{name}")
    return added


def _failure_cause(exc: BaseException) -> str:
    """``Type: first line of the message (at detectron2/...py:LINE)`` for an import failure."""
    lines = str(exc).strip().splitlines()
    message = lines[0].strip() if lines else repr(exc)
    if len(message) > 300:
        message = message[:297] + "..."
    cause = f"{type(exc).__name__}: {message}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "detectron2" in f.filename]
    if frames:
        filename = frames[-1].filename.replace(os.sep, "/")
        short = filename[filename.rfind("detectron2/") :] if "detectron2/" in filename else filename
        cause += f" (at {short}:{frames[-1].lineno})"
    return cause


def load_detectron2() -> str:
    """Makes detectron2 importable here and imports the parts train_net uses.

    Applies :func:`apply_detectron2_compat` before the first detectron2 import, then completes
    the ``detectron2._C`` stub of the CPU build and imports ``detectron2.config``, ``.layers``,
    ``.modeling``, ``.checkpoint``, ``.data``, ``.evaluation`` and ``.engine``. Nothing is
    patched when detectron2 is not installed. Safe to call again.

    Returns:
        detectron2's version string.

    Raises:
        Detectron2Unavailable: With exit code 1 when detectron2 is not installed (the message is
            :data:`INSTALL_HINT`), 2 when it is installed but an import fails (the message names
            the exception, where in detectron2 it was raised, and :data:`REINSTALL_HINT`).

    Examples:
        >>> load_detectron2()  # with the CPU build of transfer/install_detectron2_cpu.sh
        '0.5'
    """
    if not detectron2_installed():
        raise Detectron2Unavailable(INSTALL_HINT, EXIT_NO_DETECTRON2)
    apply_detectron2_compat()
    try:
        with warnings.catch_warnings():  # detectron2 0.5 decorates with torch.jit.script
            warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)
            import detectron2

            _complete_c_extension()
            for name in _DETECTRON2_MODULES:
                importlib.import_module(name)
    except Exception as exc:
        package = sys.modules.get("detectron2")
        version = getattr(package, "__version__", None)
        where = ", ".join(getattr(package, "__path__", [])) or "unknown location"
        label = f"detectron2 {version}" if version else "detectron2"
        raise Detectron2Unavailable(
            f"{label} is installed ({where}) but cannot be imported: {_failure_cause(exc)}; "
            f"{REINSTALL_HINT}",
            EXIT_INCOMPATIBLE,
        ) from exc
    return str(getattr(detectron2, "__version__", "unknown"))


def require_detectron2() -> None:
    """Exits after one ``error:`` line on stderr if detectron2 cannot be used.

    Exit code 1 when it is not installed, 2 when it is installed but does not import
    (:func:`load_detectron2`).

    Examples:
        >>> require_detectron2()  # returns quietly when detectron2 is installed and imports
    """
    try:
        load_detectron2()
    except Detectron2Unavailable as exc:
        print(f"error: {exc}.", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def register_res5_roi_heads_extra_norm() -> Any:
    """Registers ``Res5ROIHeadsExtraNorm`` in detectron2's ``ROI_HEADS_REGISTRY`` (once).

    The class is ``Res5ROIHeads`` with ``get_norm(cfg.MODEL.RESNETS.NORM, out_channels)``
    appended, as a child named ``norm``, to the ``nn.Sequential`` res5 head that
    ``Res5ROIHeads._build_res5_block`` returns. The converted ``res5.*`` weights still reach
    ``roi_heads.res5.{0,1,2}.*`` by detectron2's suffix matching; the extra norm starts fresh.

    Returns:
        The registered class (the one registered earlier, when called again in one process).

    Examples:
        >>> heads_cls = register_res5_roi_heads_extra_norm()
        >>> heads_cls.__name__
        'Res5ROIHeadsExtraNorm'
    """
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
    from torch import nn

    try:  # fvcore's Registry has get() in every version, __contains__ only in newer ones
        return ROI_HEADS_REGISTRY.get(ROI_HEADS_NAME)
    except KeyError:
        pass

    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """``Res5ROIHeads`` whose res5 head ends with one more norm layer (MoCo's C4 head)."""

        @classmethod
        def _build_res5_block(cls, cfg: Any) -> tuple[Any, int]:
            res5, out_channels = super()._build_res5_block(cfg)
            if not isinstance(res5, nn.Sequential):
                raise TypeError(
                    f"{ROI_HEADS_NAME} expects Res5ROIHeads._build_res5_block to return an "
                    f"nn.Sequential, got {type(res5).__name__}; this detectron2 version differs."
                )
            res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return res5, out_channels

    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)  # under its __name__, ROI_HEADS_NAME
    return Res5ROIHeadsExtraNorm


def build_trainer_class() -> Any:
    """A ``DefaultTrainer`` whose evaluator is detectron2's ``PascalVOCDetectionEvaluator``."""
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import PascalVOCDetectionEvaluator

    class VOCTrainer(DefaultTrainer):
        """Reports VOC AP50 (11-point for VOC2007), AP (IoU 0.50:0.95) and AP75."""

        @classmethod
        def build_evaluator(cls, cfg: Any, dataset_name: str, output_folder: Any = None) -> Any:
            return PascalVOCDetectionEvaluator(dataset_name)

    return VOCTrainer


def load_config(args: Any) -> Any:
    """The merged, unfrozen config: detectron2 defaults, ``--config-file``, then the ``opts``."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    return cfg


def setup(args: Any) -> Any:
    """Frozen config plus detectron2's ``default_setup`` (logging, seed, config dump)."""
    from detectron2.engine import default_setup

    cfg = load_config(args)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def preflight(args: Any) -> str | None:
    """Checks that fail fast, before ``launch`` starts one process per GPU.

    Returns:
        ``None``, or a one-line description of the problem: no ``MODEL.WEIGHTS`` (training from
        scratch is not the protocol), a missing local weight file, or a VOC split file missing
        under ``$DETECTRON2_DATASETS`` (default ``datasets``).
    """
    if not Path(args.config_file).is_file():
        return f"config file '{args.config_file}' does not exist."
    cfg = load_config(args)
    weights = str(cfg.MODEL.WEIGHTS)
    has_last = (Path(cfg.OUTPUT_DIR) / "last_checkpoint").is_file()
    if not weights and not (args.resume and has_last):
        return (
            "MODEL.WEIGHTS is empty: pass the converted pre-trained model (MODEL.WEIGHTS "
            "amix_r50.pkl, from convert_to_detectron2.py), or the fine-tuned model_final.pth with "
            "--eval-only."
        )
    if weights and "://" not in weights and not Path(weights).is_file():
        return f"MODEL.WEIGHTS '{weights}' does not exist."
    root = Path(os.getenv("DETECTRON2_DATASETS", "datasets"))
    names = list(cfg.DATASETS.TEST) + ([] if args.eval_only else list(cfg.DATASETS.TRAIN))
    for name in names:
        match = _VOC_NAME.fullmatch(name)
        if match is None:
            continue
        split_file = root / f"VOC{match['year']}" / "ImageSets" / "Main" / f"{match['split']}.txt"
        if not split_file.is_file():
            return (
                f"{split_file} does not exist (data set {name}); set DETECTRON2_DATASETS to the "
                "folder that holds VOC2007/ and VOC2012/ directly (transfer/README.md)."
            )
    return None


def main(args: Any) -> Any:
    """Trains (or, with ``--eval-only``, evaluates) in one process; ``launch`` runs it per GPU.

    Returns:
        The evaluation results (an ordered dict ``{"bbox": {"AP": ..., "AP50": ..., "AP75": ...}}``
        for each test set), as returned by ``DefaultTrainer.test`` / ``train``.
    """
    load_detectron2()
    from detectron2.checkpoint import DetectionCheckpointer

    register_res5_roi_heads_extra_norm()
    trainer_cls = build_trainer_class()
    cfg = setup(args)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: Sequence[str] | None = None) -> int:
    """Parses the command line with detectron2's parser and launches :func:`main` on each GPU.

    Options: ``--config-file`` (default: the 24k VOC config), ``--num-gpus``, ``--eval-only``,
    ``--resume``, ``--num-machines``, ``--machine-rank``, ``--dist-url`` and trailing config
    ``KEY VALUE`` pairs (``MODEL.WEIGHTS x.pkl OUTPUT_DIR out/voc``).

    Returns:
        0, or 2 after one ``error:`` line when :func:`preflight` finds a problem. Without
        detectron2 it exits with code 1 instead, with an installed detectron2 that fails to
        import with code 2 (:func:`require_detectron2`).
    """
    require_detectron2()
    from detectron2.engine import default_argument_parser, launch

    parser = default_argument_parser(
        epilog="R50-C4 VOC07+12 detection transfer; see transfer/README.md for the commands."
    )
    parser.set_defaults(config_file=str(DEFAULT_CONFIG))
    args = parser.parse_args(argv)
    problem = preflight(args)
    if problem is not None:
        print(f"train_net.py: error: {problem}", file=sys.stderr)
        return EXIT_BAD_SETUP
    print("Command line arguments:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__mp_main__" and detectron2_installed():
    # A worker that launch() spawns (--num-gpus > 1) imports this file as __mp_main__ and then
    # unpickles detectron2's worker function, importing detectron2 before main() runs.
    apply_detectron2_compat()

if __name__ == "__main__":
    sys.exit(cli())
