"""detectron2 launcher for the R50-C4 Pascal VOC detection transfer (paper Table 6).

This is MoCo's public detection protocol, which the paper follows: a Faster R-CNN with a ResNet-50
C4 backbone initialised from the converted pre-trained weights (``convert_to_detectron2.py``),
synchronised BN everywhere (nothing frozen), fine-tuned on VOC07+12 trainval and tested on VOC07
test (``configs/pascal_voc_R_50_C4_24k_amix.yaml``; AMIX.md §7). The launcher adds two pieces to a
stock detectron2:

* ``Res5ROIHeadsExtraNorm``: detectron2's ``Res5ROIHeads`` whose res5 head (the C4 box head, fed
  from ``roi_heads.res5`` with the converted ``res5.*`` weights) gets one more norm layer
  (``cfg.MODEL.RESNETS.NORM``, i.e. SyncBN) on its 2048-channel output, registered in
  ``ROI_HEADS_REGISTRY`` under that name so that the configs can select it;
* a trainer whose evaluator is ``PascalVOCDetectionEvaluator`` (VOC07 11-point AP50, plus AP
  averaged over IoU 0.50:0.95 and AP75).

detectron2 is imported only inside functions: without it the script prints one line on how to
install it and exits with code 1 (also for ``--help``). UNTESTED HERE: detectron2 cannot be
installed in this project's environment, so the detectron2 path of this file has only been written
against detectron2's public API (``detectron2.engine.DefaultTrainer``, ``default_argument_parser``,
``default_setup``, ``launch``; ``detectron2.modeling.roi_heads.Res5ROIHeads`` and its
``_build_res5_block`` class method (detectron2 >= 0.3); ``detectron2.layers.get_norm``;
``detectron2.evaluation.PascalVOCDetectionEvaluator``; ``detectron2.checkpoint
.DetectionCheckpointer``), not run. The tests only check the no-detectron2 path.

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

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "transfer/train_net.py needs detectron2, which is not on PyPI: install it from source with "
    "python -m pip install 'git+https://github.com/facebookresearch/detectron2.git' (it compiles "
    "against the PyTorch already installed, so it needs a C++ compiler and, for GPU training, "
    "the CUDA toolkit of the version torch was built with, see torch.version.cuda)"
)
EXIT_NO_DETECTRON2 = 1
EXIT_BAD_SETUP = 2
ROI_HEADS_NAME = "Res5ROIHeadsExtraNorm"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "pascal_voc_R_50_C4_24k_amix.yaml"
_VOC_NAME = re.compile(r"voc_(?P<year>\d{4})_(?P<split>\w+)")


def require_detectron2() -> None:
    """Exits with code 1 and one line on stderr if detectron2 cannot be imported.

    Examples:
        >>> require_detectron2()  # returns quietly when detectron2 is installed
    """
    try:
        import detectron2.engine  # noqa: F401
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == "detectron2"
        detail = (
            ""
            if missing
            else f" [import failed: {str(exc).splitlines()[0] if str(exc) else exc!r}]"
        )
        print(f"error: {INSTALL_HINT}.{detail}", file=sys.stderr)
        raise SystemExit(EXIT_NO_DETECTRON2) from None


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
        detectron2 it exits with code 1 instead (:func:`require_detectron2`).
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


if __name__ == "__main__":
    sys.exit(cli())
